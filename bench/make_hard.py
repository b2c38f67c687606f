"""Make a harder copy-detection query set from a benchmark folder's originals.

The public benchmark's edits are mild (crops, a 15 degree turn, recompression,
colour); users meet harsher ones. This script writes a second query set, in
the same layout, with edits of other kinds: quarter turns and mirrors,
perspective warps, the picture framed inside something else (pasted on a
screenshot-like page, a border with a caption band), text and logo
overlays, blur with noise, heavy JPEG after a strong downscale, a
screenshot of the picture in an application window (title bar, toolbar,
scroll bar, status bar), the picture pasted at 30-50% of the width onto
*another gallery photo*, and combinations. Parameters are drawn at random per
query (seeded), so nothing can be tuned to one fixed value.

A picture pasted onto another gallery photo shows two originals. Its row in
``ground_truth.csv`` names the photo behind it in the ``ignore`` column
(paths separated by ``;``); ``lookalike eval`` leaves ignored images out of
that query's ranking before it scores it, so finding the background first is
neither a hit nor a miss.

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


def blur_noise(img: Image.Image, rng: random.Random) -> Image.Image:
    """A strong Gaussian blur, then coloured or grey sensor-like noise."""
    a = np.asarray(img).astype(np.float32)
    a = cv2.GaussianBlur(a, (0, 0), rng.uniform(1.5, 4.0))
    noise = np.random.default_rng(rng.randint(0, 2**31))
    sigma = rng.uniform(8, 25)
    if rng.random() < 0.5:
        a = a + noise.normal(0, sigma, a.shape)
    else:
        a = a + noise.normal(0, sigma, a.shape[:2])[..., None]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def heavy_jpeg(img: Image.Image, rng: random.Random) -> tuple[Image.Image, int]:
    """Downscaled to 15-40% of the width (sometimes scaled back up), saved at JPEG quality 5-20."""
    scale = rng.uniform(0.15, 0.4)
    small = img.resize((max(16, int(img.width * scale)), max(16, int(img.height * scale))), Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        small = small.resize(img.size, Image.Resampling.BICUBIC)
    return small, rng.randint(5, 20)


def screenshot(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture shown in an application window: title bar, toolbar, scroll bar, status bar."""
    width = rng.randint(800, 1280)
    title, tools, status, scroll = rng.randint(24, 36), rng.randint(30, 56), rng.randint(18, 30), rng.randint(10, 18)
    view_w = width - scroll - rng.randint(0, 40)
    scale = rng.uniform(0.6, 1.0) * view_w / img.width
    shown = img.resize((max(16, int(img.width * scale)), max(16, int(img.height * scale))))
    height = title + tools + shown.height + status + rng.randint(0, 120)
    chrome = tuple(rng.randint(30, 250) for _ in range(3))
    out = Image.new("RGB", (width, height), tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, width, title], fill=chrome)
    for i in range(3):  # window buttons
        x = width - (i + 1) * (title + 6)
        draw.ellipse([x, 5, x + title - 10, title - 5], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    font = ImageFont.load_default(size=max(10, title // 2))
    draw.text((12, title // 4), rng.choice(["image.jpg - Viewer", "Photos", "IMG_2041.JPG (73%)", "New tab"]),
              fill=(20, 20, 20), font=font)
    draw.rectangle([0, title, width, title + tools], fill=tuple(max(0, c - 20) for c in chrome))
    for x in range(8, rng.randint(120, 400), tools):  # toolbar icons
        draw.rectangle([x, title + 6, x + tools - 14, title + tools - 6], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    draw.rectangle([width // 3, title + 8, width - 80, title + tools - 8], fill=(250, 250, 250))
    x = rng.randint(0, max(0, view_w - shown.width))
    out.paste(shown, (x, title + tools))
    draw.rectangle([width - scroll, title + tools, width, height - status], fill=(220, 220, 220))
    top = rng.randint(title + tools, max(title + tools, height - status - 60))
    draw.rectangle([width - scroll + 2, top, width - 2, top + 50], fill=(140, 140, 140))
    draw.rectangle([0, height - status, width, height], fill=chrome)
    draw.text((8, height - status + 2), f"{shown.width} x {shown.height}  {rng.randint(10, 100)}%", fill=(20, 20, 20), font=font)
    return out


def paste_on_photo(img: Image.Image, background: Image.Image, rng: random.Random) -> Image.Image:
    """The picture scaled to 30-50% of another gallery photo's width and pasted somewhere on it."""
    bg = background.copy()
    scale = rng.uniform(0.3, 0.5) * bg.width / img.width
    small = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))))
    if small.height > bg.height * 0.9:
        small = small.resize((max(8, int(small.width * bg.height * 0.9 / small.height)), int(bg.height * 0.9)))
    bg.paste(small, (rng.randint(0, bg.width - small.width), rng.randint(0, max(0, bg.height - small.height))))
    return bg


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
    edits = ["quarter_turn", "perspective", "picture_in_picture", "framed", "overlay", "rephoto", "combined",
             "blur_noise", "heavy_jpeg", "screenshot", "paste_on_photo"]
    gallery = [*originals, *distractors]
    rows = []
    n = 0
    for orig in originals:
        img = _rgb(orig)
        for edit in edits:
            ignore = ""
            quality = rng.randint(70, 92)
            if edit == "paste_on_photo":
                behind = rng.choice([g for g in gallery if g != orig])
                ignore = f"{behind.parent.name}/{behind.name}"
                out = paste_on_photo(img, _rgb(behind), rng)
            elif edit == "heavy_jpeg":
                out, quality = heavy_jpeg(img, rng)
            else:
                out = {
                "quarter_turn": lambda: quarter_turn(img, rng),
                "perspective": lambda: perspective(img, rng),
                "picture_in_picture": lambda: picture_in_picture(img, rng),
                "framed": lambda: framed(img, rng),
                "overlay": lambda: overlay(img, rng),
                "rephoto": lambda: rephoto(img, rng),
                "combined": lambda: combined(img, rng),
                "blur_noise": lambda: blur_noise(img, rng),
                "screenshot": lambda: screenshot(img, rng),
            }[edit]()
            out.thumbnail((640, 640))
            n += 1
            name = f"queries/h{n:05d}.jpg"
            out.save(args.out / name, quality=quality)
            rows.append((name, f"originals/{orig.name}", edit, ignore))
    rng.shuffle(rows)
    with open(args.out / "ground_truth.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["query", "original", "transform", "ignore"])
        w.writerows(rows)
    print(f"{len(rows)} queries in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
