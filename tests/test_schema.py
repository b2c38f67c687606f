"""Schema versions: newer indexes are refused in one line, older catalogs are migrated."""

import json
import sqlite3
import subprocess
import sys

from lookalike import Index
from lookalike.store.catalog import CATALOG_VERSION

from .conftest import make_pattern_images


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def small_index(tmp_path):
    make_pattern_images(tmp_path / "imgs", 3)
    idx = tmp_path / "idx"
    with Index.create(idx, "phash") as ix:
        ix.add(tmp_path / "imgs", jobs=1)
    return idx


def refused(out) -> str:
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_manifest_with_fields_of_a_newer_version_is_refused_and_kept(tmp_path):
    idx = small_index(tmp_path)
    data = json.loads((idx / "manifest.json").read_text())
    data["sharding"] = {"from": "the future"}
    (idx / "manifest.json").write_text(json.dumps(data))
    before = (idx / "manifest.json").read_bytes()
    line = refused(cli("index", tmp_path / "imgs", "--index", idx))
    assert "newer lookalike" in line and "sharding" in line
    assert (idx / "manifest.json").read_bytes() == before  # nothing dropped or rewritten


def test_a_newer_catalog_is_refused_before_anything_changes(tmp_path):
    idx = small_index(tmp_path)
    with sqlite3.connect(idx / "catalog.sqlite") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='catalog_version'")
    line = refused(cli("search", tmp_path / "imgs" / "img0000.jpg", "--index", idx))
    assert "catalog version 99" in line and "upgrade lookalike" in line
    with sqlite3.connect(idx / "catalog.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key='catalog_version'").fetchone()[0] == "99"


def test_a_version_1_catalog_is_migrated(tmp_path):
    idx = small_index(tmp_path)
    with sqlite3.connect(idx / "catalog.sqlite") as db:  # as lookalike 0.1 left it
        db.execute("DROP TABLE root_identity")
        db.execute("UPDATE meta SET value='1' WHERE key='catalog_version'")
    with Index.open(idx) as ix:
        assert ix.store.catalog.version() == CATALOG_VERSION == 2
        assert [r.known for r in ix.store.catalog.root_records()] == [False]  # until indexed again
        ix.add(tmp_path / "imgs", jobs=1)
        assert [r.known for r in ix.store.catalog.root_records()] == [True]


# -- the content hash: BLAKE3 for new indexes, BLAKE2b kept by older ones --------------
def _hash_of(idx, name):
    with sqlite3.connect(idx / "catalog.sqlite") as db:
        return db.execute("SELECT content_hash FROM files WHERE path LIKE ?", (f"%{name}",)).fetchone()[0]


def test_a_new_index_names_its_content_hash_and_records_blake3(tmp_path):
    import blake3

    idx = small_index(tmp_path)
    assert json.loads((idx / "manifest.json").read_text())["content_hash"] == "blake3-128"
    data = (tmp_path / "imgs" / "img0000.jpg").read_bytes()
    assert _hash_of(idx, "img0000.jpg") == blake3.blake3(data).hexdigest(16)


def test_an_index_made_before_the_manifest_named_a_hash_keeps_blake2b(tmp_path):
    """Older manifests have no content_hash: their catalogs hold BLAKE2b. The index keeps
    it, so a renamed file is still recognised (its vector reused, not re-embedded) and an
    exact copy of an indexed file still groups with it."""
    import hashlib
    import shutil

    make_pattern_images(tmp_path / "imgs", 3)
    idx = tmp_path / "idx"
    with Index.create(idx, "phash") as ix:
        manifest = json.loads((idx / "manifest.json").read_text())
        del manifest["content_hash"]  # as an older lookalike wrote it
        (idx / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(idx) as ix:
        assert ix.store.manifest.content_hash == "blake2b-128"
        ix.add(tmp_path / "imgs", jobs=1)
    data = (tmp_path / "imgs" / "img0001.jpg").read_bytes()
    assert _hash_of(idx, "img0001.jpg") == hashlib.blake2b(data, digest_size=16).hexdigest()

    (tmp_path / "imgs" / "img0001.jpg").rename(tmp_path / "imgs" / "renamed.jpg")
    shutil.copy(tmp_path / "imgs" / "img0002.jpg", tmp_path / "imgs" / "copy.jpg")
    with Index.open(idx) as ix:
        report = ix.add(tmp_path / "imgs", jobs=2)
        assert (report.renamed, report.reused, report.added) == (1, 1, 0)
        assert ix.store.manifest.content_hash == "blake2b-128"
    assert _hash_of(idx, "copy.jpg") == _hash_of(idx, "img0002.jpg")
