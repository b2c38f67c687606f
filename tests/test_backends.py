"""One behavioural suite over both backends: a local index folder and Milvus (Milvus Lite, for real).

The Milvus half runs Milvus Lite from a file in the test's temporary folder
(``pymilvus`` starts it); it is skipped, saying why, where Milvus Lite cannot run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lookalike import ExtractorMismatch, Index, NotAnIndex, QueryError, open_index
from lookalike.backends import parse_shard, path_id, shard_filter

from .conftest import DEMO, ODD, edit_photos, make_pattern_images

_MILVUS_PROBLEM: list[str] = []  # why Milvus Lite cannot run here, found once per session


def milvus_lite_problem(tmp_path_factory) -> str | None:
    """``None`` if Milvus Lite starts and takes a collection here, else the reason it does not."""
    if not _MILVUS_PROBLEM:
        try:
            import milvus_lite  # noqa: F401
            from pymilvus import MilvusClient
        except ImportError as e:
            _MILVUS_PROBLEM.append(f"Milvus Lite is not installed ({e}): pip install 'lookalike[milvus]'")
        else:
            try:
                client = MilvusClient(str(tmp_path_factory.mktemp("probe") / "probe.db"))
                client.list_collections()
                client.close()
                _MILVUS_PROBLEM.append("")
            except Exception as e:  # e.g. an unsupported platform for milvus-lite
                _MILVUS_PROBLEM.append(f"Milvus Lite cannot start here: {type(e).__name__}: {e}")
    return _MILVUS_PROBLEM[0] or None


@pytest.fixture
def milvus_ok(tmp_path_factory):
    problem = milvus_lite_problem(tmp_path_factory)
    if problem:
        pytest.skip(problem)


@pytest.fixture(params=["local", "milvus"])
def backend(request, tmp_path, tmp_path_factory):
    """``make(extractor=None, **kw)`` -> an open index of this backend (created if new), in tmp_path."""
    if request.param == "milvus":
        problem = milvus_lite_problem(tmp_path_factory)
        if problem:
            pytest.skip(problem)
    opened = []

    def make(extractor=None, **kw):
        location = tmp_path / ("idx" if request.param == "local" else "lite.db")
        ix = open_index(location, extractor, create=True, **kw)
        opened.append(ix)
        return ix

    make.kind = request.param
    yield make
    for ix in opened:
        try:
            ix.close()
        except Exception:
            pass


def _consistent(ix) -> None:
    """For Milvus: every indexed file is an entity under its path id, and nothing else is."""
    assert ix.check() == []
    if ix.backend.name == "milvus":
        live = ix.live()
        assert ix.backend.collection.count() == len(live.paths)
        assert sorted(live.ids.tolist()) == sorted(path_id(p) for p in live.paths)


# -- the same behaviour on both backends ----------------------------------------------------
def test_search_finds_the_same_file_first_and_scores_hashes(backend, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 12)
    ix = backend("phash")
    report = ix.add(folder, jobs=1)
    assert report.added == 12 and len(ix) == 12
    hits = ix.search(folder / "img0005.jpg", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].path == str(folder / "img0005.jpg") and hits[0].score == 1.0 and hits[0].distance == 0
    for h in hits:
        assert h.score == pytest.approx(1 - h.distance / 64)
    assert len(ix.search(folder / "img0000.jpg", k=None)) == 12
    assert len(ix.search(folder / "img0000.jpg", k=100)) == 12
    _consistent(ix)


def test_copies_tie_and_are_ordered_by_path(backend, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for name in ["c.jpg", "a.jpg", "b.jpg"]:
        shutil.copy(DEMO / "brick.jpg", folder / name)
    make_pattern_images(folder / "other", 3)
    ix = backend("phash")
    report = ix.add(folder, jobs=1)
    assert report.added == 4 and report.reused == 2
    hits = ix.search(DEMO / "brick.jpg", k=3)
    assert [os.path.basename(h.path) for h in hits] == ["a.jpg", "b.jpg", "c.jpg"]
    assert {h.distance for h in hits} == {0}
    assert len({h.id for h in hits}) == 3  # every file its own id
    _consistent(ix)


def test_incremental_changes(backend, tmp_path, photos):
    ix = backend("phash")
    ix.add(photos, jobs=1)
    edit_photos(photos)
    r = ix.add(photos, jobs=1)
    assert (r.renamed, r.removed, r.updated, r.added, r.reused) == (2, 1, 1, 1, 1)
    found = {h.path for h in ix.search(DEMO / "cat.jpg", k=None)}
    assert str(photos / "kitty.jpg") in found and str(photos / "cat.jpg") not in found
    assert str(photos / "brick.jpg") not in found and str(photos / "sub" / "coffee.jpg") in found
    assert len(found) == 9
    assert ix.search(DEMO / "brick.jpg", k=1)[0].path != str(photos / "brick.jpg")
    assert ix.search(photos / "camera.jpg", k=1)[0].score == 1.0  # the new content, not the old
    again = ix.add(photos, jobs=1)
    assert again.processed == 0 and again.unchanged == 9
    _consistent(ix)


def test_search_many_keeps_order_and_reports_errors(backend, photos):
    ix = backend("phash")
    ix.add(photos, jobs=1)
    res = ix.search_many([DEMO / "astronaut.jpg", ODD / "text.jpg", DEMO / "hubble.jpg"], k=2)
    assert [r.error for r in res] == [None, "not_an_image", None]
    assert res[0].hits[0].path == str(photos / "astronaut.jpg")
    assert res[2].hits[0].path == str(photos / "hubble.jpg")
    with pytest.raises(QueryError):
        ix.search(ODD / "truncated.jpg")


def test_reopen_keeps_results_and_checks_the_extractor(backend, tmp_path, photos):
    ix = backend("color")
    ix.add(photos, jobs=1)
    first = [(h.path, round(h.score, 4)) for h in ix.search(DEMO / "astronaut.jpg", k=8)]
    ix.close()
    again = backend()
    assert again.extractor.name == "color"
    assert [(h.path, round(h.score, 4)) for h in again.search(DEMO / "astronaut.jpg", k=8)] == first
    again.close()
    with pytest.raises(ExtractorMismatch, match="name: index has 'color', asked for 'phash'"):
        backend("phash")


def test_neighbours_and_duplicates_agree_across_backends(backend, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 10)
    for i in (1, 4):  # two re-encoded copies: near-duplicates, not identical files
        Image.open(folder / f"img000{i}.jpg").save(folder / f"copy{i}.jpg", quality=60)
    ix = backend("phash")
    ix.add(folder, jobs=1)
    with Index.create(tmp_path / "reference", "phash") as ref:
        ref.add(folder, jobs=1)
        expected = [(p, [(h.path, h.score) for h in hits]) for p, hits in ref.neighbours(3, exact=True)]
        expected_groups = [[m.path for m in g.members] for g in ref.duplicates(threshold=0.9)]
    got = [(p, [(h.path, h.score) for h in hits]) for p, hits in ix.neighbours(3)]
    assert got == expected
    groups = ix.duplicates(threshold=0.9)
    assert [[m.path for m in g.members] for g in groups] == expected_groups
    assert ("copy1.jpg", "img0001.jpg") in {tuple(sorted(os.path.basename(m.path) for m in g.members)) for g in groups}


def test_cnn_finds_an_edited_copy(backend, tmp_path, photos):
    ix = backend("cnn")
    ix.add(photos, jobs=1)
    img = Image.open(DEMO / "rocket.jpg").convert("L").rotate(8, expand=True)
    query = tmp_path / "query.jpg"
    img.save(query, quality=40)
    hits = ix.search(query, k=3)
    assert hits[0].path == str(photos / "rocket.jpg")
    assert hits[0].score > hits[1].score >= hits[2].score
    assert ix.search(photos / "cat.jpg", k=1)[0].score == pytest.approx(1.0, abs=2e-3)


def test_verified_search_finds_a_turned_mirrored_copy(backend, tmp_path, photos):
    ix = backend("cnn")  # keypoints stored by default with cnn, on either backend
    ix.add(photos, jobs=1)
    assert ix.store.manifest.local is not None
    turned = np.asarray(Image.open(DEMO / "rocket.jpg").convert("RGB").rotate(90, expand=True))[:, ::-1]
    hits = ix.search(np.ascontiguousarray(turned), k=3, verify=True)
    assert hits[0].path == str(photos / "rocket.jpg") and hits[0].inliers >= 12
    assert all(h.inliers < hits[0].inliers for h in hits[1:])


def test_shards_split_a_folder_disjointly(backend, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 30)
    ix = backend("phash")
    seen = 0
    for i in range(3):  # a shard manages only its own files: the others' stay
        report = ix.add(folder, jobs=1, shard=(i, 3))
        seen += report.seen
        assert report.removed == 0 and report.added == report.seen == len(ix) - seen + report.seen
        assert ix.add(folder, jobs=1, shard=(i, 3)).processed == 0
    assert seen == 30 and len(ix) == 30
    keep = shard_filter((1, 3))
    assert [keep(str(p)) for p in folder.iterdir()] == [path_id(str(p)) % 3 == 1 for p in folder.iterdir()]
    _consistent(ix)


# -- Milvus only ------------------------------------------------------------------------------
def test_milvus_search_recalls_the_exact_search(milvus_ok, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 300, size=48)
    with Index.create(tmp_path / "local", "color") as local, \
            open_index(tmp_path / "m.db", "color", create=True) as ix:
        local.add(folder, jobs=1)
        ix.add(folder, jobs=1)
        queries = sorted(folder.iterdir())[::6]
        found, total = 0, 0
        for q in queries:
            vector = local.embed(q)[None]
            exact = local.search_vectors(vector, 10, exact=True)[0]
            approx = ix.search_vectors(vector, 10)[0]
            found += len({h.path for h in exact} & {h.path for h in approx})
            total += len(exact)
            for a, e in zip(approx, exact):
                if a.path == e.path:
                    assert a.score == pytest.approx(e.score, abs=2e-3)
            # the Milvus index's own exact reference: the same files as the local backend
            assert [h.path for h in ix.search_vectors(vector, 10, exact=True)[0]] == [h.path for h in exact]
        assert found / total >= 0.95


class FailingClient:
    """The real MilvusClient, except that one call fails after ``after`` successful ones.

    ``when="before"``: the failing call does nothing (the server was unreachable);
    ``when="after"``: it is carried out, then raises (the process died before the catalog commit).
    """

    def __init__(self, real, method: str, after: int, when: str):
        self.real, self.method, self.after, self.when = real, method, after, when
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name != self.method:
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls <= self.after:
                return attr(*args, **kwargs)
            if self.when == "after":
                attr(*args, **kwargs)
            from pymilvus.exceptions import MilvusException

            raise MilvusException(message=f"injected failure in {name} #{self.calls}")

        return call


@pytest.mark.parametrize("when", ["before", "after"])
def test_failure_between_milvus_and_catalog_is_repaired_by_a_rerun(milvus_ok, tmp_path, when):
    from lookalike.backends.milvus import MilvusError

    folder = tmp_path / "in"
    make_pattern_images(folder, 20)
    db = tmp_path / "m.db"
    with open_index(db, "phash", create=True) as ix:
        real = ix.backend.collection.client
        ix.backend.collection.client = FailingClient(real, "upsert", after=2, when=when)
        with pytest.raises(MilvusError, match="injected failure"):
            ix.add(folder, jobs=1, batch_size=4)
        ix.backend.collection.client = real
        committed = len(ix)
        assert committed == 8  # two batches of 4 reached the catalog
        assert ix.backend.collection.count() == (12 if when == "after" else 8)
        lost = sorted(folder.iterdir())[9]  # in the failed batch, deleted before the rerun
        lost.unlink()
        report = ix.add(folder, jobs=1, batch_size=4)
        assert report.added == 11 and len(ix) == 19
        _consistent(ix)  # no entity left for the lost file
        shutil.copy(DEMO / "cat.jpg", lost)
        # deletes: the files go, Milvus forgets them, then the catalog commit fails
        for p in sorted(folder.iterdir())[:5]:
            p.unlink()
        ix.backend.collection.client = FailingClient(real, "delete", after=0, when=when)
        with pytest.raises(MilvusError):
            ix.add(folder, jobs=1)
        ix.backend.collection.client = real
        assert len(ix) == 20  # the catalog still lists them (and the new cat)
        report = ix.add(folder, jobs=1)
        assert report.removed == 5 and len(ix) == 15
        _consistent(ix)
        assert len(ix.search(DEMO / "cat.jpg", k=None)) == 15


def test_shards_fill_one_collection_that_any_reader_searches(milvus_ok, tmp_path):
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 24)
    db = tmp_path / "m.db"
    per_shard = []
    for i in range(3):  # three indexers (here one after the other), each with its own local catalog
        with open_index(db, "phash", create=True, shard=(i, 3)) as ix:
            assert ix.path.endswith(f"lookalike.shard-{i}-of-3")
            report = ix.add(folder, jobs=1, shard=(i, 3))
            per_shard.append({h for h in ix.live().paths})
            assert report.added == len(per_shard[-1])
    assert sum(len(s) for s in per_shard) == 24 and set().union(*per_shard) == {str(p) for p in paths}
    with open_index(db) as reader:  # knows no file locally: searches Milvus alone
        assert len(reader) == 0
        assert reader.backend.collection.count() == 24
        hits = reader.search(paths[7], k=24)
        assert hits[0].path == str(paths[7]) and hits[0].id == path_id(str(paths[7]))
        assert {h.path for h in hits} == {str(p) for p in paths}
    with open_index(db, shard=(0, 3)) as one:  # a shard's duplicates: its files, neighbours from all
        assert all(h.path for _, hits in one.neighbours(2) for h in hits)
        groups = one.duplicates(threshold=0.5)
        assert all(m.path in per_shard[0] for g in groups for m in g.members)
    with pytest.raises(ValueError, match="trainable"):
        with open_index(tmp_path / "k.db", "orb", create=True) as ix:
            ix.add(folder, jobs=1, shard=(0, 2))


def test_local_catalog_of_another_collection_is_refused(milvus_ok, tmp_path):
    from lookalike.store import IndexStoreError

    folder = tmp_path / "in"
    make_pattern_images(folder, 3)
    with open_index(tmp_path / "a.db", "phash", create=True, local=tmp_path / "catalog") as ix:
        ix.add(folder, jobs=1)
    with pytest.raises(IndexStoreError, match="another Milvus collection"):
        open_index(tmp_path / "b.db", "phash", create=True, local=tmp_path / "catalog")
    with pytest.raises(NotAnIndex, match="no collection 'other'"):
        open_index(tmp_path / "a.db", collection="other")


def test_cli_index_search_info_check_duplicates(milvus_ok, tmp_path):
    import json

    from click.testing import CliRunner

    from lookalike.cli import main

    folder = tmp_path / "in"
    make_pattern_images(folder, 6)
    shutil.copy(folder / "img0002.jpg", folder / "twin.jpg")
    db = str(tmp_path / "m.db")
    run = CliRunner().invoke
    r = run(main, ["index", str(folder), "--milvus", db, "-e", "phash", "-j", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["added"] == 6
    r = run(main, ["search", str(folder / "img0002.jpg"), "--milvus", db, "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)["hits"]
    assert [os.path.basename(h["path"]) for h in hits] == ["img0002.jpg", "twin.jpg"]
    assert hits[0]["id"] == path_id(str(folder / "img0002.jpg"))
    r = run(main, ["info", "--milvus", db])
    assert r.exit_code == 0 and "7 entities" in r.output, r.output
    r = run(main, ["check", "--milvus", db])
    assert r.exit_code == 0, r.output
    r = run(main, ["duplicates", "--milvus", db, "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["groups"]) == 1
    r = run(main, ["index", str(folder), "--milvus", db, "-e", "color"])
    assert r.exit_code == 1 and "different extractor" in r.output
    r = run(main, ["index", str(folder), "--milvus", db, "--shard", "3/2"])
    assert r.exit_code == 1 and "0 <= I < N" in r.output
    r = run(main, ["search", str(folder / "img0002.jpg")])
    assert r.exit_code == 2 and "--index DIR (or --milvus URI)" in r.output


def _lose_milvus_data(db, how: str) -> None:
    """What someone else does behind lookalike's back, with pymilvus directly."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    client = MilvusClient(str(db))
    try:
        if how == "delete":
            client.delete("lookalike", filter="id >= 0")
            assert client.query("lookalike", filter="", output_fields=["count(*)"])[0]["count(*)"] == 0
        else:
            client.drop_collection("lookalike")
    finally:
        client.close()
        server_manager_instance.release_server(str(db))  # let the next process open the file


def _has_server_extra() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "httpx", "uvicorn"))


@pytest.mark.parametrize("how", ["delete", "drop"])
def test_a_collection_that_lost_its_data_is_said_and_repaired_by_index(milvus_ok, tmp_path, how):
    folder = tmp_path / "in"
    make_pattern_images(folder, 6)
    db = tmp_path / "m.db"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    assert cli("index", folder, "--milvus", db, "-e", "phash", "-j", "1", "-q").returncode == 0
    _lose_milvus_data(db, how)
    query = folder / "img0003.jpg"
    out = cli("search", query, "--milvus", db, "--json")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "lookalike index" in out.stderr, out.stderr
    out = cli("check", "--milvus", db)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "lookalike index" in out.stdout + out.stderr, (out.stdout, out.stderr)
    if how == "delete" and _has_server_extra():  # the HTTP API says so too, instead of no hits
        import httpx

        from .live_server import LiveServer

        with LiveServer(f"{db}.lookalike/lookalike", "--milvus", db) as server:
            r = httpx.post(server.url + "/api/search", files={"image": ("q.jpg", query.read_bytes())}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_unavailable", r.text
        assert "lookalike index" in r.json()["error"]["message"]
    out = cli("index", folder, "--milvus", db, "-j", "1", "-q")  # as the advice says
    assert out.returncode == 0, out.stderr
    out = cli("check", "--milvus", db)
    assert out.returncode == 0, (out.stdout, out.stderr)
    out = cli("search", query, "--milvus", db, "--json", "-k", "6")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["hits"]
    assert hits[0]["path"] == str(query) and len(hits) == 6


def test_check_repair_sends_what_the_collection_lost(milvus_ok, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 4)
    db = tmp_path / "m.db"
    with open_index(db, "phash", create=True) as ix:
        ix.add(folder, jobs=1)
    _lose_milvus_data(db, "delete")
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "check", "--milvus", str(db), "--repair"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "sent 4 indexed files" in out.stdout, (out.stdout, out.stderr)
    with open_index(db) as ix:
        _consistent(ix)


def test_an_empty_collection_of_an_empty_catalog_answers_no_hits(milvus_ok, tmp_path):
    with open_index(tmp_path / "m.db", "phash", create=True) as ix:
        assert ix.search(DEMO / "cat.jpg", k=3) == []


def test_cli_eval_on_milvus_matches_local(milvus_ok, tmp_path):
    import json

    from click.testing import CliRunner

    from lookalike.cli import main

    for c in range(3):  # one class per pattern: the pattern and three rotated copies
        (first,) = make_pattern_images(tmp_path / "data" / f"c{c}", 1, seed=c)
        for j in range(3):
            Image.open(first).rotate(5 * (j + 1)).save(first.parent / f"r{j}.jpg")
    run = CliRunner().invoke
    base = ["eval", str(tmp_path / "data"), "-e", "phash", "-j", "1", "-q", "--json"]
    local = run(main, base)
    milvus = run(main, base + ["--milvus", str(tmp_path / "e.db")])
    assert local.exit_code == 0 and milvus.exit_code == 0, (local.output, milvus.output)
    a, b = json.loads(local.output), json.loads(milvus.output)
    assert a["queries"] == b["queries"] == 12
    assert a["map"] == pytest.approx(b["map"]) and a["map"] > 0.5
    assert a["ap_by_class"] == pytest.approx(b["ap_by_class"]) and a["precision"] == b["precision"]


def test_serve_a_milvus_index(milvus_ok, tmp_path, photos):
    pytest.importorskip("fastapi", reason="needs the 'server' extra")
    httpx = pytest.importorskip("httpx")
    from .live_server import LiveServer

    db = tmp_path / "m.db"
    with open_index(db, "phash", create=True) as ix:
        ix.add(photos, jobs=1)
        local = ix.path
        cat_id = path_id(str(photos / "cat.jpg"))
    with LiveServer(local, "--milvus", db) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        with open(DEMO / "cat.jpg", "rb") as f:
            r = client.post("/api/search", files={"image": ("cat.jpg", f, "image/jpeg")}, params={"k": 3})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["path"] == str(photos / "cat.jpg") and hits[0]["id"] == cat_id
        r = client.get(f"/api/search/{cat_id}", params={"k": 2})
        assert r.status_code == 200 and r.json()["hits"][0]["id"] == cat_id
        th = client.get(f"/api/files/{cat_id}/thumbnail", params={"size": 100})
        assert th.status_code == 200 and th.headers["content-type"].startswith("image/")
        assert client.get(f"/api/files/{cat_id}").json()["path"] == str(photos / "cat.jpg")
        info = client.get("/api/info").json()
        assert info["manifest"]["milvus"]["entities"] == 8


# -- packaging -------------------------------------------------------------------------------
def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    from lookalike.backends.milvus import MISSING_EXTRA, MilvusUnavailable

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if not installed
    with pytest.raises(MilvusUnavailable) as e:
        open_index(tmp_path / "m.db", "phash", create=True)
    assert str(e.value) == MISSING_EXTRA
    assert "pip install 'lookalike[milvus]'" in MISSING_EXTRA and "pip install -e '.[milvus]'" in MISSING_EXTRA
    assert isinstance(e.value, ImportError)


def test_import_stays_light():
    code = ("import sys, lookalike, lookalike.backends, lookalike.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pymilvus', 'milvus_lite', 'faiss', 'onnxruntime'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_path_ids_and_shard_parsing():
    assert path_id("/a/b.jpg") == path_id("/a/b.jpg") != path_id("/a/c.jpg")
    ids = [path_id(f"/photos/{i}.jpg") for i in range(1000)]
    assert all(0 <= i < 2**63 for i in ids) and len(set(ids)) == 1000
    counts = np.bincount([i % 4 for i in ids], minlength=4)
    assert counts.min() > 200  # shards are even
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_bench_runs_on_a_small_collection(milvus_ok, tmp_path):
    from .conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "milvus.py"), "--size", "400", "--queries", "20",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    rows = [line for line in out.splitlines() if line.startswith("| local") or line.startswith("| Milvus Lite")]
    assert len(rows) == 2, out
    assert all(float(row.strip("| ").split("|")[-1]) >= 0.9 for row in rows)  # recall@10
