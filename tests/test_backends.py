"""One behavioural suite over the backends: a local index folder, Milvus Lite and a real Milvus server.

Milvus Lite runs from a file in the test's temporary folder (``pymilvus``
starts it); the server is the one named by ``LOOKALIKE_TEST_MILVUS_URI``
(``.ci/run`` starts a real Milvus 2.3.5 standalone server for the suite). Each
half is skipped, saying why, where it cannot run; see tests/milvus_targets.py.
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
from .milvus_targets import KINDS, lite_problem, make_target


@pytest.fixture(params=KINDS)
def milvus(request, tmp_path, tmp_path_factory, monkeypatch):
    """Milvus Lite, or the real server named by LOOKALIKE_TEST_MILVUS_URI (see tests/milvus_targets.py)."""
    target = make_target(request.param, tmp_path, tmp_path_factory, monkeypatch)
    yield target
    target.cleanup()


@pytest.fixture
def server(tmp_path, tmp_path_factory, monkeypatch):
    """The real Milvus server alone, for what Milvus Lite cannot do."""
    target = make_target("server", tmp_path, tmp_path_factory, monkeypatch)
    yield target
    target.cleanup()


@pytest.fixture(params=["local", *KINDS])
def backend(request, tmp_path, tmp_path_factory, monkeypatch):
    """``make(extractor=None, **kw)`` -> an open index of this backend (created if new), in tmp_path."""
    target = None if request.param == "local" else make_target(request.param, tmp_path, tmp_path_factory, monkeypatch)
    opened = []

    def make(extractor=None, **kw):
        if target is None:
            ix = open_index(tmp_path / "idx", extractor, create=True, **kw)
        else:
            ix = target.open("b", extractor, create=True, **kw)
        opened.append(ix)
        return ix

    make.kind = request.param
    yield make
    for ix in opened:
        try:
            ix.close()
        except Exception:
            pass
    if target is not None:
        target.cleanup()


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
def test_milvus_search_recalls_the_exact_search(milvus, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 300, size=48)
    with Index.create(tmp_path / "local", "color") as local, \
            milvus.open("m", "color", create=True) as ix:
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
def test_failure_between_milvus_and_catalog_is_repaired_by_a_rerun(milvus, tmp_path, when):
    from lookalike.backends.milvus import MilvusError

    folder = tmp_path / "in"
    make_pattern_images(folder, 20)
    with milvus.open("m", "phash", create=True) as ix:
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


def test_shards_fill_one_collection_that_any_reader_searches(milvus, tmp_path):
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 24)
    per_shard = []
    for i in range(3):  # three indexers (here one after the other), each with its own local catalog
        with milvus.open("m", "phash", create=True, shard=(i, 3)) as ix:
            assert ix.path.endswith(f"{milvus.collection()}.shard-{i}-of-3")
            report = ix.add(folder, jobs=1, shard=(i, 3))
            per_shard.append({h for h in ix.live().paths})
            assert report.added == len(per_shard[-1])
    assert sum(len(s) for s in per_shard) == 24 and set().union(*per_shard) == {str(p) for p in paths}
    with milvus.open("m") as reader:  # knows no file locally: searches Milvus alone
        assert len(reader) == 0
        assert reader.backend.collection.count() == 24
        hits = reader.search(paths[7], k=24)
        assert hits[0].path == str(paths[7]) and hits[0].id == path_id(str(paths[7]))
        assert {h.path for h in hits} == {str(p) for p in paths}
    with milvus.open("m", shard=(0, 3)) as one:  # a shard's duplicates: its files, neighbours from all
        assert all(h.path for _, hits in one.neighbours(2) for h in hits)
        groups = one.duplicates(threshold=0.5)
        assert all(m.path in per_shard[0] for g in groups for m in g.members)
    with pytest.raises(ValueError, match="trainable"):
        with milvus.open("k", "orb", create=True) as ix:
            ix.add(folder, jobs=1, shard=(0, 2))


def test_local_catalog_of_another_collection_is_refused(milvus, tmp_path):
    from lookalike.store import IndexStoreError

    folder = tmp_path / "in"
    make_pattern_images(folder, 3)
    with milvus.open("a", "phash", create=True, local=tmp_path / "catalog") as ix:
        ix.add(folder, jobs=1)
    with pytest.raises(IndexStoreError, match="another Milvus collection"):
        milvus.open("b", "phash", create=True, local=tmp_path / "catalog")
    other = milvus.collection("other") if milvus.server else "other"  # Lite: another one in file a.db
    with pytest.raises(NotAnIndex, match=f"no collection '{other}'"):
        open_index(milvus.uri("a"), collection=other, token=milvus.token)


def test_cli_index_search_info_check_duplicates(milvus, tmp_path):
    import json

    from click.testing import CliRunner

    from lookalike.cli import main

    folder = tmp_path / "in"
    make_pattern_images(folder, 6)
    shutil.copy(folder / "img0002.jpg", folder / "twin.jpg")
    db = milvus.args("m")
    run = CliRunner().invoke
    r = run(main, ["index", str(folder), *db, "-e", "phash", "-j", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["added"] == 6
    r = run(main, ["search", str(folder / "img0002.jpg"), *db, "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)["hits"]
    assert [os.path.basename(h["path"]) for h in hits] == ["img0002.jpg", "twin.jpg"]
    assert hits[0]["id"] == path_id(str(folder / "img0002.jpg"))
    r = run(main, ["info", *db])
    assert r.exit_code == 0 and "7 entities" in r.output, r.output
    r = run(main, ["check", *db])
    assert r.exit_code == 0, r.output
    r = run(main, ["duplicates", *db, "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["groups"]) == 1
    r = run(main, ["index", str(folder), *db, "-e", "color"])
    assert r.exit_code == 1 and "different extractor" in r.output
    r = run(main, ["index", str(folder), *db, "--shard", "3/2"])
    assert r.exit_code == 1 and "0 <= I < N" in r.output
    r = run(main, ["search", str(folder / "img0002.jpg")])
    assert r.exit_code == 2 and "--index DIR (or --milvus URI)" in r.output


def _has_server_extra() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "httpx", "uvicorn"))


@pytest.mark.parametrize("how", ["delete", "drop"])
def test_a_collection_that_lost_its_data_is_said_and_repaired_by_index(milvus, tmp_path, how):
    folder = tmp_path / "in"
    make_pattern_images(folder, 6)
    db = milvus.args("m")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    assert cli("index", folder, *db, "-e", "phash", "-j", "1", "-q").returncode == 0
    milvus.lose("m", how)
    query = folder / "img0003.jpg"
    out = cli("search", query, *db, "--json")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "lookalike index" in out.stderr, out.stderr
    out = cli("check", *db)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "lookalike index" in out.stdout + out.stderr, (out.stdout, out.stderr)
    if how == "delete" and _has_server_extra():  # the HTTP API says so too, instead of no hits
        import httpx

        from .live_server import LiveServer

        with LiveServer(milvus.local_dir("m"), *db) as server:
            r = httpx.post(server.url + "/api/search", files={"image": ("q.jpg", query.read_bytes())}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_unavailable", r.text
        assert "lookalike index" in r.json()["error"]["message"]
    out = cli("index", folder, *db, "-j", "1", "-q")  # as the advice says
    assert out.returncode == 0, out.stderr
    out = cli("check", *db)
    assert out.returncode == 0, (out.stdout, out.stderr)
    out = cli("search", query, *db, "--json", "-k", "6")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["hits"]
    assert hits[0]["path"] == str(query) and len(hits) == 6


def test_check_repair_sends_what_the_collection_lost(milvus, tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 4)
    with milvus.open("m", "phash", create=True) as ix:
        ix.add(folder, jobs=1)
    milvus.lose("m", "delete")
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "check", *milvus.args("m"), "--repair"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "sent 4 indexed files" in out.stdout, (out.stdout, out.stderr)
    with milvus.open("m") as ix:
        _consistent(ix)


def test_an_empty_collection_of_an_empty_catalog_answers_no_hits(milvus, tmp_path):
    with milvus.open("m", "phash", create=True) as ix:
        assert ix.search(DEMO / "cat.jpg", k=3) == []


def test_cli_eval_on_milvus_matches_local(milvus, tmp_path):
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
    remote = run(main, base + milvus.args("e"))
    assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
    a, b = json.loads(local.output), json.loads(remote.output)
    assert a["queries"] == b["queries"] == 12
    assert a["map"] == pytest.approx(b["map"]) and a["map"] > 0.5
    assert a["ap_by_class"] == pytest.approx(b["ap_by_class"]) and a["precision"] == b["precision"]


def test_serve_a_milvus_index(milvus, tmp_path, photos):
    pytest.importorskip("fastapi", reason="needs the 'server' extra")
    httpx = pytest.importorskip("httpx")
    from .live_server import LiveServer

    with milvus.open("m", "phash", create=True) as ix:
        ix.add(photos, jobs=1)
        local = ix.path
        cat_id = path_id(str(photos / "cat.jpg"))
    with LiveServer(local, *milvus.args("m")) as server, httpx.Client(base_url=server.url, timeout=30) as client:
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


# -- a real server only --------------------------------------------------------------------
def _lookalike(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lookalike.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _entities(target, name="m") -> list[dict]:
    client = target.client(name)
    try:
        return client.query(target.collection(name), filter="id >= 0", output_fields=["id", "path"])
    finally:
        client.close()


def test_writers_of_shards_at_once_fill_one_collection_exactly(server, tmp_path):
    # Milvus Lite runs inside one process and locks its file: writers at once need a server
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 90, size=48)
    query = paths[5]
    for attempt in ("a", "b"):  # writers racing to create the collection lost one in two tries
        args = server.args(attempt)
        writers = [_lookalike("index", folder, *args, "--shard", f"{i}/3", "-e", "phash", "-j", "1",
                              "--batch-size", "8", "-q") for i in range(3)]
        searches = 0
        while any(w.poll() is None for w in writers):  # searches while they write never fail
            client = server.client(attempt)
            made = client.has_collection(server.collection(attempt))
            client.close()
            if made:
                with server.open(attempt) as reader:
                    reader.search(query, k=3)
                    searches += 1
        errors = [w.communicate()[1] for w in writers]
        assert [w.returncode for w in writers] == [0, 0, 0], errors
        assert searches >= 1
        found = _entities(server, attempt)
        assert sorted(e["path"] for e in found) == sorted(map(str, paths))  # one entity per file
        assert {e["id"] for e in found} == {path_id(str(p)) for p in paths}
        with server.open(attempt) as reader:
            assert reader.search(query, k=1)[0].path == str(query)


def test_writers_that_create_the_collection_at_the_same_moment_all_get_it(server, tmp_path, monkeypatch):
    import threading

    from lookalike.backends.milvus import Collection

    create = Collection.create.__func__
    at_once = threading.Barrier(3, timeout=60)

    def create_together(cls, *args, **kwargs):  # all three found no collection; now all make it
        at_once.wait()
        return create(cls, *args, **kwargs)

    monkeypatch.setattr(Collection, "create", classmethod(create_together))
    made, failed = [], []

    def writer(i):
        try:
            with server.open("m", "phash", create=True, shard=(i, 3)) as ix:
                made.append(ix.backend.collection.properties["lookalike.uuid"])
        except Exception as e:
            failed.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failed == [] and len(made) == 3
    assert len(set(made)) == 1  # one collection, the one that was made first


def _catalog_rows(directory) -> int:
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{directory}/catalog.sqlite?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT value FROM meta WHERE key='n_rows'").fetchone()
        finally:
            db.close()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def test_a_server_gone_mid_indexing_is_one_line_and_a_rerun_completes(server, tmp_path):
    import time

    from .milvus_targets import Cable

    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 120, size=48)
    cable = Cable(server.uri()).mend()  # the server, as far as lookalike can tell
    args = ["--milvus", cable.uri, "--collection", server.collection("m")]
    local = os.path.join(os.environ["HOME"], ".lookalike", "milvus", f"127.0.0.1-{cable.port}", server.collection("m"))
    writer = _lookalike("index", folder, *args, "-e", "phash", "-j", "1", "--batch-size", "4", "-q")
    deadline = time.monotonic() + 120
    while _catalog_rows(local) < 12 and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.poll() is None, "indexing ended before the server could go away"
    cable.cut()
    _, err = writer.communicate(timeout=300)
    assert writer.returncode == 1 and "Traceback" not in err, err
    assert err.strip().count("\n") == 0 and "Milvus" in err and "server unavailable" in err, err
    with Index.open(local) as catalog:  # the local catalog stays consistent
        assert catalog.check() == [] and 12 <= len(catalog) < len(paths)
    cable.mend()
    rerun = _lookalike("index", folder, *args, "-j", "1", "--json")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    report = json.loads(out)
    assert report["unchanged"] + report["added"] == len(paths) and report["removed"] == 0
    assert sorted(e["path"] for e in _entities(server)) == sorted(map(str, paths))
    cable.cut()


def _released_collection(server, tmp_path):
    """Six files indexed on the server, then their collection released, as after a restart
    of the server; returns the files."""
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 6)
    with server.open("m", "phash", create=True) as ix:
        ix.add(folder, jobs=1)
    client = server.client()
    client.release_collection(server.collection())
    client.close()
    return paths


def test_a_collection_the_server_unloaded_is_loaded_again_with_a_note(server, tmp_path):
    paths = _released_collection(server, tmp_path)
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "search", paths[2], *server.args(), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "is loading collection" in out.stderr and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["hits"][0]["path"] == str(paths[2])


def test_a_load_that_outlasts_the_wait_is_one_line_naming_the_setting(server, tmp_path):
    paths = _released_collection(server, tmp_path)
    search = [sys.executable, "-m", "lookalike.cli", "search", paths[2], *server.args(), "--json"]
    out = subprocess.run(search, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LOOKALIKE_MILVUS_LOAD_TIMEOUT": "0.001"})
    assert out.returncode == 1 and "Traceback" not in out.stderr and out.stdout == "", out.stderr
    errors = [line for line in out.stderr.splitlines() if not line.startswith("note:")]
    assert len(errors) == 1 and "did not load collection" in errors[0], out.stderr
    assert "LOOKALIKE_MILVUS_LOAD_TIMEOUT" in errors[0] and "0.001 s" in errors[0]
    out = subprocess.run(search, capture_output=True, text=True, timeout=300)  # the default wait
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hits"][0]["path"] == str(paths[2])


def test_a_load_wait_that_is_not_a_number_is_one_line(milvus, tmp_path):
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 3)
    with milvus.open("m", "phash", create=True) as ix:
        ix.add(folder, jobs=1)
    for value in ("soon", "-5", "inf"):
        out = subprocess.run([sys.executable, "-m", "lookalike.cli", "search", paths[0], *milvus.args()],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "LOOKALIKE_MILVUS_LOAD_TIMEOUT": value})
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip().count("\n") == 0 and "LOOKALIKE_MILVUS_LOAD_TIMEOUT" in out.stderr


def test_a_server_with_authorization_wants_the_token_and_never_shows_it(server, tmp_path):
    import secrets
    import time

    from pymilvus import MilvusClient

    try:  # is authorization on? then no token, no answer
        MilvusClient(uri=server.uri()).close()
    except Exception:
        pass
    else:
        pytest.skip("this Milvus server has authorization off (.ci/run starts one with it on)")
    client = server.client()
    user, password = f"{server.prefix}_user", f"pw-{secrets.token_hex(8)}"
    client.create_user(user, password)
    client.grant_role(user, "admin")
    client.close()
    deadline = time.monotonic() + 60
    while True:  # the server takes a moment to let the new user's role count
        try:
            probe = MilvusClient(uri=server.uri(), token=f"{user}:{password}")
            probe.create_collection(f"{server.prefix}_probe", dimension=8)
            probe.drop_collection(f"{server.prefix}_probe")
            probe.close()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 4)
    env = {**os.environ, "LOOKALIKE_MILVUS_TOKEN": ""}
    env.pop("LOOKALIKE_MILVUS_TOKEN")
    outputs = []
    try:
        for token in (f"{user}:{password}", None):
            extra = ["--milvus-token", token] if token else []
            run = lambda *a: subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, a)],  # noqa: E731
                                            capture_output=True, text=True, timeout=300, env=env)
            results = [run("index", folder, *server.args(), "-e", "phash", "-j", "1", "--json", *extra),
                       run("search", paths[1], *server.args(), "--json", *extra),
                       run("info", *server.args(), *extra)]
            outputs += [r.stdout + r.stderr for r in results]
            if token:
                assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
                assert json.loads(results[1].stdout)["hits"][0]["path"] == str(paths[1])
            else:  # refused: one line each, saying where
                for r in results:
                    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
                    assert len(r.stderr.strip().splitlines()) == 1 and server.uri() in r.stderr, r.stderr
        wrong = subprocess.run([sys.executable, "-m", "lookalike.cli", "info", *server.args(), "--milvus-token",
                                f"{user}:not-{password}"], capture_output=True, text=True, timeout=300, env=env)
        assert wrong.returncode != 0 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        outputs.append(wrong.stdout + wrong.stderr)
        assert not [o for o in outputs if password in o]  # never printed
    finally:
        client = server.client()
        client.drop_user(user)
        client.close()


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


def test_bench_runs_on_a_small_collection(tmp_path, tmp_path_factory, monkeypatch):
    from .conftest import ROOT
    from .milvus_targets import server_problem

    problem = lite_problem(tmp_path_factory)
    if problem:
        pytest.skip(problem)
    command = [sys.executable, str(ROOT / "bench" / "milvus.py"), "--size", "400", "--queries", "20",
               "--workdir", str(tmp_path)]
    names = ["| local", "| Milvus Lite"]
    server = None if server_problem() else make_target("server", tmp_path, tmp_path_factory, monkeypatch)
    if server is not None:  # and the real server, when there is one
        command += ["--backends", "local,lite,server", "--server", server.uri(), "--collection", server.collection("bench")]
        names.append("| Milvus server")
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    finally:
        if server is not None:
            server.cleanup()
    rows = [line for line in out.splitlines() if line.startswith(tuple(names))]
    assert len(rows) == len(names), out
    assert all(float(row.strip("| ").split("|")[-2]) >= 0.9 for row in rows)  # recall@10
