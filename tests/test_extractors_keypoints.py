import shutil

import numpy as np
import pytest
from PIL import Image

from lookalike import Index, decode
from lookalike.extractors import create
from lookalike.extractors.keypoints import NotTrained

from .conftest import DATA, DEMO

DETECTORS = ["sift", "orb", "kaze", "akaze", "brisk", "brief"]
ROTATION_INVARIANT = ["sift", "orb", "kaze", "akaze", "brisk"]  # BRIEF is not, by design


def photos():
    return [decode.decode_file(p).pixels for p in sorted(DEMO.glob("*.jpg"))]


@pytest.fixture(scope="module")
def trained():
    """Each detector's VLAD extractor with a vocabulary learned on the demo photos."""
    out = {}
    imgs = photos()
    for name in DETECTORS:
        ext = create(name)
        ext.fit([ext.prepare(im) for im in imgs])
        out[name] = ext
    return out


@pytest.mark.parametrize("name", DETECTORS)
def test_vlad_shape_norm_and_spec(trained, name):
    ext = trained[name]
    assert ext.spec()["aggregation"] == "vlad"
    assert ext.state()["vocabulary"].shape == (ext.words, ext.desc_dim)
    v = ext.embed(photos()[:2])
    assert v.shape == (2, ext.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert create(ext.spec()).spec() == ext.spec()


@pytest.mark.parametrize("name", ROTATION_INVARIANT)
def test_vlad_survives_a_quarter_turn(trained, name):
    ext = trained[name]
    cat = decode.decode_file(DEMO / "cat.jpg").pixels
    coffee = decode.decode_file(DEMO / "coffee.jpg").pixels
    a, rotated, other = ext.embed([cat, np.ascontiguousarray(np.rot90(cat)), coffee])
    assert a @ rotated > a @ other


@pytest.mark.parametrize("name", DETECTORS)
def test_vlad_golden_value(trained, name):
    # vocabulary learned on the 8 demo photos (seeded k-means), then the cat's VLAD
    cat = decode.decode_file(DEMO / "cat.jpg").pixels
    v = trained[name].embed([cat])[0]
    golden = np.load(DATA / f"golden_{name}_vlad_cat.npy").astype(np.float32)
    golden /= np.linalg.norm(golden)
    assert float(v @ golden) >= 0.995, f"{name}-VLAD of the cat drifted (cosine to the pinned vector < 0.995)"


def test_kaze_concat_golden_value():
    v = create("kaze-concat").embed([decode.decode_file(DEMO / "cat.jpg").pixels])[0]
    golden = np.load(DATA / "golden_kaze_concat_cat.npy")
    assert float(v @ golden) >= 0.999, "kaze-concat of the cat drifted (cosine < 0.999)"


def test_untrained_vlad_says_what_to_do():
    with pytest.raises(NotTrained, match="index some images first"):
        create("sift").embed(photos()[:1])
    with pytest.raises(NotTrained, match="needs at least"):
        ext = create("orb")
        ext.fit([ext.prepare(np.full((64, 64, 3), 127, np.uint8))])


def test_concat_variant_of_any_detector():
    ext = create({"name": "orb", "aggregation": "concat", "n_keypoints": 16})
    v = ext.embed(photos()[:1])
    assert v.shape == (1, 16 * 256) and not ext.trainable


def test_surf_gives_a_clear_error():
    with pytest.raises(ValueError, match="patented") as e:
        create("surf")
    assert "sift" in str(e.value) and "akaze" in str(e.value)


def test_index_learns_and_stores_the_vocabulary(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(DEMO, folder)
    with Index.create(tmp_path / "idx", extractor="sift") as ix:
        assert ix.add(folder, jobs=2).added == 8
        assert ix.store.manifest.files == {"vocabulary.npy": "extractor state"}
    vocab = np.load(tmp_path / "idx" / "vocabulary.npy", allow_pickle=False)
    assert vocab.shape == (64, 128)
    query = tmp_path / "q.jpg"
    Image.open(DEMO / "rocket.jpg").rotate(90, expand=True).save(query)
    with Index.open(tmp_path / "idx") as ix:  # a fresh process would do the same
        assert np.array_equal(ix.extractor.vocabulary, vocab)
        assert ix.search(query, k=1)[0].path == str(folder / "rocket.jpg")
        assert ix.add(folder).processed == 0  # the vocabulary is not relearned


def test_vlad_with_pca_whitening(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(DEMO, folder)
    spec = {"name": "sift", "pca": 6}
    with Index.create(tmp_path / "idx", extractor=spec) as ix:
        ix.add(folder, jobs=1)
        assert ix.extractor.dim == 6 and ix.store.manifest.dim == 6
        assert set(ix.store.manifest.files) == {"vocabulary.npy", "pca_mean.npy", "pca_components.npy"}
    query = tmp_path / "q.jpg"
    Image.open(DEMO / "astronaut.jpg").rotate(90, expand=True).save(query)
    with Index.open(tmp_path / "idx") as ix:
        assert ix.extractor.pca_components.shape == (6, 64 * 128)
        assert ix.search(query, k=1)[0].path == str(folder / "astronaut.jpg")
    with pytest.raises(NotTrained, match="more than 8 training images"):
        ext = create({"name": "sift", "pca": 8})
        ext.fit([ext.prepare(im) for im in photos()])


def test_index_keeps_a_vocabulary_trained_beforehand(tmp_path, trained):
    with Index.create(tmp_path / "idx", extractor=trained["orb"]) as ix:
        assert ix.store.manifest.files == {"vocabulary.npy": "extractor state"}
    with Index.open(tmp_path / "idx") as ix:
        assert np.array_equal(ix.extractor.vocabulary, trained["orb"].vocabulary)
