"""Indexed folders ("roots"): what a walk enters, and a root's identity recorded at index time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from lookalike import Index, roots
from lookalike.sources import SKIP_MARKER, walk

from .conftest import DEMO, make_pattern_images


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def _names(folder) -> list[str]:
    return sorted(os.path.relpath(e.path, folder) for e in walk(folder))


# -- walk ---------------------------------------------------------------------------------------
def test_an_index_folder_inside_the_indexed_folder_is_not_indexed(tmp_path, photos):
    """`lookalike index PHOTOS --index PHOTOS/myindex`: the index's trash (originals kept by
    `duplicates --symlink`) must not come back as images of the next run."""
    idx = photos / "myindex"
    out = _cli("index", photos, "--index", idx, "-e", "phash", "-j", "1", "-q", "--json")
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)["added"]
    assert first == 8
    trash = idx / "trash"
    trash.mkdir()
    shutil.copy(DEMO / "cat.jpg", trash / "cat.jpg")  # as duplicates --symlink leaves it
    make_pattern_images(trash / "sub", 2)
    out = _cli("index", photos, "--index", idx, "-j", "1", "-q", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["added"] == 0 and report["seen"] == first, report
    with Index.open(idx) as ix:
        paths = list(ix.live().paths)
    assert len(paths) == first and not any(p.startswith(str(idx)) for p in paths), paths


def test_walk_skips_index_folders_and_marked_folders(tmp_path):
    root = tmp_path / "root"
    make_pattern_images(root, 1)
    make_pattern_images(root / "index", 1)
    (root / "index" / "manifest.json").write_text("{}")
    (root / "index" / "catalog.sqlite").write_bytes(b"")
    make_pattern_images(root / "index" / "trash", 1)
    make_pattern_images(root / "moved", 1)
    (root / "moved" / SKIP_MARKER).write_text("")
    make_pattern_images(root / "moved" / "deeper", 1)
    make_pattern_images(root / "only-manifest", 1)  # a manifest alone is no index: walked
    (root / "only-manifest" / "manifest.json").write_text("{}")
    assert _names(root) == ["img0000.jpg", os.path.join("only-manifest", "img0000.jpg")]
    assert [os.path.relpath(e.path, root) for e in walk(root, include_hidden=True)] == _names(root)
    # a folder named on purpose is walked whatever it holds
    assert _names(root / "moved") == [os.path.join("deeper", "img0000.jpg"), "img0000.jpg"]


# -- recorded roots ---------------------------------------------------------------------------------
def test_a_root_is_inside_only_while_it_is_the_folder_that_was_indexed(tmp_path):
    photos, other = tmp_path / "photos", tmp_path / "other"
    photos.mkdir()
    other.mkdir()
    rec = roots.identify(str(photos))
    assert rec.known and rec.base == str(photos.resolve())
    file = str(photos / "a.jpg")
    assert roots.root_of(file, [rec]) == rec
    assert roots.root_of(str(photos / ".." / "x.jpg"), [rec]) is None  # not normalised: refused
    assert roots.real_is_inside(file, [rec])
    assert not roots.real_is_inside(str(other / "a.jpg"), [rec])
    os.rename(photos, tmp_path / "before")
    photos.symlink_to(other, target_is_directory=True)
    assert not roots.still_there(rec)
    assert not roots.real_is_inside(os.path.realpath(file), [rec])
    photos.unlink()
    os.rename(other, photos)  # another folder under the same name
    assert not roots.still_there(rec) and not roots.real_is_inside(file, [rec])
    older = roots.Root(str(photos))  # recorded by an older lookalike: its path as indexed
    assert not older.known and roots.real_is_inside(file, [older])


def test_fd_real_path_is_where_the_open_file_is(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    fd = os.open(tmp_path / "link" / "a.jpg", os.O_RDONLY)
    try:
        assert roots.fd_real_path(fd, str(tmp_path / "link" / "a.jpg")) == str((tmp_path / "real" / "a.jpg").resolve())
    finally:
        os.close(fd)
