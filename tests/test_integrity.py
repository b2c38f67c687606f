"""Integrity: an index's own files are checked before they are trusted.

Each test damages one of the index's files the way a mistake or an attack
would (a manifest naming files elsewhere or holding odd values, a row count
or dimension made smaller, links in place of files, a search structure from
another index or cut short, a full disk while saving it, garbage keypoints),
then runs the real ``lookalike`` command in a subprocess: it must refuse with
one line (never a traceback, never writing outside the index or cutting
valid rows), or cope and say so in a note; ``lookalike check`` must report
the damage and ``lookalike check --repair`` fix it. Two tests use the Python
API to reach the store directly and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from lookalike.store import IndexDamaged, IndexStore

from .conftest import DEMO, make_pattern_images
from .test_reliability import cli, ok, small_disk  # noqa: F401  (small_disk: a fixture)

N = 8


# -- fixtures and helpers ----------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("integrity") / "images"
    make_pattern_images(folder, N)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, images) -> Path:
    """A phash index of ``images`` with an HNSW structure (ann.faiss), made once and copied per test."""
    idx = tmp_path_factory.mktemp("built") / "idx"
    ok(cli("index", images, "--index", idx, "-e", "phash", "--ann", "hnsw", "-q"))
    return idx


@pytest.fixture
def idx(tmp_path, built) -> Path:
    copy = tmp_path / "idx"
    shutil.copytree(built, copy)
    return copy


@pytest.fixture
def more(tmp_path) -> Path:
    folder = tmp_path / "more"
    make_pattern_images(folder, 2, seed=9)
    return folder


def fails_in_one_line(out, *words: str) -> str:
    """Assert a refusal: exit status 1, one line on stderr, no traceback, ``words`` in it."""
    assert out.returncode == 1, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr
    return out.stderr


def edit_manifest(idx: Path, change) -> None:
    data = json.loads((idx / "manifest.json").read_text())
    data = change(data) or data
    (idx / "manifest.json").write_text(json.dumps(data))


def set_meta(idx: Path, key: str, value) -> None:
    db = sqlite3.connect(idx / "catalog.sqlite")
    with db:
        db.execute("UPDATE meta SET value=? WHERE key=?", (value, key))
    db.close()


def top_hits(idx: Path, folder: Path) -> dict[str, str]:
    """Each image of ``folder`` as a query: query -> its best hit; the command must succeed."""
    out = ok(cli("search", folder, "--index", idx, "-k", "1", "--json"))
    return {os.path.basename(r["query"]): os.path.basename(r["hits"][0]["path"])
            for r in map(json.loads, out.stdout.splitlines())}


def finds_itself(idx: Path, folder: Path) -> bool:
    hits = top_hits(idx, folder)
    return len(hits) == len(list(folder.iterdir())) and all(q == h for q, h in hits.items())


def repaired(idx: Path) -> str:
    """``check --repair``, then a plain ``check`` that must say ok; returns what the repair printed."""
    out = ok(cli("check", "--repair", idx))
    assert out.stdout.strip().endswith(": ok"), out.stdout
    assert ok(cli("check", idx)).stdout.strip().endswith(": ok")
    return out.stdout


# -- 1. file names in the manifest, links in place of the index's own files -----------
@pytest.mark.parametrize("field, value", [
    ("vectors", "{outside}"),
    ("vectors", "../outside.bin"),
    ("catalog", "../evil.sqlite"),
    ("catalog", "{elsewhere}/evil.sqlite"),
    ("files", {"../outside.npy": "extractor state"}),
    ("files", {"{outside}": "ann"}),
    ("files", {"ann.faiss": "extractor state"}),
])
def test_a_manifest_naming_files_outside_the_index_is_refused(idx, images, tmp_path, field, value):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def fill(v):
        if isinstance(v, dict):
            return {fill(k): r for k, r in v.items()}
        return v.format(outside=outside, elsewhere=elsewhere)

    edit_manifest(idx, lambda m: m.update({field: fill(value)}))
    fails_in_one_line(cli("index", images, "--index", idx, "-q"), "manifest.json is damaged", field)
    fails_in_one_line(cli("search", images / "img0001.jpg", "--index", idx), "manifest.json is damaged")
    assert outside.read_bytes() == b"precious"
    assert not (tmp_path / "evil.sqlite").exists() and not list(elsewhere.iterdir())


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_a_manifest_that_is_not_a_small_regular_file_gives_one_line(idx, kind):
    manifest = idx / "manifest.json"
    manifest.unlink()
    if kind == "dev-zero":
        manifest.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.write_text(json.dumps({"pad": "x" * (2 << 20)}))
    fails_in_one_line(cli("info", idx, timeout=120), "manifest.json is damaged")
    fails_in_one_line(cli("check", idx, timeout=120), "manifest.json is damaged")


@pytest.mark.parametrize("name", ["vectors.bin", "catalog.sqlite", "lock"])
def test_own_files_that_are_links_are_refused_and_their_targets_untouched(idx, more, tmp_path, name):
    outside = tmp_path / "outside"
    if (idx / name).exists():
        shutil.copy(idx / name, outside)  # a working copy: followed, it would be written to
    else:
        outside.write_bytes(b"precious")
    before = outside.read_bytes()
    (idx / name).unlink(missing_ok=True)
    (idx / name).symlink_to(outside)
    fails_in_one_line(cli("index", more, "--index", idx, "-q"), name, "symbolic link")
    assert outside.read_bytes() == before


@pytest.mark.parametrize("name, args", [
    ("manifest.json.tmp", ["--ann", "exact"]),  # the manifest is written again
    ("ann.faiss.tmp", []),  # the search structure is saved again
])
def test_temporary_files_left_as_links_are_replaced_not_followed(idx, images, more, tmp_path, name, args):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    (idx / name).symlink_to(outside)
    ok(cli("index", more, "--index", idx, "-q", *args))
    assert outside.read_bytes() == b"precious"
    assert not os.path.lexists(idx / name)
    assert not (idx / "manifest.json").is_symlink() and not (idx / "ann.faiss").is_symlink()
    ok(cli("check", idx))
    assert finds_itself(idx, images)


# -- 2. odd values in the manifest ------------------------------------------------------
@pytest.mark.parametrize("change, word", [
    (lambda m: [m], "JSON list"),
    (lambda m: m.pop("dim") and None, "lacks dim"),
    (lambda m: m.pop("extractor") and None, "lacks extractor"),
    (lambda m: m.update(dtype="float64"), "dtype"),
    (lambda m: m.update(dim="64"), "dim"),
    (lambda m: m.update(dim=-64), "dim"),
    (lambda m: m.update(dim=60), "multiple of 8"),
    (lambda m: m.update(dim=True), "dim"),
    (lambda m: m.update(metric="euclidean"), "metric"),
    (lambda m: m.update(ann="annoy"), "ann"),
    (lambda m: m.update(schema_version="1"), "schema_version"),
    (lambda m: m.update(schema_version=None), "schema_version"),
    (lambda m: m.update(extractor="phash"), "extractor"),
    (lambda m: m.update(extractor={"name": "phash", "hash_size": "big"}), "extractor"),
    (lambda m: m.update(files=["ann.faiss"]), "files"),
    (lambda m: m.update(local={"detector": "orb"}), "local"),
    (lambda m: m.update(content_hash="md5"), "content_hash"),
])
def test_odd_manifest_values_give_one_line_saying_it_is_damaged(idx, images, change, word):
    edit_manifest(idx, change)
    err = fails_in_one_line(cli("search", images / "img0001.jpg", "--index", idx), "manifest.json is damaged", word)
    assert "upgrade" not in err
    fails_in_one_line(cli("index", images, "--index", idx, "-q"), "manifest.json is damaged")


def test_only_a_newer_integer_schema_version_asks_for_an_upgrade(idx, images):
    edit_manifest(idx, lambda m: m.update(schema_version=2))
    fails_in_one_line(cli("search", images / "img0001.jpg", "--index", idx), "upgrade lookalike")


# -- 3. dimension and row count checked against each other before anything is written --
@pytest.mark.parametrize("dim", [32, 128])
def test_a_wrong_manifest_dim_is_refused_before_writing_and_repaired(idx, images, more, dim):
    vectors = (idx / "vectors.bin").read_bytes()
    edit_manifest(idx, lambda m: m.update(dim=dim))
    fails_in_one_line(cli("index", more, "--index", idx, "-q"), f"says the vectors have {dim} dimensions",
                      "check --repair")
    assert (idx / "vectors.bin").read_bytes() == vectors  # not truncated to the smaller rows
    fails_in_one_line(cli("search", images / "img0001.jpg", "--index", idx), "dimensions")
    out = cli("check", idx)
    assert out.returncode == 1 and "Traceback" not in out.stderr and f"{dim} dimensions" in out.stderr
    assert f"dim {dim} -> 64" in repaired(idx)
    assert json.loads((idx / "manifest.json").read_text())["dim"] == 64
    ok(cli("index", more, "--index", idx, "-q"))
    assert finds_itself(idx, images) and finds_itself(idx, more)


@pytest.mark.parametrize("n_rows", ["3", "0", "-1", "lots"])
def test_a_wrong_row_count_is_refused_before_writing_and_repaired(idx, images, more, n_rows):
    vectors = (idx / "vectors.bin").read_bytes()
    set_meta(idx, "n_rows", n_rows)
    fails_in_one_line(cli("index", more, "--index", idx, "-q"), "damaged", "check --repair")
    assert (idx / "vectors.bin").read_bytes() == vectors  # acquire did not truncate rows in use
    fails_in_one_line(cli("search", images / "img0001.jpg", "--index", idx), "damaged", "n_rows")
    out = cli("check", idx)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "n_rows" in out.stderr
    assert f"-> {N}" in repaired(idx)
    assert finds_itself(idx, images)
    added = json.loads(ok(cli("index", more, "--index", idx, "--json")).stdout)["added"]
    assert added == 2 and finds_itself(idx, more)


def test_repair_forgets_files_whose_vectors_are_missing_and_the_next_run_embeds_them(idx, images):
    set_meta(idx, "n_rows", "2")
    os.truncate(idx / "vectors.bin", 5 * 8 + 3)  # 5 whole rows of 8 bytes are left
    out = repaired(idx)
    assert "n_rows: 2 -> 5" in out and "forgot 3 files" in out
    again = json.loads(ok(cli("index", images, "--index", idx, "--json")).stdout)
    assert again["added"] == 3 and again["unchanged"] == 5
    ok(cli("check", idx))
    assert finds_itself(idx, images)


def test_the_store_refuses_to_become_the_writer_of_a_damaged_index(idx):
    """Python API: the store itself, below Index, never truncates rows in use."""
    size = os.path.getsize(idx / "vectors.bin")
    set_meta(idx, "n_rows", "1")
    with pytest.raises(IndexDamaged, match="check --repair"):
        IndexStore.open(idx)
    store = IndexStore.open(idx, validate=False)
    try:
        with pytest.raises(IndexDamaged, match="past the 1 committed"):
            store.acquire()
        assert os.path.getsize(idx / "vectors.bin") == size
        assert store.repair() == [f"n_rows: 1 -> {N} (the rows in use)"]
        with store.writing():
            pass
        assert store.check() == []
    finally:
        store.close()


# -- 4. the search structure, ann.faiss ---------------------------------------------------
@pytest.mark.parametrize("copied", [["ann.faiss"], ["ann.faiss", "ann.json"]])
def test_a_search_structure_from_another_index_is_not_used(idx, images, tmp_path, copied):
    other_images = tmp_path / "other"
    make_pattern_images(other_images, N, seed=5)
    other = tmp_path / "other-idx"
    ok(cli("index", other_images, "--index", other, "-e", "phash", "--ann", "hnsw", "-q"))
    for name in copied:
        shutil.copy(other / name, idx / name)
    assert finds_itself(idx, images)
    out = ok(cli("search", images, "--index", idx, "-k", "1"))
    assert "note:" in out.stderr and "ann.faiss" in out.stderr and "rebuilding it" in out.stderr
    check = cli("check", idx)
    assert check.returncode == 1 and "problem:" in check.stderr and "ann.faiss" in check.stderr
    assert "rebuilt it" in repaired(idx)
    assert "note:" not in ok(cli("search", images, "--index", idx, "-k", "1")).stderr


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "no record"])
def test_a_broken_search_structure_is_rebuilt_with_a_note(idx, images, more, damage):
    path = idx / "ann.faiss"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * (len(data) // 256 + 1))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        (idx / "ann.json").unlink()
    out = ok(cli("search", images, "--index", idx, "-k", "1"))
    notes = [line for line in out.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "ann.faiss" in notes[0], out.stderr
    assert finds_itself(idx, images)
    assert cli("check", idx).returncode == 1
    ok(cli("index", more, "--index", idx, "-q"))  # saves a rebuilt structure with its record
    ok(cli("check", idx))
    out = ok(cli("search", images, "--index", idx, "-k", "1"))
    assert "note:" not in out.stderr
    assert finds_itself(idx, images) and finds_itself(idx, more)


def test_a_full_disk_while_saving_ann_faiss_is_one_line_and_leaves_no_tmp(small_disk, tmp_path):  # noqa: F811
    mnt, fill = small_disk
    images = tmp_path / "forty"
    make_pattern_images(images, 40, seed=3)
    idx = mnt / "idx"
    ok(cli("index", images, "--index", idx, "-e", "hog", "--ann", "hnsw", "-q"))  # ann.faiss: about 150 KB
    (idx / "ann.faiss").unlink()
    (idx / "ann.json").unlink(missing_ok=True)
    filler = fill(keep=64 * 1024)  # room for the catalog's work, not for the structure
    out = cli("index", images, "--index", idx, "-q")
    err = fails_in_one_line(out, "could not save the search structure ann.faiss", "No space left on device",
                            "indexed files are committed")
    assert "run `lookalike index` again" in err
    assert not os.path.lexists(idx / "ann.faiss.tmp") and not os.path.lexists(idx / "ann.json.tmp")
    filler.unlink()
    ok(cli("index", images, "--index", idx, "-q"))
    ok(cli("check", idx))
    assert (idx / "ann.faiss").exists() and finds_itself(idx, images)


# -- 5. keypoints --------------------------------------------------------------------------
@pytest.fixture
def keypoint_idx(tmp_path, images) -> Path:
    idx = tmp_path / "kidx"
    ok(cli("index", images, "--index", idx, "-e", "phash", "--keypoints", "sift", "-q"))
    return idx


@pytest.mark.parametrize("column, value", [
    ("xy", b"\x01\x02\x03\x04\x05"),  # not whole (x, y) pairs
    ("descriptors", b"\x00" * 130),  # not whole 128-byte descriptors
    ("xy", "text, not a blob"),
])
def test_damaged_keypoints_are_reported_skipped_by_verify_and_repaired(keypoint_idx, images, column, value):
    idx = keypoint_idx
    db = sqlite3.connect(idx / "catalog.sqlite")
    with db:
        (row,) = db.execute("SELECT row FROM files WHERE path LIKE '%img0001.jpg'").fetchone()
        db.execute(f"UPDATE keypoints SET {column}=? WHERE row=?", (value, row))
    db.close()
    out = cli("check", idx)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "keypoints" in out.stderr, out.stderr

    def verified() -> dict:
        result = ok(cli("search", images / "img0001.jpg", "--index", idx, "--verify", "-k", "1", "--json"))
        return json.loads(result.stdout)["hits"][0]

    hit = verified()  # the damaged entry counts as no keypoints
    assert hit["path"].endswith("img0001.jpg") and hit["inliers"] == 0
    assert "forgot 1 file " in repaired(idx)
    again = json.loads(ok(cli("index", images, "--index", idx, "--json")).stdout)
    assert again["added"] == 1
    ok(cli("check", idx))
    hit = verified()
    assert hit["path"].endswith("img0001.jpg") and hit["inliers"] > 0


# -- 6. check --repair on a sound index -------------------------------------------------------
def test_repair_of_a_sound_index_does_nothing(idx, images):
    before = {p.name: p.read_bytes() for p in idx.iterdir() if p.name != "lock"}
    out = ok(cli("check", "--repair", idx))
    assert "nothing to repair" in out.stdout and out.stdout.strip().endswith(": ok")
    assert {p.name: p.read_bytes() for p in idx.iterdir() if p.name in before} == before
    assert finds_itself(idx, images)


def test_check_notices_indexed_files_missing_from_disk(tmp_path):
    from lookalike import Index

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(DEMO.glob("*.jpg"))[:4]:
        shutil.copy(p, photos / p.name)
    with Index.create(tmp_path / "idx", "phash") as ix:
        ix.add(photos, jobs=1)
        assert ix.check() == [] and ix.missing_files() == []
        gone = sorted(photos.iterdir())[0]
        gone.rename(tmp_path / gone.name)  # moved out of the root behind the index's back
        assert ix.missing_files() == [str(gone)]
        [problem] = ix.check()
        assert problem.startswith(f"1 indexed file(s) no longer exist on disk ({gone})")
        assert "`lookalike index` on their folder forgets them" in problem
        ix.add(photos, jobs=1)  # as the message says
        assert ix.check() == [] and len(ix) == 3
