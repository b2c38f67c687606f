"""Build the background set behind the sscd extractor's copy score, and measure its threshold.

The copy score of a hit is the SSCD similarity minus the mean similarity of
the query to its :data:`~lookalike.extractors.sscd.BACKGROUND_NEIGHBOURS`
nearest images of a fixed background set (score normalisation as in Pizzi et
al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022). A
query that resembles many unrelated images (a flat or nearly blank picture,
clip art on white, a page of text) is held to a higher bar than a distinctive
photo, so one threshold means "is a copy" for both.

The background images come from Debian packages that no benchmark of ours
uses (../shared/bench uses gcompris-qt-data, gnome-backgrounds,
tuxpaint-stamps-default and ukui-wallpapers); their versions and licences are
written to ``lookalike/models/sscd_background.json``:

    mkdir -p /tmp/bgpk && cd /tmp/bgpk && apt-get download mate-backgrounds \\
        plasma-workspace-wallpapers lomiri-wallpapers lomiri-wallpapers-20.04 sway-backgrounds \\
        desktop-base scratch pysiogame openclipart-png extremetuxracer-data
    for f in *.deb; do dpkg-deb -x "$f" x/; done
    /tmp/v312/bin/python tools/make_sscd_background.py --root /tmp/bgpk/x --debs /tmp/bgpk

Only the vectors are shipped (``sscd_background_<model>.npy``, float16): no
image and no file of the model package. Images not drawn for the background
are used to measure the threshold: each gets a copy made with random generic
edits (crop, blur, noise, JPEG, colour, mirror, rotation, paste onto another
image, text), and the threshold is the copy score that unrelated pairs of
these images exceed once in 100 000 (``false_positive_rate``); the share of
copies above it is recorded beside it. No benchmark image is involved.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookalike import decode  # noqa: E402
from lookalike.extractors.sscd import BACKGROUND_NEIGHBOURS, MODELS, SscdExtractor, background_term  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent.parent / "lookalike" / "models"
#: Images at least this similar are taken for copies of each other (:func:`distinct`).
SAME = 0.8
#: Share of unrelated pairs allowed above the threshold: 1 in 100 000.
FALSE_POSITIVES = 1e-5
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


def images_under(root: Path) -> list[Path]:
    """Image files over 8 kB; of a wallpaper shipped in several resolutions
    (``NAME/contents/images/WxH.jpg``) only the largest, so no two are copies."""
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file() and p.stat().st_size > 8000)
    best: dict[Path, Path] = {}
    for path in found:
        key = path.parent.parent if path.parent.name == "images" and path.parent.parent.name == "contents" else path
        if key not in best or path.stat().st_size > best[key].stat().st_size:
            best[key] = path
    return sorted(best.values())


def load(path: Path) -> np.ndarray | None:
    try:
        pixels = decode.decode_file(path).pixels
    except decode.DecodeError:
        return None
    return pixels if min(pixels.shape[:2]) >= 64 else None


def distinct(paths: list[Path], n: int) -> list[np.ndarray]:
    """Up to ``n`` decoded images, none a copy of another: packages ship the same
    picture under several names, so an image whose distilled SSCD vector has a
    similarity of at least :data:`SAME` with one already taken is left out."""
    ext = SscdExtractor(model="distilled")
    kept: list[np.ndarray] = []
    vectors = np.zeros((0, ext.dim), np.float32)
    for path in paths:
        if len(kept) >= n:
            break
        image = load(path)
        if image is None:
            continue
        v = ext.embed_prepared([ext.prepare(image)])
        if len(vectors) and float((vectors @ v[0]).max()) >= SAME:
            continue
        kept.append(image)
        vectors = np.concatenate([vectors, v])
    return kept


def edited(img: Image.Image, other: Image.Image, rng: random.Random) -> Image.Image:
    """A copy of ``img`` with two or three random generic edits."""
    steps = rng.sample(["crop", "blur", "noise", "jpeg", "colour", "mirror", "rotate", "paste", "text", "scale"],
                       rng.randint(2, 3))
    for step in steps:
        w, h = img.size
        if step == "crop":
            keep = rng.uniform(0.5, 0.9)
            cw, ch = max(16, int(w * keep)), max(16, int(h * keep))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            img = img.crop((x, y, x + cw, y + ch))
        elif step == "blur":
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 3)))
        elif step == "noise":
            a = np.asarray(img).astype(np.float32)
            a += np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(5, 20), a.shape)
            img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        elif step == "jpeg":
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=rng.randint(8, 40))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        elif step == "colour":
            a = np.asarray(img).astype(np.float32)
            a = a * np.array([rng.uniform(0.6, 1.4) for _ in range(3)]) + rng.uniform(-30, 30)
            img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        elif step == "mirror":
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif step == "rotate":
            img = img.rotate(rng.uniform(-30, 30), expand=True, fillcolor=tuple(rng.randint(0, 255) for _ in range(3)))
        elif step == "paste":
            bg = other.resize((max(64, int(w * rng.uniform(1.5, 2.5))), max(64, int(h * rng.uniform(1.5, 2.5)))))
            bg.paste(img, (rng.randint(0, bg.width - w), rng.randint(0, bg.height - h)))
            img = bg
        elif step == "text":
            draw = ImageDraw.Draw(img)
            font = ImageFont.load_default(size=max(10, h // rng.randint(6, 12)))
            draw.text((rng.randint(0, w // 2), rng.randint(0, h * 3 // 4)), "copy 2026 (c)",
                      fill=tuple(rng.randint(0, 255) for _ in range(3)), font=font)
        elif step == "scale":
            f = rng.uniform(0.3, 0.7)
            img = img.resize((max(32, int(w * f)), max(32, int(h * f))))
    return img


def package_info(debs: Path) -> list[dict[str, str]]:
    out = []
    for deb in sorted(debs.glob("*.deb")):
        fields = {}
        for key in ("Package", "Version"):
            fields[key.lower()] = subprocess.run(["dpkg-deb", "-f", str(deb), key], capture_output=True,
                                                 text=True, check=True).stdout.strip()
        out.append(fields)
    return out


def licences(root: Path, package: str) -> list[str]:
    copyright_file = root / "usr/share/doc" / package / "copyright"
    if not copyright_file.exists():
        return []
    found = {line.split(":", 1)[1].strip() for line in copyright_file.read_text(errors="replace").splitlines()
             if line.startswith("License:")}
    return sorted(found) or ["see the package's copyright file"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="folder the .deb files were unpacked into")
    p.add_argument("--debs", type=Path, required=True, help="folder holding the .deb files (for their versions)")
    p.add_argument("--size", type=int, default=1200, help="background images (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=600, help="images kept for measuring the threshold")
    p.add_argument("--seed", type=int, default=17)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    paths = images_under(args.root)
    rng.shuffle(paths)
    pixels = distinct(paths, args.size + args.pairs)
    background, held_out = pixels[: args.size], pixels[args.size :]
    packages = package_info(args.debs)
    meta: dict = {
        "about": "SSCD vectors of images from these Debian packages (no benchmark uses them); "
                 "made by tools/make_sscd_background.py",
        "packages": [{**p, "licences": licences(args.root, p["package"])} for p in packages],
        "images": len(background), "neighbours": BACKGROUND_NEIGHBOURS, "seed": args.seed, "models": {},
    }
    for model in MODELS:
        ext = SscdExtractor(model=model)
        ext.background = None  # measure raw vectors
        vectors = np.concatenate([ext.embed_prepared([ext.prepare(x) for x in background[i : i + 32]])
                                  for i in range(0, len(background), 32)])
        np.save(MODELS_DIR / f"sscd_background_{model}.npy", vectors.astype(np.float16), allow_pickle=False)
        bg = vectors.astype(np.float16).astype(np.float32)
        # the threshold: copies of held-out images against unrelated held-out images
        originals = [Image.fromarray(x) for x in held_out]
        copies = [edited(img, originals[(i + 1) % len(originals)], rng) for i, img in enumerate(originals)]
        embed = lambda imgs: ext.embed_prepared([ext.prepare(np.asarray(im.convert("RGB"))) for im in imgs])  # noqa: E731
        o, c = embed(originals), embed(copies)
        term = background_term(c, bg)
        sims = c @ o.T - term[:, None]
        positives = np.diag(sims)
        negatives = sims[~np.eye(len(sims), dtype=bool)]
        threshold = float(np.quantile(negatives, 1 - FALSE_POSITIVES))
        meta["models"][model] = {
            "threshold": round(threshold, 4), "false_positive_rate": FALSE_POSITIVES,
            "negative_quantiles": {q: round(float(np.quantile(negatives, q)), 4) for q in (0.5, 0.99, 0.999, 0.9999)},
            "negative_max": round(float(negatives.max()), 4),
            "positive_quantiles": {q: round(float(np.quantile(positives, q)), 4) for q in (0.01, 0.05, 0.1, 0.5)},
            "copies_above_threshold": round(float((positives > threshold).mean()), 4),
            "held_out_images": len(held_out), "unrelated_pairs": int(negatives.size),
        }
        print(model, meta["models"][model])
    (MODELS_DIR / "sscd_background.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
