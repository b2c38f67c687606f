"""Measure the copy descriptor's second rule: a view's best hit, far ahead of the rest, is a copy.

The copy threshold (``tools/make_sscd_background.py``) is strict: unrelated pairs
pass it once in 100 000, and only about a third of harshly edited copies reach
it. A copy under it usually still stands out *among the query's own hits*: its
copy score is well ahead of the next file's, while a query with no copy in the
collection meets a crowd of similar scores. So a search also takes, in each view
of the query (the whole query and each region the copy descriptor looks at), the
best hit as a copy when its copy score is at least ``floor`` and at least
``margin`` ahead of the view's second best.

This script measures both numbers on images no benchmark uses, the same Debian
packages as the background set, split the same way (same seed): the 600
held-out images get a copy each with two or three random generic edits
(:func:`make_sscd_background.edited`; a copy pasted onto the next held-out
image shows that one too, so it is left out of that query's ranking); the collection searched is those 600
originals plus ``--distractors`` further distinct images of the packages. For
every copy, each view is searched twice: with its original in the collection
(does the rule find it?) and without (does the rule take something else for a
copy?). Of the pairs (floor, margin) on a grid, the one kept finds the most
copies while it takes something for a copy in at most ``--false-rate`` of the
queries without one (1%); it is written beside the threshold in
``lookalike/models/sscd_background.json``. No benchmark image is involved.

    /tmp/v312/bin/python tools/calibrate_copy_margin.py --root /tmp/bgpk/x
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_sscd_background import MODELS_DIR, distinct, edited, images_under  # noqa: E402

from lookalike.extractors.sscd import MODELS, SscdExtractor  # noqa: E402
from lookalike.query import MIN_COPY_REGION_SIDE  # noqa: E402
from lookalike.regions import copy_windows  # noqa: E402

FLOORS = np.round(np.arange(0.10, 0.41, 0.02), 2)
MARGINS = np.round(np.arange(0.04, 0.31, 0.02), 2)


def embed(ext: SscdExtractor, images: list[np.ndarray]) -> np.ndarray:
    if not images:
        return np.zeros((0, ext.dim), np.float32)
    return np.concatenate([ext.embed_prepared([ext.prepare(x) for x in images[i : i + 32]])
                           for i in range(0, len(images), 32)])


def best_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best and second-best score."""
    top = -np.partition(-scores, 1, axis=1)[:, :2]
    return top[:, 0], top[:, 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="folder the .deb files were unpacked into")
    p.add_argument("--size", type=int, default=1200, help="background images, as make_sscd_background.py")
    p.add_argument("--pairs", type=int, default=600, help="held-out images, as make_sscd_background.py")
    p.add_argument("--distractors", type=int, default=1500, help="further images in the collection searched")
    p.add_argument("--seed", type=int, default=17, help="make_sscd_background.py's seed (the same split)")
    p.add_argument("--false-rate", type=float, default=0.01)
    p.add_argument("--write", action="store_true", help="record the result in sscd_background.json")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    paths = images_under(args.root)
    rng.shuffle(paths)
    pixels = distinct(paths, args.size + args.pairs + args.distractors)
    held_out = pixels[args.size : args.size + args.pairs]
    others = pixels[args.size + args.pairs :]
    edit_rng = random.Random(args.seed + 1)
    originals = [Image.fromarray(x) for x in held_out]
    copies = [np.asarray(edited(img, originals[(i + 1) % len(originals)], edit_rng).convert("RGB"))
              for i, img in enumerate(originals)]
    meta = json.loads((MODELS_DIR / "sscd_background.json").read_text())
    for model in MODELS:
        ext = SscdExtractor(model=model)
        gallery = np.concatenate([embed(ext, held_out), embed(ext, others)])
        # per copy: its views (the whole copy, then its regions), their copy scores
        found = np.zeros((len(FLOORS), len(MARGINS), len(copies)), bool)
        false = np.zeros_like(found)
        for i, copy in enumerate(copies):
            views = embed(ext, [copy, *copy_windows(copy, MIN_COPY_REGION_SIDE)])
            scores = views @ gallery.T - ext.copy_offsets(views)[:, None]
            # a copy may be pasted onto the next image: that one is a copy too, left out
            scores[:, (i + 1) % len(copies)] = -np.inf
            own = scores[:, i].copy()
            first, second = best_two(scores)
            is_own = scores.argmax(axis=1) == i
            scores[:, i] = -np.inf  # the collection without the original
            first_w, second_w = best_two(scores)
            for a, floor in enumerate(FLOORS):
                for b, margin in enumerate(MARGINS):
                    takes = (first >= floor) & (first - second >= margin)
                    found[a, b, i] = bool((takes & is_own).any()) or bool((own >= ext.copy_threshold()).any())
                    false[a, b, i] = bool(((first_w >= floor) & (first_w - second_w >= margin)).any())
        recall, false_rate = found.mean(axis=2), false.mean(axis=2)
        allowed = false_rate <= args.false_rate
        a, b = np.unravel_index(np.argmax(np.where(allowed, recall, -1)), recall.shape)
        baseline = float(np.mean([bool(x) for x in found[-1, -1]]))  # the strictest pair: ~ threshold alone
        result = {"floor": float(FLOORS[a]), "margin": float(MARGINS[b]),
                  "copies_found": round(float(recall[a, b]), 4), "queries_without_copy_taken": round(float(false_rate[a, b]), 4),
                  "allowed_false_rate": args.false_rate, "copies_found_strictest": round(baseline, 4),
                  "collection": len(gallery), "queries": len(copies)}
        for a2, floor in enumerate(FLOORS):  # per floor, the loosest margin allowed
            ok = np.flatnonzero(allowed[a2])
            if len(ok):
                b2 = ok[0]
                print(f"  {model} floor {floor:.2f} margin {MARGINS[b2]:.2f}: copies found {recall[a2, b2]:.3f}, "
                      f"queries without a copy taken {false_rate[a2, b2]:.3f}")
        print(model, result)
        meta["models"][model]["best_of_view"] = result
    if args.write:
        (MODELS_DIR / "sscd_background.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
