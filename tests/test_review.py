"""Acting on duplicates over HTTP (the review page's calls): move picked members to the
index's trash folder and undo, under the CLI's safety rules (issue 18, item 5)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi", reason="the server tests need the 'server' extra: pip install 'lookalike[server]'")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from lookalike import Index  # noqa: E402

from .conftest import DEMO, demo_folder  # noqa: E402
from .live_server import LiveServer  # noqa: E402

TOKEN = "review-token"


def _collection(base):
    photos = demo_folder(base / "photos")
    cat = Image.open(DEMO / "cat.jpg").convert("RGB")
    cat.resize((cat.width // 2, cat.height // 2), Image.LANCZOS).save(photos / "cat_half.jpg", quality=90)
    cat.save(photos / "cat_q30.jpg", quality=30)
    coffee = Image.open(DEMO / "coffee.jpg").convert("RGB")
    coffee.save(photos / "coffee_q40.jpg", quality=40)
    with Index.create(base / "idx", "cnn") as ix:
        ix.add(photos, jobs=1)
    return photos, base / "idx"


@pytest.fixture
def served(tmp_path):
    photos, idx = _collection(tmp_path)
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        yield photos, idx, c


def _groups(c, level="near") -> dict[str, dict]:
    r = c.get(f"/api/duplicates?level={level}")
    assert r.status_code == 200, r.text
    return {os.path.basename(g["keeper"]): g for g in r.json()["groups"]}


def _id(group, name) -> int:
    [m] = [m for m in group["members"] if os.path.basename(m["path"]) == name]
    return m["id"]


def test_move_picked_members_to_the_trash_and_undo(served):
    photos, idx, c = served
    groups = _groups(c)
    assert set(groups) == {"cat.jpg", "coffee.jpg"}
    body = c.get("/api/duplicates").json()
    assert body["duplicates"] == 3 and body["duplicate_bytes"] > 0
    pick = [_id(groups["cat.jpg"], "cat_q30.jpg"), _id(groups["coffee.jpg"], "coffee_q40.jpg")]
    r = c.post("/api/duplicates/trash", json={"ids": pick})
    assert r.status_code == 200, r.text
    done = r.json()
    assert sorted(os.path.basename(m["path"]) for m in done["moved"]) == ["cat_q30.jpg", "coffee_q40.jpg"]
    assert done["not_done"] == [] and done["undo_log"].startswith("undo-")
    assert not (photos / "cat_q30.jpg").exists() and (photos / "cat_half.jpg").exists()
    for m in done["moved"]:
        assert os.path.isfile(m["dest"]) and m["dest"].startswith(str(idx / "trash"))
    # the index follows: the moved files are no longer listed or served
    after = _groups(c)
    assert set(after) == {"cat.jpg"} and len(after["cat.jpg"]["members"]) == 2
    assert c.get(f"/api/files/{pick[0]}").status_code == 404
    back = c.post("/api/undo", json={"log": done["undo_log"]})
    assert back.status_code == 200, back.text
    assert back.json()["indexed_again"] == 2 and back.json()["problems"] == []
    assert (photos / "cat_q30.jpg").exists() and (photos / "coffee_q40.jpg").exists()
    assert set(_groups(c)) == {"cat.jpg", "coffee.jpg"}


def test_picking_the_keeper_keeps_another_member(served):
    photos, _, c = served
    g = _groups(c)["coffee.jpg"]
    r = c.post("/api/duplicates/trash", json={"ids": [_id(g, "coffee.jpg")]})
    assert r.status_code == 200, r.text
    assert [os.path.basename(m["path"]) for m in r.json()["moved"]] == ["coffee.jpg"]
    assert (photos / "coffee_q40.jpg").exists()


def test_refusals_change_nothing(served):
    photos, idx, c = served
    before = sorted(os.listdir(photos))
    g = _groups(c)["coffee.jpg"]
    both = [m["id"] for m in g["members"]]
    r = c.post("/api/duplicates/trash", json={"ids": both})
    assert r.status_code == 422 and "keep at least one" in r.json()["error"]["message"]
    ids = {os.path.basename(h["path"]): h["id"] for h in c.get("/api/search/1?k=20").json()["hits"]}
    r = c.post("/api/duplicates/trash", json={"ids": [ids["rocket.jpg"]]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_duplicate"
    r = c.post("/api/duplicates/trash", json={"ids": [both[1]]}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = c.post("/api/duplicates/trash", content=f'{{"ids": [{both[1]}]}}', headers={"Content-Type": "text/plain"})
    assert r.status_code in (415, 422)  # FastAPI refuses a body that is not JSON before we see it
    for name, status in (("../../etc/passwd", 422), ("undo-nothing.jsonl", 404)):
        assert c.post("/api/undo", json={"log": name}).status_code == status
    assert sorted(os.listdir(photos)) == before and not (idx / "trash").exists()


def test_a_file_changed_since_indexing_is_not_moved(served):
    photos, _, c = served
    g = _groups(c)["cat.jpg"]
    with open(photos / "cat_half.jpg", "ab") as f:
        f.write(b"changed")
    r = c.post("/api/duplicates/trash", json={"ids": [_id(g, "cat_half.jpg")]})
    assert r.status_code == 200, r.text
    assert r.json()["moved"] == [] and "changed" in r.json()["not_done"][0]["error"]
    assert (photos / "cat_half.jpg").exists()


def test_actions_need_the_token(tmp_path):
    _, idx = _collection(tmp_path)
    with LiveServer(idx, env={"LOOKALIKE_TOKEN": TOKEN}) as s:
        r = httpx.post(s.url + "/api/duplicates/trash", json={"ids": [1]})
        assert r.status_code == 401
        r = httpx.post(s.url + "/api/undo", json={"log": "undo-x.jsonl"})
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(s.url + "/api/duplicates", headers=auth).status_code == 200



@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzed_trash_requests_never_fail_on_the_server(tmp_path, mode):
    """Random and invalid bodies (schemathesis): every check of the API's fuzz tests, and
    whatever they move stays whole in the trash folder (each file is in photos or trash)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    photos, idx = _collection(tmp_path)
    sizes = {p.name: p.stat().st_size for p in photos.iterdir()}
    with LiveServer(idx) as s:
        operation = schemathesis.openapi.from_url(s.url + "/openapi.json")["/api/duplicates/trash"]["POST"]

        @given(case=operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def run(case):
            # a schema-valid body may still name no keeper rule or no duplicate: a 4xx is right there
            case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=60)

        run()
    where = {p.name: p.stat().st_size for p in photos.iterdir()}
    if (idx / "trash").exists():
        for p in (idx / "trash").rglob("*"):
            if p.is_file():
                assert p.name not in where
                where[p.name] = p.stat().st_size
    assert where == sizes
