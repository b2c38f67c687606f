"""Make a harder copy-detection query set from a benchmark folder's originals.

The public benchmark's edits are mild (crops, a 15 degree turn, recompression,
colour); users meet harsher ones. This script writes a second query set, in
the same layout, with edits of other kinds: quarter turns and mirrors,
perspective warps, the picture framed inside something else (pasted on a
screenshot-like page, a border with a caption band), text and logo
overlays, and combinations. Parameters are drawn at random per query (seeded),
so nothing can be tuned to one fixed value.

    .venv/bin/python bench/make_hard.py --out /tmp/hard            # from ../shared/bench
    .venv/bin/python bench/quality.py --bench /tmp/hard --verify    # or: lookalike eval /tmp/hard

The output folder links ``originals/`` and ``distractors/`` to the source
benchmark and holds ``queries/`` and ``ground_truth.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_BENCH  # noqa: E402


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def quarter_turn(img: Image.Image, rng: random.Random) -> Image.Image:
    turn = rng.choice([Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270])
    img = img.transpose(turn)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.3 else img


def perspective(img: Image.Image, rng: random.Random) -> Image.Image:
    """A camera-like view: each corner moved inwards by up to 18% of the side."""
    a = np.asarray(img)
    h, w = a.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = lambda: rng.uniform(0.0, 0.18)  # noqa: E731
    dst = np.float32([
        [w * jitter(), h * jitter()], [w * (1 - jitter()), h * jitter()],
        [w * (1 - jitter()), h * (1 - jitter())], [w * jitter(), h * (1 - jitter())],
    ])
    m = cv2.getPerspectiveTransform(src, dst)
    fill = tuple(int(v) for v in rng.choice([(0, 0, 0), (255, 255, 255), (90, 90, 90)]))
    return Image.fromarray(cv2.warpPerspective(a, m, (w, h), borderValue=fill))


def page(rng: random.Random) -> Image.Image:
    """A screenshot-like page that is in no gallery: bars, panels and lines of text."""
    w, h = 1024, rng.choice([640, 768, 1024])
    out = Image.new("RGB", (w, h), tuple(rng.randint(200, 255) for _ in range(3)))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, w, rng.randint(30, 70)], fill=tuple(rng.randint(0, 120) for _ in range(3)))
    font = ImageFont.load_default(size=rng.randint(12, 20))
    for _ in range(rng.randint(3, 8)):
        x, y = rng.randint(0, w - 100), rng.randint(60, h - 40)
        draw.rectangle([x, y, x + rng.randint(60, 300), y + rng.randint(20, 120)],
                       fill=tuple(rng.randint(120, 255) for _ in range(3)))
    for y in range(90, h, rng.randint(22, 34)):
        words = " ".join(rng.choice(["lorem", "ipsum", "dolor", "share", "photo", "news", "today", "2026"])
                         for _ in range(rng.randint(3, 12)))
        draw.text((rng.randint(10, 60), y), words, fill=(40, 40, 40), font=font)
    return out


def picture_in_picture(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture pasted, at 35-60% of the width, somewhere on a page (no gallery image)."""
    bg = page(rng)
    scale = rng.uniform(0.35, 0.6) * bg.width / img.width
    small = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))))
    if small.height > bg.height:
        small = small.resize((int(small.width * bg.height * 0.9 / small.height), int(bg.height * 0.9)))
    x = rng.randint(0, bg.width - small.width)
    y = rng.randint(0, max(0, bg.height - small.height))
    bg.paste(small, (x, y))
    return bg


def framed(img: Image.Image, rng: random.Random) -> Image.Image:
    """A border of random width and colour plus a caption band of text."""
    pad = int(img.width * rng.uniform(0.05, 0.2))
    band = int(img.height * rng.uniform(0.12, 0.3))
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    out = Image.new("RGB", (img.width + 2 * pad, img.height + 2 * pad + band), colour)
    out.paste(img, (pad, pad + (band if rng.random() < 0.5 else 0)))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, band // 3))
    y = pad // 2 if out.getpixel((pad, pad)) != colour else out.height - band
    text_colour = tuple(255 - c for c in colour)
    draw.text((pad, y + band // 4), rng.choice(["shared from my phone", "LOOK AT THIS", "lorem ipsum 2026", "#throwback"]),
              fill=text_colour, font=font)
    return out


def overlay(img: Image.Image, rng: random.Random) -> Image.Image:
    """Large semi-transparent text and a solid logo block over the picture."""
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, int(out.width * rng.uniform(0.06, 0.12)))
    font = ImageFont.load_default(size=size)
    for _ in range(rng.randint(1, 3)):
        xy = (rng.randint(0, out.width // 2), rng.randint(0, max(1, out.height - size)))
        draw.text(xy, rng.choice(["SAMPLE", "watermark", "(c) someone", "SALE -50%"]),
                  fill=(255, 255, 255, rng.randint(120, 220)), font=font)
    bw, bh = int(out.width * rng.uniform(0.1, 0.25)), int(out.height * rng.uniform(0.08, 0.2))
    bx, by = rng.choice([(0, 0), (out.width - bw, 0), (0, out.height - bh), (out.width - bw, out.height - bh)])
    draw.rectangle([bx, by, bx + bw, by + bh], fill=(*[rng.randint(0, 255) for _ in range(3)], 255))
    return Image.alpha_composite(out, layer).convert("RGB")


def rephoto(img: Image.Image, rng: random.Random) -> Image.Image:
    """A crude re-photograph: perspective, blur, uneven light, noise, small crop."""
    img = perspective(img, rng)
    a = np.asarray(img).astype(np.float32)
    h, w = a.shape[:2]
    a = cv2.GaussianBlur(a, (0, 0), rng.uniform(0.8, 2.0))
    gx = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.3), w)[None, :, None]
    a = a * gx + np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(3, 10), a.shape)
    a = np.clip(a, 0, 255).astype(np.uint8)
    m = int(min(h, w) * rng.uniform(0.0, 0.1))
    return Image.fromarray(a[m : h - m or h, m : w - m or w])


def combined(img: Image.Image, rng: random.Random) -> Image.Image:
    """A quarter turn or mirror, then framing or an overlay, then a strong crop."""
    img = quarter_turn(img, rng) if rng.random() < 0.5 else img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = framed(img, rng) if rng.random() < 0.5 else overlay(img, rng)
    w, h = img.size
    keep = rng.uniform(0.6, 0.85)
    cw, ch = int(w * keep), int(h * keep)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="source benchmark folder (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="new folder for the hard query set")
    p.add_argument("--seed", type=int, default=2026)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    originals = sorted((args.bench / "originals").glob("*.jpg"))
    distractors = sorted((args.bench / "distractors").glob("*.jpg"))
    if not originals or not distractors:
        p.error(f"no originals/distractors under {args.bench}")
    (args.out / "queries").mkdir(parents=True, exist_ok=True)
    for name in ("originals", "distractors"):
        link = args.out / name
        if not link.exists():
            os.symlink((args.bench / name).resolve(), link)
    edits = ["quarter_turn", "perspective", "picture_in_picture", "framed", "overlay", "rephoto", "combined"]
    rows = []
    n = 0
    for orig in originals:
        img = _rgb(orig)
        for edit in edits:
            out = {
                "quarter_turn": lambda: quarter_turn(img, rng),
                "perspective": lambda: perspective(img, rng),
                "picture_in_picture": lambda: picture_in_picture(img, rng),
                "framed": lambda: framed(img, rng),
                "overlay": lambda: overlay(img, rng),
                "rephoto": lambda: rephoto(img, rng),
                "combined": lambda: combined(img, rng),
            }[edit]()
            out.thumbnail((640, 640))
            n += 1
            name = f"queries/h{n:05d}.jpg"
            out.save(args.out / name, quality=rng.randint(70, 92))
            rows.append((name, f"originals/{orig.name}", edit))
    rng.shuffle(rows)
    with open(args.out / "ground_truth.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["query", "original", "transform"])
        w.writerows(rows)
    print(f"{len(rows)} queries in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
