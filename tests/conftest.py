import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
ODD = DATA / "odd"
DEMO = ROOT / "lookalike" / "demo" / "images"
BENCH = ROOT.parent / "shared" / "bench"
LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]

# Most tests were written for the open default (cnn with SIFT keypoints) and
# assert what it does; with the sscd extra installed the default would be the
# copy default. Pin the open one here (subprocesses inherit it); the tests of
# the copy default (test_extractors_sscd.py) unset it themselves.
os.environ["LOOKALIKE_DEFAULT_EXTRACTOR"] = "cnn"


def run_cli(*args, check=True) -> subprocess.CompletedProcess:
    """``lookalike ARGS...`` in a subprocess; with ``check``, a non-zero exit fails the test."""
    out = subprocess.run([*LOOKALIKE, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}")
    return out


@pytest.fixture
def odd_dir() -> Path:
    return ODD


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder with copies of the bundled demo photos."""
    d = tmp_path / "photos"
    d.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture
def bench_dir() -> Path:
    if not (BENCH / "ground_truth.csv").exists():
        pytest.skip(f"public benchmark not found at {BENCH} (only present in the development checkout)")
    return BENCH


def demo_folder(folder: Path) -> Path:
    """``folder`` (made here) holding copies of the bundled demo photos."""
    folder.mkdir(parents=True)
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, folder / p.name)
    return folder


def edit_photos(photos: Path) -> None:
    """One of each change an incremental run must see: 2 renames (one into a subfolder),
    1 deletion, 1 changed file, 1 new file and 1 byte-identical copy of a file."""
    os.rename(photos / "cat.jpg", photos / "kitty.jpg")
    (photos / "sub").mkdir()
    os.rename(photos / "coffee.jpg", photos / "sub" / "coffee.jpg")
    os.remove(photos / "brick.jpg")
    Image.open(DEMO / "hubble.jpg").rotate(90).save(photos / "camera.jpg")
    shutil.copy(ODD / "ok_rgb.png", photos / "new.png")
    shutil.copy(DEMO / "retina.jpg", photos / "retina-copy.jpg")


def make_pattern_images(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    """``n`` distinct small JPEGs with random blocky patterns."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.NEAREST)
        p = folder / f"img{i:04d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares ``width x height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def gif_bomb(path: Path, width: int, height: int) -> Path:
    """A tiny GIF whose logical screen and frame declare ``width x height``."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(header + frame + b"\x3b")
    return path
