"""Duplicate levels (exact, near, edited), low-information images, keeper rules, the
folder command, the JSON mapping, and the index after an action (issue 18)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike import Index, levels
from lookalike.duplicates import DEFAULT_THRESHOLDS, keeper_rank
from lookalike.errors import UsageError

from .conftest import DEMO, demo_folder, run_cli

run = run_cli


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _save(img: Image.Image, path: Path, quality: int = 90) -> Path:
    img.convert("RGB").save(path, quality=quality)
    return path


# -- the pixel checks ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.open(DEMO / "cat.jpg").convert("RGB")


def _t(img: Image.Image) -> levels.Thumb:
    return levels.thumb(np.asarray(img.convert("RGB")))


def test_near_pairs_are_reencoded_or_resized_copies(cat, tmp_path):
    small = cat.resize((cat.width // 3, cat.height // 3), Image.LANCZOS)
    q15 = Image.open(_save(cat, tmp_path / "q15.jpg", quality=15))
    brighter = cat.point(lambda v: min(255, int(v * 1.04)))
    for copy in (small, q15, brighter):
        assert levels.near_pair(_t(cat), _t(copy))


def test_crops_mirrors_rotations_captions_and_grey_are_not_near(cat):
    w, h = cat.size
    captioned = cat.copy()
    ImageDraw.Draw(captioned).rectangle((0, h - h // 8, w, h), fill=(250, 250, 250))
    edits = {
        "crop": cat.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        "mirror": cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "rotation": cat.rotate(8, resample=Image.Resampling.BILINEAR),
        "quarter turn": cat.transpose(Image.Transpose.ROTATE_90),
        "caption": captioned,
        "grey": cat.convert("L"),
    }
    for name, edited in edits.items():
        assert not levels.near_pair(_t(cat), _t(edited)), name


def test_two_shots_of_a_burst_are_not_near(cat):
    """The same scene, something in it moved a little: a burst, not a duplicate."""
    scene = Image.open(DEMO / "brick.jpg").convert("RGB").resize(cat.size)
    thing = cat.resize((cat.width // 6, cat.height // 6))
    first, second = scene.copy(), scene.copy()
    first.paste(thing, (cat.width // 3, cat.height // 3))
    second.paste(thing, (cat.width // 3 + cat.width // 12, cat.height // 3))
    assert not levels.near_pair(_t(first), _t(second))
    assert levels.near_pair(_t(first), _t(first.resize((first.width // 2, first.height // 2))))


def test_low_information_images(cat):
    flat = Image.new("RGB", (300, 200), (30, 30, 30))
    noisy_flat = Image.fromarray(np.clip(np.random.default_rng(0).normal(200, 2, (200, 300, 3)), 0, 255).astype(np.uint8))
    speck = Image.new("RGB", (300, 300), "white")
    ImageDraw.Draw(speck).ellipse((140, 140, 150, 150), fill="black")  # a dot on white: near-uniform
    assert all(levels.low_information(_t(x)) for x in (flat, noisy_flat, speck))
    assert not levels.low_information(_t(cat))


def test_unknown_level_and_keeper_rule_are_one_clear_error():
    with pytest.raises(UsageError, match="exact, near, edited"):
        levels.check_level("similar")
    with pytest.raises(UsageError, match="largest, oldest, newest, shortest-path or in:FOLDER"):
        keeper_rank(np.ones(2), np.ones(2), np.ones(2), ["a", "b"], "biggest")


def test_keeper_rules():
    area, size = np.array([100, 100, 50]), np.array([10, 20, 30])
    mtime = np.array([3, 1, 2])
    paths = ["/p/long/name/a.jpg", "/p/b.jpg", "/ref/c.jpg"]
    first = lambda rule: int(np.argmin(keeper_rank(area, size, mtime, paths, rule)))  # noqa: E731
    assert first("largest") == 1  # the same resolution as 0, larger file
    assert first("oldest") == 1
    assert first("newest") == 0
    assert first("shortest-path") == 1
    assert first("in:/ref") == 2  # smaller, but in the reference folder


# -- levels on an index ---------------------------------------------------------------

@pytest.fixture
def collection(tmp_path):
    """Demo photos, a byte copy, near copies, edited copies, and two different flat images."""
    d = demo_folder(tmp_path / "photos")
    cat = Image.open(DEMO / "cat.jpg").convert("RGB")
    shutil.copy(DEMO / "cat.jpg", d / "cat_copy.jpg")
    _save(cat.resize((cat.width // 2, cat.height // 2), Image.LANCZOS), d / "cat_half.jpg")
    _save(cat, d / "cat_q25.jpg", quality=25)
    _save(cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), d / "cat_mirror.jpg")
    _save(cat.crop((0, 0, cat.width * 4 // 5, cat.height * 4 // 5)), d / "cat_crop.jpg")
    _save(Image.new("RGB", (320, 240), (20, 20, 20)), d / "dark.jpg")
    _save(Image.new("RGB", (320, 240), (28, 28, 28)), d / "dark2.jpg")
    shutil.copy(d / "dark.jpg", d / "dark_copy.jpg")
    with Index.create(tmp_path / "idx", extractor="cnn") as ix:
        ix.add(d, jobs=1)
    return tmp_path / "idx", d


def _names(groups) -> list[list[str]]:
    return sorted(sorted(os.path.basename(m.path) for m in g.members) for g in groups)


def test_levels_on_an_index(collection):
    idx, _ = collection
    with Index.open(idx) as ix:
        exact = ix.duplicates(level="exact")
        near = ix.duplicates()  # the default level
        edited = ix.duplicates(level="edited")
    assert _names(exact) == [["cat.jpg", "cat_copy.jpg"], ["dark.jpg", "dark_copy.jpg"]]
    assert all(g.level == "exact" and all(m.score == 1.0 for m in g.members) for g in exact)
    assert _names(near) == [["cat.jpg", "cat_copy.jpg", "cat_half.jpg", "cat_q25.jpg"]]
    assert near[0].level == "near"
    [cats] = [g for g in _names(edited) if "cat.jpg" in g]
    assert {"cat_mirror.jpg", "cat_crop.jpg", "cat_half.jpg"} <= set(cats)
    # flat images are grouped only when byte-identical
    assert not any("dark.jpg" in g or "dark2.jpg" in g for g in _names(near) + _names(edited))


def test_cli_json_has_the_level_totals_and_a_mapping(collection):
    idx, folder = collection
    out = run("duplicates", "--index", idx, "--json")
    data = json.loads(out.stdout)
    assert data["level"] == "near" and data["keep"] == "largest"
    [g] = data["groups"]
    assert g["level"] == "near"
    members = [m["path"] for m in g["members"]]
    assert data["duplicates"] == 3 and data["duplicate_bytes"] == sum(m["size"] for m in g["members"][1:])
    for p in members:
        others = {o["path"] for o in data["mapping"][p]}
        assert others == set(members) - {p}
    text = run("duplicates", "--index", idx)
    assert "group 1: 4 files (near)" in text.stdout
    assert "1 groups, 3 duplicates" in text.stderr and "level near" in text.stderr


def test_cli_refuses_an_unknown_keeper_rule_in_one_line(collection):
    idx, _ = collection
    out = run("duplicates", "--index", idx, "--keep", "biggest", check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "unknown keeper rule 'biggest'" in out.stderr


def test_duplicates_of_a_folder_indexes_it_in_the_cache(tmp_path, monkeypatch):
    folder = demo_folder(tmp_path / "pics")
    shutil.copy(DEMO / "cat.jpg", folder / "cat again.jpg")
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    out = run("duplicates", folder, "--level", "exact")
    assert "index: " + str(tmp_path / "cache" / "indexes") in out.stderr and "(new;" in out.stderr
    assert "cat again.jpg" in out.stdout and "1 groups, 1 duplicates" in out.stderr
    again = run("duplicates", folder, "--level", "exact")
    assert "(updated;" in again.stderr and again.stdout == out.stdout
    missing = run("duplicates", tmp_path / "nope", check=False)
    assert missing.returncode != 0 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr


def test_after_a_move_the_index_forgets_the_files_and_undo_brings_them_back(collection, tmp_path):
    idx, folder = collection
    out = run("duplicates", "--index", idx, "--move-to", tmp_path / "moved", "--yes", "--undo-log", tmp_path / "u.jsonl")
    assert "no longer lists the files acted on" in out.stderr
    with Index.open(idx) as ix:
        known = {os.path.basename(r.path) for r in ix.store.catalog.records(status="ok")}
        assert not {"cat_copy.jpg", "cat_half.jpg", "cat_q25.jpg"} & known
        assert ix.missing_files() == [] and ix.duplicates() == []
    assert run("check", idx).returncode == 0
    back = run("undo", tmp_path / "u.jsonl")
    assert "indexed again: 3 files" in back.stderr
    with Index.open(idx) as ix:
        assert _names(ix.duplicates()) == [["cat.jpg", "cat_copy.jpg", "cat_half.jpg", "cat_q25.jpg"]]
        assert ix.store.catalog.roots() == [str(folder)]  # indexed again through their folder
    # and once more: files indexed again act and come back like the others
    run("duplicates", "--index", idx, "--move-to", tmp_path / "moved2", "--yes", "--undo-log", tmp_path / "u2.jsonl")
    assert not (folder / "cat_q25.jpg").exists()
    assert run("undo", tmp_path / "u2.jsonl").returncode == 0
    assert all((folder / n).exists() for n in ("cat_copy.jpg", "cat_half.jpg", "cat_q25.jpg"))


@pytest.mark.parametrize("keypoints", ["sift", "none"])
def test_edited_pairs_under_the_threshold_count_when_their_keypoints_match(tmp_path, keypoints):
    photos = demo_folder(tmp_path / "photos")
    rocket = Image.open(DEMO / "rocket.jpg").convert("RGB").rotate(25, resample=Image.BICUBIC, expand=True)
    w, h = rocket.size
    _save(rocket.crop((int(w * 0.15), int(h * 0.1), int(w * 0.8), int(h * 0.85))), photos / "rocket_edit.jpg", 85)
    with Index.create(tmp_path / "idx", extractor="cnn", keypoints=keypoints) as ix:
        ix.add(photos, jobs=1)
        [self_hit, original] = ix.search(photos / "rocket_edit.jpg", k=2, augment=False)
        assert original.path.endswith("rocket.jpg") and original.score < DEFAULT_THRESHOLDS["cnn"]
        groups = _names(ix.duplicates(level="edited"))
    if keypoints == "sift":
        assert ["rocket.jpg", "rocket_edit.jpg"] in groups
    else:
        assert not any("rocket_edit.jpg" in g for g in groups)


def test_duplicates_search_neighbours_with_a_short_hnsw_list(tmp_path, monkeypatch):
    from lookalike import ann as ann_mod
    from lookalike.grouping import DUPLICATES_EF

    photos = demo_folder(tmp_path / "photos")
    shutil.copy(DEMO / "cat.jpg", photos / "cat_copy.jpg")
    seen = []
    search_rows = ann_mod.AnnIndex.search_rows

    def spy(self, *args, **kwargs):
        seen.append(self.ef_search)
        return search_rows(self, *args, **kwargs)

    monkeypatch.setattr(ann_mod.AnnIndex, "search_rows", spy)
    with Index.create(tmp_path / "idx", extractor="phash", ann="hnsw") as ix:
        ix.add(photos, jobs=1)
        structure = ix.vector_search()
        assert structure.kind == "hnsw" and structure.ef_search == 512
        assert _names(ix.duplicates(level="exact")) == [["cat.jpg", "cat_copy.jpg"]]
        seen.clear()
        ix.duplicates(level="edited")
        assert seen and set(seen) == {DUPLICATES_EF}
        assert ix.vector_search().ef_search == 512  # searches keep theirs
