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
