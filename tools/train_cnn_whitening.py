"""Learn the ``cnn`` extractor's copy whitening (``whiten: "copy"``) from augmented pairs.

Learned whitening as in Radenović, Tolias & Chum (2018, "Fine-tuning CNN image
retrieval with no human annotation", section 3.3): from matching pairs
``(x, x')`` = (an image, a randomly edited copy of it), whiten by the inverse
square root of the covariance of the pair differences (``C_S``), then rotate
by the principal axes of the whitened training descriptors (PCA), keeping the
leading ``dims``. Copies then differ in the low-variance directions that edits
do not move, and distinct images in the high-variance ones.

Training images come ONLY from these Debian 12 ("bookworm") packages, none of
which the benchmark (``shared/bench``: gcompris-qt-data, gnome-backgrounds,
tuxpaint-stamps-default, ukui-wallpapers) uses; licences as their
``debian/copyright`` states them:

==============================  ======================  ==============================================
package                         version                 licence (of the images used)
==============================  ======================  ==============================================
openclipart-png                 1:0.18+dfsg-19          public domain (CC PD dedication), clip art
wesnoth-1.16-data               1:1.16.9-1              GPL-2+ (portraits, story art, terrain, units)
endless-sky-data                0.9.8-1.2               CC-BY-SA-4.0 / CC-BY-SA-3.0 / PD per file
                                                        (landscape photos, ships, planets, outfits)
stellarium-data                 0.22.2-1                GPL-2+ (package); nebula photos and sky
                                                        culture drawings credited per file
plasma-workspace-wallpapers     4:5.27.5-2              GPL-2+ / LGPL-3 / CC-BY-SA per wallpaper
mate-backgrounds                1.26.0-1                GPL-2+
desktop-base                    12.0.6+nmu1~deb12u1     GPL-2+ / GPL-2 / CC-BY-SA per theme
lomiri-wallpapers-16.04         20.04.0-2               CC-BY-SA-3.0 / CC-BY-4.0 / CC-BY-SA-4.0
sway-backgrounds                1.7-6                   Expat
frozen-bubble-data              2.212-11                GPL-2
==============================  ======================  ==============================================

The exact file list (3104 images) is written next to each whitening as
``cnn_copy_whitening_gem[_ms].sources.json`` (package, version, licence, path).

Shipped (float16, row 0 = mean, then 1024 projection rows, ~2.6 MB each):
``lookalike/models/cnn_copy_whitening_gem.npy`` (``pooling: "gem"``) and
``cnn_copy_whitening_gem_ms.npy`` (``pooling: "gem", multiscale: true``), both
with ``--dims 1024 --shrink 0.3`` (chosen on 450 held-out training images).
On ``shared/bench`` (R@1 overall / mAP labels) and ``bench/make_hard.py``'s
queries (R@1): default ``cnn`` 0.987 / 0.472 / 0.876; ``gem`` 0.989 / 0.449 /
0.881; ``gem`` + ``copy`` 0.992 / 0.518 / 0.920; ``gem`` + ``multiscale`` +
``copy`` 0.995 / 0.547 / 0.954. (An ``avg`` whitening was also learned: 0.991 /
0.503 / 0.894, dominated by ``gem`` at the same cost, so not shipped.)

Edits (each drawn at random per copy, seeded; generic, not the benchmark's):
random resized crop (area 25-100%, aspect 3:4-4:3), horizontal / vertical flip,
rotation by -35..35 degrees or a quarter turn, a mild perspective warp, colour
jitter (brightness, contrast, saturation, hue, gamma) or greyscale, Gaussian
blur, Gaussian noise, downscaling, JPEG at quality 5-85, pasting onto another
training image / noise / a flat colour at 30-85% of its size, a border, and
random text. Two copies per image.

Reproduce (downloads ~550 MB of .deb files with ``apt-get download``, unpacks
them under ``--work`` with ``dpkg-deb -x``; no root install; 2 CPU cores: ~30 min):

    .venv/bin/python tools/train_cnn_whitening.py --work /tmp/cnn-whitening               # gem
    .venv/bin/python tools/train_cnn_whitening.py --work /tmp/cnn-whitening --multiscale  # gem_ms

Only numpy, OpenCV, Pillow and onnxruntime are used (through lookalike's own
``cnn`` extractor for the features).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookalike.extractors.cnn import CnnExtractor, resize_centre_crop  # noqa: E402

Image.MAX_IMAGE_PIXELS = None
SEED = 20240601
MODELS = Path(__file__).resolve().parent.parent / "lookalike" / "models"

# package, version, licence, path prefixes to take images from, cap per folder, cap in all
SOURCES = [
    ("openclipart-png", "1:0.18+dfsg-19", "public domain (Creative Commons PD dedication)",
     ["usr/share/openclipart/png/"], 12, 1800),
    ("wesnoth-1.16-data", "1:1.16.9-1", "GPL-2+",
     ["usr/share/games/wesnoth/1.16/data/"], 20, 800),
    ("endless-sky-data", "0.9.8-1.2", "CC-BY-SA-4.0 / CC-BY-SA-3.0 / public domain (per file)",
     ["usr/share/games/endless-sky/images/"], 300, 700),
    ("stellarium-data", "0.22.2-1", "GPL-2+ (package); per-file credits in the package",
     ["usr/share/stellarium/nebulae/", "usr/share/stellarium/skycultures/",
      "usr/share/stellarium/landscapes/"], 120, 450),
    ("plasma-workspace-wallpapers", "4:5.27.5-2", "GPL-2+ / LGPL-3 / CC-BY-SA (per wallpaper)",
     ["usr/share/wallpapers/"], 1, 100),
    ("mate-backgrounds", "1.26.0-1", "GPL-2+", ["usr/share/backgrounds/"], 100, 100),
    ("desktop-base", "12.0.6+nmu1~deb12u1", "GPL-2+ / GPL-2 / CC-BY-SA-4.0 (per theme)",
     ["usr/share/desktop-base/"], 3, 60),
    ("lomiri-wallpapers-16.04", "20.04.0-2", "CC-BY-SA-3.0 / CC-BY-4.0 / CC-BY-SA-4.0 (per file)",
     ["usr/share/"], 100, 100),
    ("sway-backgrounds", "1.7-6", "Expat", ["usr/share/backgrounds/"], 100, 100),
    ("frozen-bubble-data", "2.212-11", "GPL-2", ["usr/share/games/frozen-bubble/"], 30, 60),
]
EXTS = (".png", ".jpg", ".jpeg", ".webp")
MIN_SIDE = 128
LONG_SIDE = 640  # images are shrunk to this before anything (like the benchmark's queries)
WORDS = ["sale", "photo", "copy", "2019", "hello", "map", "news", "draft", "@user", "sample", "© me",
         "weekend", "look", "demo", "free", "scan", "blog", "top 10", "wow", "#tbt"]


# -- the training images ---------------------------------------------------------------
def fetch(work: Path) -> None:
    """``apt-get download`` each source package (pinned version) and unpack it with ``dpkg-deb -x``."""
    debs, unpacked = work / "debs", work / "unpacked"
    debs.mkdir(parents=True, exist_ok=True)
    for pkg, version, *_ in SOURCES:
        target = unpacked / pkg
        if target.is_dir():
            continue
        have = list(debs.glob(f"{pkg}_*.deb"))
        if not have:
            subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=debs, check=True)
            have = list(debs.glob(f"{pkg}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(have[0]), str(target)], check=True)


def _usable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < MIN_SIDE or max(w, h) > 6 * min(w, h):
                return False
            if im.mode in ("RGBA", "LA", "P"):
                a = np.asarray(im.convert("RGBA").resize((64, 64)))[..., 3]
                if (a > 16).mean() < 0.15:  # mostly transparent: a halo, a mask, a tiny sprite
                    return False
            g = np.asarray(im.convert("L").resize((64, 64)), np.float32)
            return float(g.std()) > 6.0  # not a flat fill
    except Exception:
        return False


def collect(work: Path, rng: random.Random) -> list[dict]:
    """The training images: ``[{"package", "version", "license", "path"}]`` (path inside the package)."""
    chosen = []
    for pkg, version, licence, prefixes, per_folder, cap in SOURCES:
        root = work / "unpacked" / pkg
        folders: dict[str, list[str]] = {}
        for prefix in prefixes:
            for dirpath, _, files in os.walk(root / prefix):
                for f in sorted(files):
                    if f.lower().endswith(EXTS) and "screenshot" not in f.lower():
                        rel = os.path.relpath(os.path.join(dirpath, f), root)
                        # a wallpaper's sizes are one picture: group by the wallpaper's folder
                        key = rel.split("/contents/")[0] if "/contents/" in rel else os.path.dirname(rel)
                        folders.setdefault(key, []).append(rel)
        picked = []
        for key in sorted(folders):
            files = sorted(folders[key])
            if "/contents/" in files[0]:  # the largest size of the wallpaper
                files = sorted(files, key=lambda r: os.path.getsize(root / r), reverse=True)
            else:
                rng.shuffle(files)
            got = 0
            for rel in files:
                if got >= per_folder:
                    break
                if _usable(root / rel):
                    picked.append(rel)
                    got += 1
        rng.shuffle(picked)
        picked = sorted(picked[:cap])
        chosen += [{"package": pkg, "version": version, "license": licence, "path": p} for p in picked]
        print(f"{pkg}: {len(picked)} images", file=sys.stderr)
    return chosen


def load(path: Path, rng: random.Random) -> np.ndarray:
    """RGB uint8, longest side <= LONG_SIDE; transparency flattened onto white or a random colour."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            bg = (255, 255, 255) if rng.random() < 0.7 else tuple(rng.randint(0, 255) for _ in range(3))
            base = Image.new("RGB", im.size, bg)
            base.paste(im, mask=im.split()[3])
            im = base
        im = im.convert("RGB")
        s = LONG_SIDE / max(im.size)
        if s < 1:
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        return np.asarray(im)


# -- random edits ------------------------------------------------------------------------
def _resized_crop(a, rng):
    h, w = a.shape[:2]
    for _ in range(10):
        area = rng.uniform(0.25, 1.0) * h * w
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 16 <= cw <= w and 16 <= ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return a[y : y + ch, x : x + cw]
    return a


def _rotate(a, rng):
    if rng.random() < 0.35:
        return np.ascontiguousarray(np.rot90(a, rng.choice([1, 2, 3])))
    h, w = a.shape[:2]
    angle = rng.uniform(-35, 35)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    if rng.random() < 0.5:  # expand the canvas
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * s + w * c), int(h * c + w * s)
        m[0, 2] += nw / 2 - w / 2
        m[1, 2] += nh / 2 - h / 2
        w, h = nw, nh
    fill = tuple(rng.choice([0, 255, rng.randint(0, 255)]) for _ in range(3))
    return cv2.warpAffine(a, m, (w, h), borderValue=fill)


def _perspective(a, rng):
    h, w = a.shape[:2]
    j = lambda: rng.uniform(0, 0.12)  # noqa: E731
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[w * j(), h * j()], [w * (1 - j()), h * j()], [w * (1 - j()), h * (1 - j())],
                      [w * j(), h * (1 - j())]])
    return cv2.warpPerspective(a, cv2.getPerspectiveTransform(src, dst), (w, h),
                               borderValue=tuple(rng.randint(0, 255) for _ in range(3)))


def _colour(a, rng):
    if rng.random() < 0.2:
        g = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        return np.repeat(g[..., None], 3, axis=2)
    x = a.astype(np.float32) / 255.0
    x = x * rng.uniform(0.6, 1.5)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.5, 1.6) + mean  # contrast
    x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.4)  # gamma
    hsv = cv2.cvtColor((x * 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.2, 1.8), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _blur(a, rng):
    return cv2.GaussianBlur(a, (0, 0), rng.uniform(0.6, 3.5))


def _noise(a, rng, nrng):
    return np.clip(a + nrng.normal(0, rng.uniform(3, 25), a.shape), 0, 255).astype(np.uint8)


def _downscale(a, rng):
    h, w = a.shape[:2]
    s = rng.uniform(0.12, 0.6)
    return cv2.resize(a, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)


def _jpeg(a, rng):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=rng.randint(5, 85))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _paste(a, rng, nrng, others):
    h, w = a.shape[:2]
    kind = rng.random()
    s = rng.uniform(0.3, 0.85)
    bw, bh = max(w, round(w / s * rng.uniform(0.8, 1.25))), max(h, round(h / s * rng.uniform(0.8, 1.25)))
    if kind < 0.5 and others:
        bg = cv2.resize(others[rng.randrange(len(others))], (bw, bh), interpolation=cv2.INTER_AREA)
    elif kind < 0.75:
        bg = nrng.integers(0, 256, (max(1, bh // 16), max(1, bw // 16), 3), dtype=np.uint8)
        bg = cv2.resize(bg, (bw, bh), interpolation=cv2.INTER_LINEAR)
    else:
        bg = np.full((bh, bw, 3), [rng.randint(0, 255) for _ in range(3)], np.uint8)
    bg = bg.copy()
    x, y = rng.randint(0, bw - w), rng.randint(0, bh - h)
    bg[y : y + h, x : x + w] = a
    return bg


def _border(a, rng):
    t = max(2, round(min(a.shape[:2]) * rng.uniform(0.02, 0.15)))
    colour = [rng.randint(0, 255) for _ in range(3)]
    return cv2.copyMakeBorder(a, t, t, t, t, cv2.BORDER_CONSTANT, value=colour)


def _text(a, rng):
    im = Image.fromarray(a)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 4)):
        size = max(8, round(min(im.size) * rng.uniform(0.04, 0.18)))
        font = ImageFont.load_default(size=size)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        xy = (rng.randint(0, max(1, im.width - size)), rng.randint(0, max(1, im.height - size)))
        draw.text(xy, words, font=font, fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return np.asarray(im)


def augment(a: np.ndarray, rng: random.Random, nrng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    """A randomly edited copy of RGB image ``a``: a random subset of the edits, in a fixed order."""
    if rng.random() < 0.6:
        a = _resized_crop(a, rng)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    if rng.random() < 0.08:
        a = a[::-1]
    a = np.ascontiguousarray(a)
    edits = [  # (chance, edit), applied in this order
        (0.25, lambda x: _rotate(x, rng)), (0.12, lambda x: _perspective(x, rng)), (0.5, lambda x: _colour(x, rng)),
        (0.15, lambda x: _border(x, rng)), (0.25, lambda x: _paste(x, rng, nrng, others)),
        (0.25, lambda x: _text(x, rng)), (0.3, lambda x: _blur(x, rng)), (0.25, lambda x: _downscale(x, rng)),
        (0.3, lambda x: _noise(x, rng, nrng)), (0.5, lambda x: _jpeg(x, rng)),
    ]
    for chance, edit in edits:
        if rng.random() < chance:
            a = edit(a)
    return np.ascontiguousarray(a)


# -- descriptors -----------------------------------------------------------------------------
def pooled(ext: CnnExtractor, images: list[np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Un-normalised ``avg`` and ``gem`` (p=3) pools of the feature maps at input ``size``."""
    out = {"avg": [], "gem": []}
    for start in range(0, len(images), 32):
        batch = np.stack([resize_centre_crop(a, size) for a in images[start : start + 32]])
        fmap = ext.feature_maps(batch)
        out["avg"].append(fmap.mean(axis=(2, 3)))
        out["gem"].append(np.cbrt((np.maximum(fmap, 1e-6) ** 3).mean(axis=(2, 3))))
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def features(work: Path, chosen: list[dict], copies: int, sizes: list[int]) -> dict[str, np.ndarray]:
    """``{"avg_224": (n, 1 + copies, 1280), ...}``: pools of each image and its copies.

    Cached per input size under ``work``; the copies are the same for every size
    (the random edits are drawn in the same order whatever is computed).
    """
    cache = {size: work / f"features_{len(chosen)}_{copies}_{size}.npz" for size in sizes}
    todo = [size for size in sizes if not cache[size].exists()]
    if todo:
        rng, nrng = random.Random(SEED + 1), np.random.default_rng(SEED + 1)
        ext = CnnExtractor(threads=int(os.environ.get("THREADS", "0")) or None)
        parts: dict[int, dict[str, list[np.ndarray]]] = {size: {} for size in todo}
        recent: list[np.ndarray] = []
        for start in range(0, len(chosen), 64):
            group = []
            for item in chosen[start : start + 64]:
                a = load(work / "unpacked" / item["package"] / item["path"], rng)
                group.append([a] + [augment(a, rng, nrng, recent) for _ in range(copies)])
                recent = (recent + [a])[-50:]
            flat = [im for g in group for im in g]
            for size in todo:
                for pool, v in pooled(ext, flat, size).items():
                    parts[size].setdefault(f"{pool}_{size}", []).append(v.reshape(len(group), 1 + copies, -1))
            print(f"features: {start + len(group)}/{len(chosen)}", file=sys.stderr, flush=True)
        for size in todo:
            np.savez(cache[size], **{k: np.concatenate(v) for k, v in parts[size].items()})
    feats: dict[str, np.ndarray] = {}
    for size in sizes:
        with np.load(cache[size], allow_pickle=False) as z:
            feats |= {k: z[k] for k in z.files}
    return feats


# -- learned whitening ---------------------------------------------------------------------
def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def learn_whitening(x: np.ndarray, dims: int, shrink: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (d,), projection (dims, d))`` from ``x``: ``(n, 1 + copies, d)`` L2-normalised descriptors.

    ``C_S`` = mean of ``(x - x')(x - x')^T`` over (image, copy) pairs, shrunk
    towards a multiple of the identity by ``shrink`` (it is estimated from
    fewer pairs than it has entries); whitening ``C_S^{-1/2}``; then the
    principal axes of all whitened descriptors, leading ``dims`` first.
    """
    x = np.asarray(x, np.float64)
    n, k, d = x.shape
    diffs = (x[:, 1:] - x[:, :1]).reshape(-1, d)
    cs = diffs.T @ diffs / len(diffs)
    cs = (1 - shrink) * cs + shrink * np.trace(cs) / d * np.eye(d)
    ev, evec = np.linalg.eigh(cs)
    p1 = (evec / np.sqrt(np.maximum(ev, 1e-12))) @ evec.T  # C_S^{-1/2}
    flat = x.reshape(-1, d)
    mean = flat.mean(0)
    w = (flat - mean) @ p1.T
    cd = w.T @ w / len(w)
    ev2, evec2 = np.linalg.eigh(cd)
    order = np.argsort(ev2)[::-1][:dims]
    p = evec2[:, order].T @ p1
    return mean.astype(np.float32), p.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/cnn-whitening"), help="download / cache folder")
    p.add_argument("--out", type=Path, help="the .npy to write, sources .json beside it (default: "
                   "lookalike/models/cnn_copy_whitening_<pooling>[_ms].npy, the file the extractor loads)")
    p.add_argument("--copies", type=int, default=2, help="edited copies per training image")
    p.add_argument("--pooling", default="gem", choices=["avg", "gem"])
    p.add_argument("--multiscale", action="store_true", help="pool at 224 and 320 and sum (cnn multiscale)")
    p.add_argument("--dims", type=int, default=1024, help="leading axes kept (shipped: 1024)")
    p.add_argument("--shrink", type=float, default=0.3)
    args = p.parse_args(argv)
    sizes = [224, 320] if args.multiscale else [224]
    if args.out is None:
        args.out = MODELS / f"cnn_copy_whitening_{args.pooling}{'_ms' if args.multiscale else ''}.npy"
    fetch(args.work)
    chosen = collect(args.work, random.Random(SEED))
    feats = features(args.work, chosen, args.copies, sizes)
    x = l2n(sum(l2n(feats[f"{args.pooling}_{s}"]) for s in sizes))
    mean, proj = learn_whitening(x, args.dims, args.shrink)
    table = np.concatenate([mean[None], proj]).astype(np.float16)  # row 0: the mean; float16 halves the file
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, table, allow_pickle=False)
    meta = {
        "what": "cnn copy whitening: row 0 = mean, rows 1.. = projection (leading axes first)",
        "method": "learned whitening (Radenovic et al. 2018) on (image, random edited copy) pairs",
        "pooling": args.pooling, "multiscale": args.multiscale, "sizes": sizes, "dtype": "float16", "dims": args.dims, "shrink": args.shrink,
        "copies": args.copies, "seed": SEED, "images": len(chosen),
        "script": "tools/train_cnn_whitening.py",
        "packages": sorted({(c["package"], c["version"], c["license"]) for c in chosen}),
        "files": [[c["package"], c["path"]] for c in chosen],
    }
    args.out.with_suffix(".sources.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} {table.shape} from {len(chosen)} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
