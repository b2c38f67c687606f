import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import DuplicateGroup, ExtractorMismatch, Index, Member
from lookalike.actions import read_log
from lookalike.duplicates import DEFAULT_THRESHOLDS, group_pairs, keeper_rank, plan_actions

from .conftest import DEMO, run_cli

run = run_cli


def tree_state(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: file content hash and mtime, or symlink target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p)] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def _resized(src: Path, dst: Path, scale: float = 0.5, quality: int = 85) -> None:
    img = Image.open(src).convert("RGB")
    img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS).save(dst, quality=quality)


def _recompressed(src: Path, dst: Path, quality: int = 30) -> None:
    Image.open(src).convert("RGB").save(dst, quality=quality)


def _rotated(src: Path, dst: Path, degrees: float) -> None:
    img = Image.open(src).convert("RGB")
    img.rotate(degrees, resample=Image.BICUBIC).resize((img.width * 3 // 4, img.height * 3 // 4)).save(dst, quality=80)


def planted(folder: Path, rotations: bool = True) -> list[set[str]]:
    """Demo photos plus edited copies of three of them; returns the expected groups."""
    folder.mkdir(parents=True)
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, folder / p.name)
    f = lambda name: str(folder / name)  # noqa: E731
    _resized(DEMO / "cat.jpg", folder / "cat_small.jpg")
    _recompressed(DEMO / "cat.jpg", folder / "cat_q30.jpg")
    _resized(DEMO / "coffee.jpg", folder / "coffee_small.jpg", 0.6, 90)
    groups = [{f("cat.jpg"), f("cat_small.jpg"), f("cat_q30.jpg")},
              {f("coffee.jpg"), f("coffee_small.jpg")}]
    if rotations:
        _rotated(DEMO / "cat.jpg", folder / "cat_rot3.jpg", 3)
        _rotated(DEMO / "rocket.jpg", folder / "rocket_rot4.jpg", -4)
        _recompressed(DEMO / "rocket.jpg", folder / "rocket_q40.jpg", 40)
        groups[0].add(f("cat_rot3.jpg"))
        groups.append({f("rocket.jpg"), f("rocket_rot4.jpg"), f("rocket_q40.jpg")})
    else:  # hashes: exact byte copies and near copies
        shutil.copy(DEMO / "rocket.jpg", folder / "rocket_copy.jpg")
        _recompressed(DEMO / "rocket.jpg", folder / "rocket_q40.jpg", 40)
        groups.append({f("rocket.jpg"), f("rocket_copy.jpg"), f("rocket_q40.jpg")})
    return groups


@pytest.fixture
def cnn_dups(tmp_path):
    folder = tmp_path / "photos"
    expected = planted(folder)
    with Index.create(tmp_path / "idx", extractor="cnn") as ix:
        ix.add(folder, jobs=1)
    return tmp_path / "idx", folder, expected


def test_cnn_finds_exactly_the_planted_groups(cnn_dups):
    idx, folder, expected = cnn_dups
    with Index.open(idx) as ix:
        groups = ix.duplicates(level="edited")
    assert sorted(map(sorted, ({m.path for m in g.members} for g in groups))) == sorted(map(sorted, expected))
    for g in groups:
        assert isinstance(g, DuplicateGroup) and all(isinstance(m, Member) for m in g.members)
        assert g.members[0] is g.keeper and g.keeper.score == 1.0
        # keeper: the original (largest resolution)
        assert os.path.basename(g.keeper.path) in ("cat.jpg", "coffee.jpg", "rocket.jpg")
        assert all(m.width and m.height and m.size for m in g.members)
        assert all(DEFAULT_THRESHOLDS["cnn"] <= m.score <= 1.0 for m in g.members)
        assert [m.score for m in g.others] == sorted((m.score for m in g.others), reverse=True)


def test_phash_finds_exact_and_near_copies(tmp_path):
    folder = tmp_path / "photos"
    expected = planted(folder, rotations=False)
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(folder, jobs=1)
        groups = ix.duplicates(level="edited")
    assert sorted(map(sorted, ({m.path for m in g.members} for g in groups))) == sorted(map(sorted, expected))


def test_keeper_rank_orders_by_resolution_size_age_then_path():
    area, size, mtime = np.array([100, 200, 200, 200, 200]), np.array([9, 5, 7, 7, 7]), np.array([0, 0, 3, 2, 2])
    rank = keeper_rank(area, size, mtime, ["e", "d", "c", "b", "a"])
    assert np.argsort(rank).tolist() == [4, 3, 2, 1, 0]
    assert np.argsort(keeper_rank(area, size, mtime)).tolist() == [3, 4, 2, 1, 0]  # no paths: node order


def test_the_keeper_is_the_one_keeper_rank_ranks_first(tmp_path):
    folder = tmp_path / "photos"
    planted(folder, rotations=False)
    # rocket.jpg and rocket_copy.jpg are the same bytes; with the same mtime only the path is left
    same = os.stat(folder / "rocket.jpg").st_mtime_ns
    os.utime(folder / "rocket_copy.jpg", ns=(same, same))
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(folder, jobs=1)
        groups = ix.duplicates(level="edited")
    assert len(groups) == 3
    for g in groups:
        ms = g.members
        rank = keeper_rank(np.array([m.width * m.height for m in ms]), np.array([m.size for m in ms]),
                           np.array([m.mtime_ns for m in ms]), [m.path for m in ms])
        assert ms[int(np.argmin(rank))] is g.keeper
    assert {os.path.basename(g.keeper.path) for g in groups} == {"cat.jpg", "coffee.jpg", "rocket.jpg"}


def test_threshold_override(cnn_dups):
    idx, _, _ = cnn_dups
    with Index.open(idx) as ix:
        assert ix.duplicates(threshold=1.01) == []
        assert len(ix.duplicates(threshold=-1.0, level="edited")) == 1  # everything joins one group


def test_anchor_check_breaks_chains():
    # a chain 0-1-2-3: neighbours alike (cos 37 deg = 0.80), two steps apart not (cos 74 deg = 0.28)
    angles = np.radians([0, 37, 74, 111])
    vec = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    sim = lambda i, js: vec[js] @ vec[i]  # noqa: E731
    a, b = np.array([0, 1, 2]), np.array([1, 2, 3])
    s = np.array([vec[i] @ vec[j] for i, j in zip(a, b)])
    rank = np.arange(4)
    members = lambda out: sorted(sorted(int(x) for x in m) for _, m, _ in out)  # noqa: E731
    # centre 1: 0 and 2 are within the threshold of it, 3 is not and has no partner left
    assert members(group_pairs(4, a, b, s, 0.75, rank, sim)) == [[0, 1, 2]]
    # anchored on the keeper 0: {0, 1}, then the rest regroups as {2, 3}
    assert members(group_pairs(4, a, b, s, 0.75, rank, sim, anchor="keeper")) == [[0, 1], [2, 3]]
    # no check: plain connected components chain everything
    assert members(group_pairs(4, a, b, s, 0.75, rank, sim, keeper_threshold=-np.inf)) == [[0, 1, 2, 3]]


def test_dry_run_changes_nothing(cnn_dups):
    idx, folder, _ = cnn_dups
    before = tree_state(folder.parent)
    for action in (["--move-to", folder.parent / "moved"], ["--symlink"], ["--delete"]):
        out = run("duplicates", "--index", idx, "--level", "edited", *action)
        assert "would" in out.stdout and "dry run" in out.stderr
    assert "cannot be undone" in out.stderr
    assert tree_state(folder.parent) == before
    assert not (folder.parent / "moved").exists()


def test_move_then_undo_restores_every_file(cnn_dups, tmp_path):
    idx, folder, expected = cnn_dups
    before = tree_state(folder)
    log = tmp_path / "undo.jsonl"
    out = run("duplicates", "--index", idx, "--level", "edited", "--move-to", tmp_path / "moved", "--yes", "--undo-log", log)
    assert "undo log" in out.stderr
    moved = read_log(str(log))[1]
    assert len(moved) == sum(len(g) - 1 for g in expected)
    for e in moved:
        assert not os.path.exists(e["path"]) and os.path.isfile(e["dest"])
        assert os.path.exists(e["keeper"])
    run("undo", log)
    assert tree_state(folder) == before


def test_symlink_then_undo(cnn_dups, tmp_path):
    idx, folder, _ = cnn_dups
    before = tree_state(folder)
    log = tmp_path / "undo.jsonl"
    run("duplicates", "--index", idx, "--level", "edited", "--symlink", "--yes", "--undo-log", log)
    entries = read_log(str(log))[1]
    assert entries and all(os.path.islink(e["path"]) and os.readlink(e["path"]) == e["keeper"] for e in entries)
    run("undo", log)
    assert tree_state(folder) == before


def test_files_outside_roots_and_changed_files_are_never_touched(tmp_path):
    folder, outside = tmp_path / "photos", tmp_path / "outside"
    outside.mkdir()
    planted(folder, rotations=False)
    _recompressed(DEMO / "brick.jpg", outside / "brick_q50.jpg", 50)
    os.symlink(outside / "brick_q50.jpg", folder / "brick_link.jpg")  # indexed, but really outside the root
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(folder, jobs=1)
    os.utime(folder / "coffee_small.jpg", ns=(1, 1))  # changed since indexed
    out_before = tree_state(outside)
    out = run("duplicates", "--index", tmp_path / "idx", "--delete", "--yes")
    assert tree_state(outside) == out_before
    assert "is a symlink" in out.stderr and "changed since indexed" in out.stderr
    assert (folder / "coffee_small.jpg").exists() and (folder / "brick_link.jpg").exists()
    assert not (folder / "rocket_q40.jpg").exists() and (folder / "rocket.jpg").exists()


def test_cross_set_reports_only_cross_pairs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for name in ("cat", "coffee", "rocket", "astronaut"):
        shutil.copy(DEMO / f"{name}.jpg", a / f"{name}.jpg")
    _recompressed(DEMO / "coffee.jpg", a / "coffee_q30.jpg")  # a duplicate inside A only
    _resized(DEMO / "cat.jpg", b / "cat_small.jpg")
    _recompressed(DEMO / "rocket.jpg", b / "rocket_q40.jpg", 40)
    shutil.copy(DEMO / "brick.jpg", b / "brick.jpg")
    with Index.create(tmp_path / "ia", extractor="cnn") as ia:
        ia.add(a, jobs=1)
        expected = sorted([sorted([str(a / "cat.jpg"), str(b / "cat_small.jpg")]),
                           sorted([str(a / "rocket.jpg"), str(b / "rocket_q40.jpg")])])
        from_folder = ia.duplicates(against=b)
        assert sorted(sorted(m.path for m in g.members) for g in from_folder) == expected
        for g in from_folder:
            assert {m.side for m in g.members} == {"index", "against"}
        assert not list(tmp_path.glob("b/*.npy")) and len(ia) == 5  # nothing written
        with Index.create(tmp_path / "ib", extractor="cnn") as ib:
            ib.add(b, jobs=1)
        from_index = ia.duplicates(against=tmp_path / "ib")
        assert sorted(sorted(m.path for m in g.members) for g in from_index) == expected
        with Index.create(tmp_path / "ic", extractor="phash") as ic:
            ic.add(b, jobs=1)
        with pytest.raises(ExtractorMismatch):
            ia.duplicates(against=tmp_path / "ic")
    out = run("duplicates", "--index", tmp_path / "ia", "--against", b, "--json")
    assert len(json.loads(out.stdout)["groups"]) == 2
    before = tree_state(tmp_path)
    refused = run("duplicates", "--index", tmp_path / "ia", "--against", b, "--delete", "--yes", check=False)
    assert refused.returncode == 2 and "only reports" in refused.stderr
    assert tree_state(tmp_path) == before


def test_reports_and_sheet(cnn_dups, tmp_path):
    idx, folder, expected = cnn_dups
    run("duplicates", "--index", idx, "--level", "edited", "--report", tmp_path / "r.html", "--sheet", tmp_path / "s.png")
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/jpeg;base64,") == sum(len(g) for g in expected)
    assert "keep" in page
    assert Image.open(tmp_path / "s.png").size[1] > 3 * 160
    run("duplicates", "--index", idx, "--level", "edited", "--report", tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == sum(len(g) for g in expected) and sum(r["role"] == "keep" for r in rows) == 3
    run("duplicates", "--index", idx, "--level", "edited", "--report", tmp_path / "r.json")
    assert len(json.loads((tmp_path / "r.json").read_text())["groups"]) == 3
    with Index.open(idx) as ix:
        acts = plan_actions(ix, ix.duplicates(level="edited"), "move", str(tmp_path / "m"))
    assert all(a.skip is None for a in acts)
