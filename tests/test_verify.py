"""Copy detection: stored keypoints, geometric verification, query views, --explain."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from lookalike import Index
from lookalike import query
from lookalike import verify as local
from lookalike.query import query_views

from .conftest import DEMO


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """The bundled demo images, indexed with the default configuration (cnn + SIFT keypoints)."""
    root = tmp_path_factory.mktemp("verify")
    folder = root / "images"
    folder.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, folder / p.name)
    index = Index.create(root / "idx")
    index.add(folder, jobs=1)
    yield index, folder, root
    index.close()


def _rgb(path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def edited_copies(original: Image.Image, other: Image.Image) -> dict[str, Image.Image]:
    w, h = original.size
    framed = ImageOps.expand(original, border=(w // 8, h // 8, w // 8, h // 3), fill=(240, 240, 240))
    ImageDraw.Draw(framed).text((10, framed.height - h // 5), "a caption under the picture", fill=(0, 0, 0))
    pip = other.resize((w, h))
    pip.paste(original.resize((w // 2, h // 2)), (w // 3, h // 4))
    return {
        "rot90": original.rotate(90, expand=True),
        "rot180+mirror": ImageOps.mirror(original.rotate(180)),
        "crop": original.crop((w // 10, h // 5, w * 7 // 10, h * 4 // 5)),
        "framed": framed,
        "picture-in-picture": pip,
        "rot10": original.rotate(10, expand=True, fillcolor=(0, 0, 0)),
    }


def test_keypoints_are_stored_at_index_time(gallery):
    index, folder, _ = gallery
    assert index.store.manifest.local == local.DEFAULTS
    n = len(list(folder.glob("*.jpg")))
    assert index.store.catalog.n_keypoint_rows() == n
    feats = index.candidate_features([str(folder / "cat.jpg")])[0]
    assert feats is not None and 50 <= len(feats) <= local.DEFAULTS["max_keypoints"]
    assert feats.descriptors.dtype == np.uint8 and feats.xy.dtype == np.float32
    width, height = Image.open(folder / "cat.jpg").size
    assert (feats.width, feats.height) == (width, height)
    assert feats.xy[:, 0].max() <= width and feats.xy[:, 1].max() <= height


@pytest.mark.parametrize("edit", ["rot90", "rot180+mirror", "crop", "framed", "picture-in-picture", "rot10"])
def test_edited_copy_is_found_first_and_verified(gallery, edit, tmp_path):
    index, folder, _ = gallery
    original = _rgb(folder / "cat.jpg")
    query = edited_copies(original, _rgb(folder / "brick.jpg"))[edit]
    hits = index.search(np.asarray(query), k=5, verify=True)
    assert hits[0].path == str(folder / "cat.jpg"), [(h.path, h.inliers) for h in hits]
    assert hits[0].inliers >= local.MIN_INLIERS
    assert all(h.inliers < hits[0].inliers for h in hits[1:])
    assert hits[0].region is not None and len(hits[0].region) == 4


def test_unrelated_pair_has_no_model(gallery):
    index, folder, _ = gallery
    _, match = index.verify_pair(folder / "coffee.jpg", str(folder / "rocket.jpg"))
    assert match.inliers == 0 and match.homography is None
    _, same = index.verify_pair(folder / "rocket.jpg", str(folder / "rocket.jpg"))
    assert same.inliers > 100 and same.homography is not None
    assert np.allclose(same.homography / same.homography[2, 2], np.eye(3), atol=0.05)


def test_the_candidates_keypoints_are_read_not_recomputed(gallery, monkeypatch):
    index, folder, _ = gallery
    calls = []
    real = local.detect
    counted = lambda *a, **kw: calls.append(1) or real(*a, **kw)  # noqa: E731
    monkeypatch.setattr(local, "detect", counted)
    monkeypatch.setattr(query, "detect", counted)  # the query pipeline measures the query's keypoints
    index.search(folder / "camera.jpg", k=5, verify=True)
    assert 1 <= len(calls) <= 2  # the query (and its mirror image), never the candidates


def test_augment_finds_a_quarter_turn_without_verification(gallery):
    index, folder, _ = gallery
    turned = np.rot90(np.asarray(_rgb(folder / "hubble.jpg")), 1)
    hits = index.search(turned, k=3, augment=True)
    assert hits[0].path == str(folder / "hubble.jpg")
    assert hits[0].inliers is None  # not verified
    assert hits[0].score > 0.95  # the turned view met the stored vector


def test_query_views_cover_turns_and_regions_of_large_enough_queries():
    big = np.arange(400 * 300 * 3, dtype=np.uint32).astype(np.uint8).reshape(400, 300, 3)
    views = query_views(big)
    assert len(views) == 9
    assert any(v.shape == (300, 400, 3) and np.array_equal(v, np.rot90(big)) for v in views)
    assert any(np.array_equal(v, big[:240, :180]) for v in views)  # a 60% corner region
    assert all(v.flags["C_CONTIGUOUS"] for v in views)
    small = big[:100, :150]  # 60% regions would be 60 px high: too small to search with
    assert [v.shape[:2] for v in query_views(small)] == [(100, 150), (150, 100), (100, 150), (150, 100)]


def test_regional_vectors_find_a_picture_pasted_into_a_page():
    from lookalike.extractors.cnn import CnnExtractor

    cnn = CnnExtractor()
    picture = np.asarray(Image.open(DEMO / "cat.jpg").convert("RGB").resize((200, 150)))
    page = np.full((600, 800, 3), 235, np.uint8)
    page[330:480, 520:720] = picture  # lower right, a quarter of the page's width
    regions = cnn.embed_regions(page, 112)
    alone = cnn.embed_prepared([cnn.prepare(picture)])[0]
    whole = cnn.embed_prepared([cnn.prepare(page)])[0]
    assert len(regions) > 10
    assert float((regions @ alone).max()) > float(whole @ alone) + 0.1
    assert len(cnn.embed_regions(page[:150, :200], 112)) == 0  # too small for any region


def test_verify_needs_stored_keypoints(tmp_path):
    index = Index.create(tmp_path / "idx", "phash")
    assert index.store.manifest.local is None
    index.add(DEMO, jobs=1)
    with pytest.raises(ValueError, match="no keypoints"):
        index.search(DEMO / "cat.jpg", k=3, verify=True)
    index.close()


def test_features_blob_round_trip():
    rng = np.random.default_rng(0)
    f = local.Features(rng.random((7, 2), dtype=np.float32) * 100, rng.integers(0, 255, (7, 128), dtype=np.uint8), 640, 480)
    g = local.Features.from_blobs(*f.to_blobs(), 640, 480)
    assert np.array_equal(f.xy, g.xy) and np.array_equal(f.descriptors, g.descriptors)


def test_cli_verify_json_and_explain(gallery, tmp_path):
    index, folder, root = gallery
    query = tmp_path / "q.jpg"
    _rgb(folder / "rocket.jpg").rotate(270, expand=True).save(query, quality=80)
    out = tmp_path / "explain.png"
    r = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "search", str(query), "--index", str(root / "idx"), "-k", "3",
         "--verify", "--json", "--explain", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.splitlines()[0])
    top = obj["hits"][0]
    assert top["path"] == str(folder / "rocket.jpg") and top["inliers"] >= local.MIN_INLIERS
    assert len(top["region"]) == 4
    assert "inliers" in r.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.height > 400
        # the drawn outline is red somewhere in the right half
        a = np.asarray(im.convert("RGB"))
        right = a[:, a.shape[1] // 2 :]
        assert ((right[..., 0] > 200) & (right[..., 1] < 90) & (right[..., 2] < 90)).sum() > 100


def test_cli_explain_needs_verify(gallery):
    _, folder, root = gallery
    r = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "search", str(folder / "cat.jpg"), "--index", str(root / "idx"),
         "--explain", "x.png"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2 and "--explain needs --verify" in r.stderr


def test_all_hits_with_verification_verifies_only_the_candidates(gallery):
    index, folder, _ = gallery
    hits = index.search(folder / "cat.jpg", k=None, verify=3)
    assert len(hits) == len(index)
    assert hits[0].path == str(folder / "cat.jpg") and hits[0].inliers > 0
    assert all(h.inliers is not None for h in hits[:3]) and all(h.inliers is None for h in hits[3:])


def _ratio_test_by_loops(query: np.ndarray, candidate: np.ndarray) -> set[tuple[int, int]]:
    """Lowe's ratio test written out point by point, then one query point per candidate point."""
    best: dict[int, tuple[float, int]] = {}
    for i, q in enumerate(query):
        dist = np.linalg.norm(candidate - q, axis=1)
        first, second = np.argsort(dist, kind="stable")[:2]
        if dist[first] < local.RATIO * dist[second] and (first not in best or dist[first] < best[first][0]):
            best[int(first)] = (float(dist[first]), i)
    return {(i, c) for c, (_, i) in best.items()}


def test_tentative_matches_agree_with_a_point_by_point_ratio_test():
    rng = np.random.default_rng(3)
    candidate = rng.integers(0, 256, (300, 128)).astype(np.uint8)
    query = np.concatenate([  # 120 noisy copies of candidate points, 80 unrelated points
        np.clip(candidate[rng.permutation(300)[:120]] + rng.integers(-6, 7, (120, 128)), 0, 255),
        rng.integers(0, 256, (80, 128)),
    ]).astype(np.uint8)
    q, c = local.root_sift(query), local.root_sift(candidate)
    pairs = local.tentative_matches(q, c)
    assert {tuple(map(int, p)) for p in pairs} == _ratio_test_by_loops(q, c)
    assert len(pairs) >= 100 and len(np.unique(pairs[:, 1])) == len(pairs)


def test_regions_nominate_a_pasted_picture_for_verification(gallery):
    index, folder, _ = gallery
    page = _rgb(folder / "brick.jpg").resize((900, 700))
    cat = _rgb(folder / "cat.jpg")
    page.paste(cat.resize((225, 225 * cat.height // cat.width)), (560, 380))  # a quarter of the width
    query = np.asarray(page)
    by_vector = index.search(query, k=2, augment=True)
    assert by_vector[0].path == str(folder / "brick.jpg")  # the page itself is the best vector match
    hits = index.search(query, k=None, verify=1)  # one vector candidate; regions nominate one more
    assert [h.path for h in hits[:2]] == [str(folder / "brick.jpg"), str(folder / "cat.jpg")]
    assert hits[1].inliers >= local.MIN_INLIERS
    # nominated files that do not verify are not inserted: everything after the two verified is unchecked
    assert all(h.inliers is None for h in hits[2:])
    assert sorted(h.path for h in hits) == sorted(str(p) for p in folder.glob("*.jpg"))


def test_mirrored_keypoints_are_those_the_mirror_image_gives():
    pixels = np.asarray(_rgb(DEMO / "cat.jpg"))
    spec = local.settings("sift")
    plain, measured = local.detect(pixels, spec), local.detect_mirrored(pixels, spec)
    flipped = local.mirrored(plain)
    pairs = local.tentative_matches(local.root_sift(flipped.descriptors), local.root_sift(measured.descriptors))
    close = np.linalg.norm(flipped.xy[pairs[:, 0]] - measured.xy[pairs[:, 1]], axis=1) < 2
    assert len(pairs) > 0.5 * len(plain) and close.mean() > 0.9
    # unmirrored descriptors do not match the mirror image's: the permutation is what does it
    unflipped = local.tentative_matches(local.root_sift(plain.descriptors), local.root_sift(measured.descriptors))
    assert len(unflipped) < 0.5 * len(pairs)
    assert np.array_equal(local.mirrored(flipped).descriptors, plain.descriptors)


def test_explain_draws_the_search_s_own_match_without_verifying_again(gallery, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lookalike.cli import main

    index, folder, root = gallery
    calls = []
    real = query.verify_query
    monkeypatch.setattr(query, "verify_query", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    out = tmp_path / "why.png"
    result = CliRunner().invoke(main, ["search", str(folder / "camera.jpg"), "--index", str(root / "idx"),
                                       "-k", "3", "--verify", "--explain", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0 and "inliers" in result.output
    assert len(calls) == 1  # the search verified its candidates once; the drawing reused the match
