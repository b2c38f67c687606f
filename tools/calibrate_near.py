"""Set the constants of :mod:`lookalike.levels` on images that no benchmark uses.

Each image gets one random *near* edit (resize to 15-100%, JPEG at quality
5-95 or WebP, a mild colour change, stacked one to three deep) and one random
*other* edit (crop, mirror, rotation, quarter turn, caption, border, grey,
strong colour change, a pasted logo, a shift of the view). The script prints
the distribution of :func:`lookalike.levels.differences` for both kinds,
the share of each kind that the current constants call near, and the
constants that would keep 99.5% of near edits.

    # images from Debian packages no benchmark uses, e.g. those of
    # tools/make_sscd_background.py
    .venv/bin/python tools/calibrate_near.py /tmp/bgpk/x --n 800
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookalike import levels  # noqa: E402


COLUMNS = ("aspect", "structure", "worst", "chroma", "shift", "contrast", "turned")


def images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and p.is_file())


def load(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            flat = Image.new("RGB", im.size, "white")
            flat.paste(im, mask=im.split()[3])
    except Exception:
        return None
    if min(flat.size) < 64:
        return None
    flat.thumbnail((1024, 1024))
    return flat


def encoded(img: Image.Image, fmt: str, **kw) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def near_edit(img: Image.Image, rng: random.Random) -> tuple[str, Image.Image]:
    names = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["resize", "jpeg", "webp", "colour"])
        names.append(kind)
        if kind == "resize":
            f = rng.uniform(max(0.15, 48 / min(img.size)), 1.0)  # at least 48 pixels a side
            img = img.resize((max(8, round(img.width * f)), max(8, round(img.height * f))),
                             rng.choice([Image.Resampling.BILINEAR, Image.Resampling.LANCZOS, Image.Resampling.BOX]))
        elif kind == "jpeg":
            img = encoded(img, "JPEG", quality=rng.randint(5, 95))
        elif kind == "webp":
            img = encoded(img, "WEBP", quality=rng.randint(30, 90))
        else:
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.93, 1.07))
            img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.93, 1.07))
            img = ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
    return "+".join(names), img


def other_edit(img: Image.Image, other: Image.Image, rng: random.Random) -> tuple[str, Image.Image]:
    w, h = img.size
    kind = rng.choice(["crop", "mirror", "rotate", "quarter", "caption", "border", "grey", "hue",
                       "strong_light", "logo", "shift"])
    if kind == "crop":
        kw, kh = rng.uniform(0.7, 0.97), rng.uniform(0.7, 0.97)
        cw, ch = round(w * kw), round(h * kh)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out = img.crop((x, y, x + cw, y + ch))
    elif kind == "mirror":
        out = img.transpose(rng.choice([Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM]))
    elif kind == "rotate":
        out = img.rotate(rng.choice([-1, 1]) * rng.uniform(2, 20), expand=rng.random() < 0.5,
                         resample=Image.Resampling.BILINEAR)
    elif kind == "quarter":
        out = img.transpose(rng.choice([Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270]))
    elif kind == "caption":
        out = img.copy()
        d = ImageDraw.Draw(out)
        bh = max(6, round(h * rng.uniform(0.05, 0.15)))
        y = rng.choice([0, h - bh])
        d.rectangle((0, y, w, y + bh), fill=tuple(rng.randint(0, 255) for _ in range(3)))
        d.text((rng.randint(0, w // 3), y + bh // 4), "holiday 2019", fill=(255, 255, 255))
    elif kind == "border":
        out = ImageOps.expand(img, border=max(2, round(w * rng.uniform(0.02, 0.1))),
                              fill=tuple(rng.randint(0, 255) for _ in range(3)))
    elif kind == "grey":
        out = ImageOps.grayscale(img).convert("RGB")
    elif kind == "hue":
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + rng.randint(30, 225)) % 256
        out = Image.fromarray(hsv, "HSV").convert("RGB")
    elif kind == "strong_light":
        out = ImageEnhance.Brightness(img).enhance(rng.choice([rng.uniform(0.5, 0.75), rng.uniform(1.3, 1.6)]))
    elif kind == "logo":
        out = img.copy()
        s = rng.uniform(0.1, 0.25)
        logo = other.resize((max(4, round(w * s)), max(4, round(h * s))))
        out.paste(logo, (rng.randint(0, w - logo.width), rng.randint(0, h - logo.height)))
    else:  # the view shifted by a few per cent, as between two shots
        dx, dy = round(w * rng.uniform(0.02, 0.06)), round(h * rng.uniform(0.02, 0.06))
        out = img.crop((dx, dy, w, h)).resize((w - dx, h - dy))
    return kind, encoded(out, "JPEG", quality=rng.randint(70, 95))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    paths = images_under(args.folder)
    rng.shuffle(paths)
    imgs, low = [], 0
    for path in paths:
        img = load(path)
        if img is None:
            continue
        if levels.low_information(levels.thumb(np.asarray(img))):
            low += 1
            continue
        imgs.append(img)
        if len(imgs) >= args.n:
            break
    near, other = [], []
    for i, img in enumerate(imgs):
        a = levels.thumb(np.asarray(img))
        name, x = near_edit(img, rng)
        near.append((name, levels.differences(a, levels.thumb(np.asarray(x)))))
        name, y = other_edit(img, imgs[(i + 1) % len(imgs)], rng)
        other.append((name, levels.differences(a, levels.thumb(np.asarray(y)))))
    print(f"{len(imgs)} images ({low} low-information ones left out)")
    for label, rows in (("near edits", near), ("other edits", other)):
        d = np.array([r[1] for r in rows])
        print(f"{label}: aspect / mean / worst cell, percentiles 50 90 99 99.5:")
        for j, col in enumerate(COLUMNS):
            print(f"  {col:7s}" + "".join(f" {np.percentile(d[:, j], q):8.3f}" for q in (50, 90, 99, 99.5)))
    near_ok = [levels.near_pair_differences(d) for _, d in near]
    print(f"near edits called near: {np.mean(near_ok):.4f}")
    called = Counter(name for name, d in other if levels.near_pair_differences(d))
    total = Counter(name for name, _ in other)
    print(f"other edits called near: {sum(called.values()) / len(other):.4f} "
          + ", ".join(f"{k} {called[k]}/{total[k]}" for k in sorted(total)))
    missed = Counter(n for n, d in near if not levels.near_pair_differences(d))
    print("near edits missed:", dict(missed.most_common(8)))
    d = np.array([r[1] for r in near])
    print("99.5th percentile of near edits: " + ", ".join(
        f"{col} {np.percentile(d[:, j], 99.5):.3f}" for j, col in enumerate(COLUMNS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
