"""The ``cnn`` extractor's copy-detection options: GeM pooling, multi-scale, the shipped copy whitening."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from lookalike import decode
from lookalike.errors import UsageError
from lookalike.extractors import create
from lookalike.extractors.cnn import MODEL_PATH, model_digest, whitening_path

from .conftest import DATA, DEMO

CAT, COFFEE = DEMO / "cat.jpg", DEMO / "coffee.jpg"
BENCH_PACKAGES = {"gcompris-qt-data", "gnome-backgrounds", "tuxpaint-stamps-default", "ukui-wallpapers"}


def pixels(path):
    return decode.decode_file(path).pixels


def blurred_noisy(a, seed=0):
    rng = np.random.default_rng(seed)
    b = cv2.GaussianBlur(a, (0, 0), 2.0).astype(np.float32) + rng.normal(0, 12, a.shape)
    return np.clip(b, 0, 255).astype(np.uint8)


def off_centre_crop(a):
    h, w = a.shape[:2]
    return np.ascontiguousarray(a[h // 10 : h // 10 + h * 6 // 10, w // 4 : w // 4 + w * 6 // 10])


def pasted(a):
    """``a`` at 60% of a grey page with a coloured band (a picture in a picture)."""
    h, w = a.shape[:2]
    page = np.full((h, w, 3), 200, np.uint8)
    page[: h // 6] = (30, 60, 120)
    small = cv2.resize(a, (w * 6 // 10, h * 6 // 10), interpolation=cv2.INTER_AREA)
    page[h // 4 : h // 4 + small.shape[0], w // 5 : w // 5 + small.shape[1]] = small
    return page


SPECS = [
    {"name": "cnn", "pooling": "gem"},
    {"name": "cnn", "pooling": "gem", "whiten": "copy"},
    {"name": "cnn", "pooling": "gem", "whiten": "copy", "whiten_dims": 64},
    {"name": "cnn", "pooling": "gem", "multiscale": True},
    {"name": "cnn", "pooling": "gem", "multiscale": True, "whiten": "copy"},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: json.dumps(s, sort_keys=True))
def test_the_new_options_round_trip_through_the_spec(spec):
    ext = create(spec)
    again = create(json.loads(json.dumps(ext.spec())))
    assert again.spec() == ext.spec()
    for key, value in spec.items():
        if key != "name":
            assert ext.spec()[key] == value
    assert ext.dim == again.dim == spec.get("whiten_dims", ext.dim)
    img = pixels(CAT)
    a, b = ext.embed([img])[0], again.embed([img])[0]
    assert a.shape == (ext.dim,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-5
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_whitening_is_recorded_with_its_file_digest():
    spec = create({"name": "cnn", "pooling": "gem", "whiten": "copy"}).spec()
    assert spec["whiten_sha256"] == model_digest(str(whitening_path("gem", False)))
    with pytest.raises(UsageError, match="whitening file differs"):
        create({**spec, "whiten_sha256": "0" * 16})


def test_default_cnn_vectors_and_spec_are_unchanged():
    ext = create("cnn")
    assert ext.spec() == {
        "name": "cnn", "version": 1, "input_size": 224, "resize": "shorter-side-centre-crop",
        "normalise": "(x-127)/128", "pooling": "avg", "model_sha256": model_digest(str(MODEL_PATH)),
    }
    assert ext.dim == 1280
    golden = np.load(DATA / "golden_cnn_cat.npy", allow_pickle=False)
    v = ext.embed([pixels(CAT)])[0]
    assert float(v @ golden) > 0.9999
    assert create({"name": "cnn", "pooling": "avg", "whiten": "none"}).spec() == ext.spec()


def test_an_old_spec_without_pooling_loads_as_avg():
    old = {"name": "cnn", "version": 1, "input_size": 224, "model_sha256": model_digest(str(MODEL_PATH))}
    ext = create(old)
    assert ext.pooling == "avg" and ext.whiten == "none" and not ext.multiscale
    assert ext.spec() == create("cnn").spec()


@pytest.mark.parametrize("multiscale", [False, True])
def test_the_shipped_whitening_loads(multiscale):
    path = whitening_path("gem", multiscale)
    table = np.load(path, allow_pickle=False)
    assert table.dtype in (np.float32, np.float16)
    assert table.ndim == 2 and table.shape[1] == 1280 and 64 < table.shape[0] <= 1281
    assert np.isfinite(table).all()
    assert path.stat().st_size < 4_000_000
    # the projection is not degenerate: its rows span many directions
    proj = table[1:].astype(np.float64)
    sv = np.linalg.svd(proj, compute_uv=False)
    assert sv.min() > 1e-3 * sv.max()


def test_the_whitening_sources_are_recorded_and_are_not_the_benchmarks():
    for multiscale in (False, True):
        meta = json.loads(whitening_path("gem", multiscale).with_suffix(".sources.json").read_text())
        assert (meta["pooling"], meta["multiscale"]) == ("gem", multiscale)
        packages = {p[0] for p in meta["packages"]}
        assert packages and not packages & BENCH_PACKAGES
        assert all(len(p) == 3 and p[1] and p[2] for p in meta["packages"])  # name, version, licence
        assert len(meta["files"]) == meta["images"] >= 1000
        assert {f[0] for f in meta["files"]} <= packages


@pytest.mark.parametrize("spec", SPECS + [{"name": "cnn"}], ids=lambda s: json.dumps(s, sort_keys=True))
@pytest.mark.parametrize("edit", [blurred_noisy, off_centre_crop, pasted], ids=lambda f: f.__name__)
def test_a_copy_scores_higher_than_an_unrelated_image(spec, edit):
    ext = create(spec)
    cat, coffee = pixels(CAT), pixels(COFFEE)
    v = ext.embed([cat, edit(cat), coffee, edit(coffee)])
    assert v[1] @ v[0] > v[1] @ v[2] + 0.1
    assert v[3] @ v[2] > v[3] @ v[0] + 0.1


def test_the_whitening_separates_copies_better_than_raw_gem():
    """Margin (copy similarity minus unrelated similarity) over the demo photos and three edits."""
    imgs = [pixels(p) for p in sorted(DEMO.glob("*.jpg"))]
    assert len(imgs) >= 3

    def margin(spec):
        ext = create(spec)
        orig = ext.embed(imgs)
        worst = []
        for edit in (blurred_noisy, off_centre_crop, pasted):
            s = ext.embed([edit(a) for a in imgs]) @ orig.T
            worst.append(np.diag(s) - np.where(np.eye(len(imgs), dtype=bool), -np.inf, s).max(1))
        return float(np.mean(worst))

    assert margin({"name": "cnn", "pooling": "gem", "whiten": "copy"}) > margin({"name": "cnn", "pooling": "gem"})


@pytest.mark.parametrize("bad, message", [
    ({"pooling": "max"}, "pooling must be one of avg, gem"),
    ({"whiten": "sscd"}, "whiten must be one of none, copy"),
    ({"pooling": "gem", "whiten": "copy", "whiten_dims": 0}, "whiten_dims must be between 1 and"),
    ({"pooling": "gem", "whiten": "copy", "whiten_dims": 100000}, "whiten_dims must be between 1 and"),
    ({"pooling": "gem", "whiten": "copy", "whiten_dims": "64"}, "whiten_dims must be between 1 and"),
    ({"whiten_dims": 64}, "whiten_dims needs whiten"),
    ({"pooling": "gem", "whiten": "copy", "pca": 16}, "either pca"),
    ({"multiscale": "yes"}, "multiscale must be true or false"),
    ({"whiten": "copy"}, "shipped for input_size 224 with pooling gem"),  # none for avg
    ({"whiten": "copy", "pooling": "gem", "input_size": 256}, "shipped for input_size 224"),
])
def test_invalid_values_raise_a_one_line_usage_error(bad, message):
    with pytest.raises(UsageError, match=message) as info:
        create({"name": "cnn", **bad})
    assert "\n" not in str(info.value)


def test_an_index_with_the_copy_whitening_finds_an_edited_copy(tmp_path, photos):
    from lookalike import Index

    spec = {"name": "cnn", "pooling": "gem", "whiten": "copy"}
    with Index.create(tmp_path / "idx", extractor=spec) as ix:
        ix.add(photos, jobs=1)
        assert ix.store.manifest.dim == create(spec).dim
    with Index.open(tmp_path / "idx") as ix:
        assert ix.extractor.whiten == "copy"
        query = blurred_noisy(np.asarray(Image.open(COFFEE).convert("RGB")))
        assert ix.search(query, k=1)[0].path == str(photos / "coffee.jpg")
