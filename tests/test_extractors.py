import json

import imagehash
import numpy as np
import pytest
from PIL import Image

from lookalike import decode
from lookalike.extractors import Extractor, UnknownExtractor, available, create
from lookalike.extractors.cnn import resize_centre_crop

from .conftest import DATA, DEMO, ODD

CAT = DEMO / "cat.jpg"


def pixels(path):
    return decode.decode_file(path).pixels


def test_builtins_are_found_through_entry_points():
    eps = available()
    assert {"cnn", "phash", "kaze-concat"} <= set(eps)
    assert eps["cnn"].group == "lookalike.extractors"


@pytest.mark.parametrize("name", ["cnn", "phash", "kaze-concat"])
def test_spec_round_trip_and_interface(name):
    ext = create(name)
    assert isinstance(ext, Extractor)
    spec = ext.spec()
    assert spec["name"] == name
    again = create(json.loads(json.dumps(spec)))
    assert again.spec() == spec
    assert ext.metric in ("cosine", "hamming")
    out = ext.embed([pixels(CAT), pixels(ODD / "ok_rgb.png")])
    assert out.shape == (2, ext.row_width)
    assert out.dtype == np.dtype(ext.dtype)
    assert ext.embed([]).shape == (0, ext.row_width)


def test_unknown_extractor_names_the_known_ones():
    with pytest.raises(UnknownExtractor, match="cnn"):
        create("nope")


def test_settings_change_the_spec():
    assert create({"name": "phash", "hash_size": 16}).dim == 256
    assert create('{"name": "kaze-concat", "n_keypoints": 8}').dim == 512


def test_cnn_golden_embedding():
    v = create("cnn").embed([pixels(CAT)])[0]
    golden = np.load(DATA / "golden_cnn_cat.npy")
    assert v.shape == (1280,)
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    assert float(v @ golden) >= 0.999


def test_cnn_classifies_the_cat_as_a_cat():
    ext = create("cnn")
    fmap = ext.feature_maps(resize_centre_crop(pixels(CAT), 224)[None])
    assert fmap.shape == (1, 1280, 7, 7)
    weight = np.load(DATA / "imagenet_head_weight.npy").astype(np.float32)
    bias = np.load(DATA / "imagenet_head_bias.npy")
    logits = fmap.mean(axis=(2, 3)) @ weight.T + bias
    assert int(np.argmax(logits)) in range(281, 286)  # ImageNet's domestic cat classes


def test_cnn_is_robust_to_small_edits_and_separates_images():
    ext = create("cnn")
    cat = pixels(CAT)
    small = np.asarray(Image.fromarray(cat).resize((cat.shape[1] // 3, cat.shape[0] // 3)))
    coffee = pixels(DEMO / "coffee.jpg")
    v = ext.embed([cat, small, cat[:, ::-1], coffee])
    assert v[0] @ v[1] > 0.8
    assert v[0] @ v[2] > 0.8
    assert v[0] @ v[3] < 0.5


def test_cnn_batches_agree_with_single_images():
    ext = create({"name": "cnn"}, threads=1)
    ext.batch_size = 2
    imgs = [pixels(p) for p in sorted(DEMO.glob("*.jpg"))[:5]]
    batched = ext.embed(imgs)
    single = np.stack([ext.embed([im])[0] for im in imgs])
    assert np.abs(batched - single).max() < 1e-4


def test_cnn_handles_tiny_and_thin_images():
    v = create("cnn").embed([pixels(ODD / "one_pixel.png"), pixels(ODD / "tall_thin.png")])
    assert np.isfinite(v).all()


def test_phash_matches_imagehash_and_golden_value():
    bits = create("phash").embed([pixels(CAT)])[0]
    assert bits.tobytes().hex() == "b15fe6465121175e"
    assert bits.tobytes().hex() == str(imagehash.phash(Image.open(CAT)))


def test_phash_small_rotation_flips_few_bits_big_one_many():
    ext = create("phash")
    img = Image.open(CAT).convert("RGB")
    base, r1, r90 = ext.embed([np.asarray(img), np.asarray(img.rotate(1)), np.asarray(img.rotate(90, expand=True))])
    dist = lambda a, b: int(np.unpackbits(a ^ b).sum())  # noqa: E731
    assert dist(base, r1) <= 10
    assert dist(base, r90) > 10


def test_kaze_concat_follows_the_tutorial():
    ext = create("kaze-concat")
    v = ext.prepare(pixels(CAT))
    assert v.shape == (2048,)
    assert np.count_nonzero(v) > 1000  # 32 keypoints found on a real photo
    flat = ext.prepare(np.full((100, 100, 3), 128, np.uint8))
    assert not flat.any()  # no keypoints: all zero padding
    emb = ext.embed([pixels(CAT), np.full((100, 100, 3), 128, np.uint8)])
    assert abs(np.linalg.norm(emb[0]) - 1) < 1e-5
    assert not emb[1].any()


def test_cnn_pca_whitening_learned_at_index_time(tmp_path):
    import shutil

    from lookalike import Index

    folder = tmp_path / "photos"
    shutil.copytree(DEMO, folder)
    with Index.create(tmp_path / "idx", extractor={"name": "cnn", "pca": 6}) as ix:
        ix.add(folder, jobs=1)
        assert ix.store.manifest.dim == 6
        assert set(ix.store.manifest.files) == {"pca_mean.npy", "pca_components.npy"}
    with Index.open(tmp_path / "idx") as ix:
        assert ix.extractor.pca_components.shape == (6, 1280)
        small = np.asarray(Image.open(DEMO / "coffee.jpg").convert("RGB").resize((200, 133)))
        assert ix.search(small, k=1)[0].path == str(folder / "coffee.jpg")
    assert create("cnn").spec() == create({"name": "cnn", "pca": 0}).spec()  # default spec unchanged
