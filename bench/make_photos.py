"""Make realistic camera-sized JPEGs for the speed benchmarks.

Two sets, made from the benchmark's ``originals/`` (or the bundled demo images
when the benchmark is absent):

* ``1mp/``: 1224x816 (1 MP) JPEGs, quality 90;
* ``12mp/``: 4032x3024 (12 MP, a phone camera) JPEGs, quality 90;
* ``heic/``: 4032x3024 HEIC files (as phones save them; pillow-heif's x265
  encoder, quality 70, preset ultrafast);
* ``mixed/``: a phone library's mix, each file new: 12 MP JPEGs (half),
  1 MP JPEGs, 12 MP HEIC and 1920x1080 PNG screenshots (a sixth each). A
  quarter of the JPEGs are stored sideways with an EXIF orientation of 6, as
  cameras held upright store them.

Each output is one source image, centre-cropped to the target aspect ratio
(3:2 or 4:3; portrait sources give portrait outputs), upscaled (bicubic) and
given fine sensor-like noise so the JPEG entropy, and so the file size and
decoding cost, is that of a real photo (~0.3-0.6 MB at 1 MP, ~3-6 MB at
12 MP) rather than that of a smooth upscaled image. Sources are cycled when
``--count`` exceeds them; every output differs (its own noise). Deterministic:
the same inputs and options give byte-identical files.

Run from the repository root::

    .venv/bin/python bench/make_photos.py                       # -> /tmp/lookalike-photos/{1mp,12mp}
    .venv/bin/python bench/make_photos.py --out ~/photos --count 500 --count-12mp 100

Prints the sizes made (count, total and median MB per set).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_BENCH  # noqa: E402

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "lookalike" / "demo" / "images"
DEFAULT_OUT = Path("/tmp/lookalike-photos")
#: set name -> (width, height) of a landscape output, default count, noise sigma
SETS = {  # name: (size, default count, noise sigma)
    "1mp": ((1224, 816), 200, 7.0),
    "12mp": ((4032, 3024), 60, 6.0),
    "heic": ((4032, 3024), 20, 6.0),
    "png": ((1920, 1080), 0, 0.0),  # screenshots, only in mixed/
}
QUALITY = 90
HEIC_QUALITY = 70
#: mixed/: (set, share of the files)
MIXED = (("12mp", 0.5), ("1mp", 1 / 6), ("heic", 1 / 6), ("png", 1 / 6))


def sources(bench: Path) -> list[Path]:
    folder = bench / "originals"
    if not folder.is_dir():
        print(f"benchmark not found at {bench}: using the demo images in {DEMO_IMAGES}", file=sys.stderr)
        folder = DEMO_IMAGES
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)


def photo(source: Path, size: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    """``source`` cropped to the aspect of ``size``, upscaled, with fine noise; uint8 RGB."""
    import cv2
    from PIL import Image, ImageOps

    with Image.open(source) as im:
        rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    h, w = rgb.shape[:2]
    width, height = size if w >= h else size[::-1]
    aspect = width / height
    if w / h > aspect:  # too wide: cut the sides
        cw = max(1, round(h * aspect))
        rgb = rgb[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = max(1, round(w / aspect))
        rgb = rgb[(h - ch) // 2 : (h - ch) // 2 + ch]
    big = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((height, width), dtype=np.float32) * sigma  # luminance grain
    chroma = rng.standard_normal((height // 2, width // 2, 3), dtype=np.float32) * (sigma / 2)
    noise = noise[..., None] + cv2.resize(chroma, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.clip(big.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def save(pixels: np.ndarray, kind: str, target_stem: Path, sideways: bool = False) -> Path:
    """Write ``pixels`` as the set ``kind`` stores them; returns the file's path."""
    from PIL import Image

    im = Image.fromarray(pixels)
    if kind == "heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        target = target_stem.with_suffix(".heic")
        im.save(target, format="HEIF", quality=HEIC_QUALITY, enc_params={"preset": "ultrafast"})
    elif kind == "png":
        target = target_stem.with_suffix(".png")
        im.save(target, compress_level=6)
    else:
        target = target_stem.with_suffix(".jpg")
        if sideways:  # stored turned a quarter, upright again by its EXIF orientation (6)
            exif = Image.Exif()
            exif[0x0112] = 6
            im.transpose(Image.Transpose.ROTATE_90).save(target, quality=QUALITY, exif=exif)
        else:
            im.save(target, quality=QUALITY)
    return target


def make_set(name: str, files: list[Path], count: int, out: Path) -> list[int]:
    size, _, sigma = SETS[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(count):
        source = files[i % len(files)]
        target = save(photo(source, size, sigma, seed=i), name, folder / f"{name}-{i:04d}-{source.stem}")
        sizes.append(target.stat().st_size)
    return sizes


def make_mixed(files: list[Path], count: int, out: Path) -> list[int]:
    """``count`` new files of the kinds of :data:`MIXED`, interleaved; seeds apart from
    the other sets' so that no file is a copy of one there."""
    folder = out / "mixed"
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [kind for kind, share in MIXED for _ in range(round(share * count))][:count]
    kinds = [kinds[i] for i in np.random.default_rng(0).permutation(len(kinds))]  # interleaved, always the same
    sizes = []
    for i, kind in enumerate(kinds):
        size, _, sigma = SETS[kind]
        source = files[(i * 3 + 1) % len(files)]
        pixels = photo(source, size, sigma, seed=100_000 + i)
        target = save(pixels, kind, folder / f"mixed-{i:04d}-{kind}-{source.stem}", sideways=i % 4 == 1)
        sizes.append(target.stat().st_size)
    return sizes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help=f"benchmark folder (default: {DEFAULT_BENCH})")
    p.add_argument("--count", type=int, default=SETS["1mp"][1], metavar="N",
                   help=f"1 MP photos to make (default: {SETS['1mp'][1]})")
    p.add_argument("--count-12mp", type=int, default=SETS["12mp"][1], metavar="N",
                   help=f"12 MP photos to make (default: {SETS['12mp'][1]}; 0 = none)")
    p.add_argument("--count-heic", type=int, default=SETS["heic"][1], metavar="N",
                   help=f"12 MP HEIC files to make (default: {SETS['heic'][1]}; 0 = none)")
    p.add_argument("--count-mixed", type=int, default=60, metavar="N",
                   help="files of the mixed folder (default: 60; 0 = none)")
    args = p.parse_args(argv)
    files = sources(args.bench)
    if not files:
        print("make_photos.py: no source images", file=sys.stderr)
        return 2
    for name, count in (("1mp", args.count), ("12mp", args.count_12mp), ("heic", args.count_heic),
                        ("mixed", args.count_mixed)):
        if count <= 0:
            continue
        started = time.perf_counter()
        sizes = make_mixed(files, count, args.out) if name == "mixed" else make_set(name, files, count, args.out)
        what = "files" if name == "mixed" else ("HEIC %dx%d q%d" % (*SETS[name][0], HEIC_QUALITY) if name == "heic"
                                                 else "JPEGs %dx%d q%d" % (*SETS[name][0], QUALITY))
        print(f"{args.out / name}: {len(sizes)} {what}, "
              f"total {sum(sizes) / 1e6:.1f} MB, median {statistics.median(sizes) / 1e6:.2f} MB, "
              f"min {min(sizes) / 1e6:.2f}, max {max(sizes) / 1e6:.2f} MB "
              f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
