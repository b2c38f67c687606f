"""Camera RAW files (the ``raw`` extra): decoded by LibRaw, indexed, found; refused in one line without it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lookalike import Index, decode
from lookalike.sources import is_raw_name

from .conftest import DEMO

pytest.importorskip("rawpy", reason="needs the 'raw' extra (rawpy): pip install -e '.[raw]'")
pytest.importorskip("pidng", reason="needs pidng (in the test extra) to write DNG files")

from .raw_files import write_dng  # noqa: E402


@pytest.fixture
def cat_dng(tmp_path):
    return write_dng(DEMO / "cat.jpg", tmp_path / "cat.dng")


def _grey(a: np.ndarray, size=(64, 64)) -> np.ndarray:
    g = np.asarray(Image.fromarray(a).convert("L").resize(size), np.float32)
    return (g - g.mean()) / (g.std() + 1e-6)


def test_a_dng_decodes_to_the_picture_it_holds(cat_dng):
    original = np.asarray(Image.open(DEMO / "cat.jpg").convert("RGB"))
    d = decode.decode_file(cat_dng)
    assert d.pixels.dtype == np.uint8 and d.pixels.shape == (300, 450, 3) and (d.width, d.height) == (450, 300)
    assert float((_grey(d.pixels) * _grey(original)).mean()) > 0.95  # the same picture
    small = decode.decode_file(cat_dng, min_side=100)  # half-size: each 2x2 block of the sensor one pixel
    assert small.pixels.shape == (150, 225, 3) and (small.width, small.height) == (450, 300)
    # bytes with no name (an upload, stdin) that Pillow cannot read are tried as RAW
    assert decode.decode_bytes(cat_dng.read_bytes(), raw=None).pixels.shape == (300, 450, 3)
    with pytest.raises(decode.DecodeError) as e:  # named as no RAW file: Pillow's answer stands
        decode.decode_bytes(cat_dng.read_bytes())
    assert e.value.reason == decode.SkipReason.NOT_AN_IMAGE


def test_raw_names_and_a_jpeg_named_dng(tmp_path):
    assert is_raw_name("/a/IMG_0001.CR2") and is_raw_name("x.nef") and is_raw_name("y.dng")
    assert not is_raw_name("z.jpg") and not is_raw_name("dng")
    renamed = tmp_path / "photo.dng"  # not a RAW file at all: LibRaw passes it to Pillow
    shutil.copy(DEMO / "coffee.jpg", renamed)
    assert decode.decode_file(renamed).pixels.shape == np.asarray(Image.open(DEMO / "coffee.jpg")).shape


def test_broken_raw_files_are_skipped_with_a_reason(cat_dng, tmp_path):
    cut = tmp_path / "cut.dng"
    cut.write_bytes(cat_dng.read_bytes()[:5000])
    junk = tmp_path / "junk.nef"
    junk.write_bytes(b"not a raw file at all" * 50)
    for bad in (cut, junk):
        with pytest.raises(decode.DecodeError) as e:
            decode.decode_file(bad)
        assert e.value.reason in (decode.SkipReason.TRUNCATED, decode.SkipReason.DECODE_ERROR,
                                  decode.SkipReason.NOT_AN_IMAGE), e.value
    # indexed by worker processes: one summary line, not LibRaw's own complaints on stderr
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in (cut, junk, cat_dng):
        shutil.move(p, folder / p.name)
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "index", str(folder), "--index", str(tmp_path / "idx"),
                          "-e", "phash", "-j", "2"], capture_output=True, text=True)
    assert out.returncode == 0 and "1 added" in out.stdout + out.stderr and "2 skipped" in out.stdout + out.stderr, out
    assert "Unexpected end of file" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_raw_files_are_indexed_and_found_by_their_jpeg(tmp_path, cat_dng):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.jpg", "rocket.jpg", "astronaut.jpg"):
        shutil.copy(DEMO / name, folder / name)
    shutil.move(cat_dng, folder / "cat.dng")
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "index", str(folder), "--index", str(tmp_path / "idx"),
                          "-e", "cnn", "--keypoints", "none", "-j", "1", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["added"] == 4
    with Index.open(tmp_path / "idx") as ix:
        hits = ix.search(DEMO / "cat.jpg", k=2)
        assert hits[0].path == str(folder / "cat.dng") and hits[0].score > 0.9
        assert hits[1].score < hits[0].score - 0.2


def test_without_the_extra_a_raw_file_is_skipped_naming_it(cat_dng, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if not installed
    with pytest.raises(decode.DecodeError) as e:
        decode.decode_file(cat_dng)
    assert e.value.reason == decode.SkipReason.NOT_AN_IMAGE and e.value.detail == decode.RAW_EXTRA
    assert "pip install 'lookalike[raw]'" in decode.RAW_EXTRA
    with pytest.raises(decode.DecodeError) as e:  # unnamed bytes: not an image Pillow knows
        decode.decode_bytes(cat_dng.read_bytes(), raw=None)
    assert e.value.reason == decode.SkipReason.NOT_AN_IMAGE
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(cat_dng, folder / "cat.dng")
    shutil.copy(DEMO / "coffee.jpg", folder / "coffee.jpg")
    with Index.create(tmp_path / "idx", "phash") as ix:
        report = ix.add(folder, jobs=1)
        assert report.added == 1 and report.skipped == 1
        (skip,) = ix.skipped()
        assert skip.path.endswith("cat.dng") and "'raw' extra" in (skip.detail or "")


def test_the_http_api_searches_with_a_raw_upload_and_shows_its_thumbnail(tmp_path, cat_dng):
    pytest.importorskip("fastapi", reason="needs the 'server' extra")
    httpx = pytest.importorskip("httpx")
    from .live_server import LiveServer

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(cat_dng, folder / "cat.dng")
    shutil.copy(DEMO / "coffee.jpg", folder / "coffee.jpg")
    with Index.create(tmp_path / "idx", "cnn", keypoints=None) as ix:
        ix.add(folder, jobs=1)
    with LiveServer(tmp_path / "idx") as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for filename in ("IMG_0001.DNG", "blob"):  # named as RAW, and not (tried as RAW all the same)
            r = client.post("/api/search", files={"image": (filename, cat_dng.read_bytes())}, params={"k": 1})
            assert r.status_code == 200, r.text
            (hit,) = r.json()["hits"]
            assert hit["path"] == str(folder / "cat.dng") and hit["score"] > 0.99
        th = client.get(f"/api/files/{hit['id']}/thumbnail", params={"size": 100})
        assert th.status_code == 200 and th.headers["content-type"] == "image/jpeg"
        assert Image.open(__import__("io").BytesIO(th.content)).size == (100, 67)
