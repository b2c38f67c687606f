"""Duplicate grouping on the public benchmark, and a synthetic scale run.

    .venv/bin/python bench/dedup.py --extractor cnn --extractor phash [--sweep]
    .venv/bin/python bench/dedup.py --extractor default --levels [--bench /tmp/hard17]
    .venv/bin/python bench/dedup.py --synthetic 1000000

``--levels``: every level (exact, near, edited) at its default threshold:
pairwise precision and recall over all true pairs (edited), recall over the
pairs of the near kinds of edit (re-encoded, resized: jpeg10, down25,
heavy_jpeg), and how many pairs of an original with a cropped, mirrored or
rotated copy a level put together. A query made by pasting a picture onto
another gallery photo (``ignore`` in ground_truth.csv) also shows that photo:
that pair counts neither way. The distractors hold recoloured variants of
the same clip-art, which are edited copies of each other but count as wrong
pairs; the precision without pairs of two distractors is printed beside.

Benchmark: originals + distractors + queries are indexed together; each
original with its queries is one true group, every distractor a singleton.
Pairwise precision = share of predicted same-group pairs that are true pairs;
recall = share of true pairs that are predicted. ``--sweep`` prints the
grid the default thresholds were chosen from (best F1, one value per
extractor). Synthetic: groups of near-copies among random unit vectors, pairs
from each vector's 10 nearest (planted mates + random), grouped with the same
code; time and peak RSS are reported.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_BENCH  # noqa: E402
from lookalike import Index  # noqa: E402
from lookalike.grouping import candidates, default_threshold, group_pairs, keeper_rank  # noqa: E402


def pair_count(sizes) -> int:
    return sum(s * (s - 1) // 2 for s in sizes)


def evaluate(groups, truth: dict[str, str]) -> tuple[float, float, float]:
    """Pairwise precision and recall of ``groups`` against ``truth`` (path -> true group),
    and the precision not counting pairs of two distractors (the distractors hold
    recoloured variants of the same clip-art, which a duplicate finder may rightly group)."""
    true_sizes = Counter(truth.values())
    total_true = pair_count(true_sizes.values())
    predicted = correct = dd = 0
    for g in groups:
        labels = Counter(truth.get(m.path, m.path) for m in g.members)
        predicted += pair_count([len(g.members)])
        correct += pair_count(labels.values())
        n_d = sum(1 for m in g.members if truth.get(m.path, "").startswith("distractors/"))
        dd += pair_count([n_d])
    precision = correct / predicted if predicted else 1.0
    recall = correct / total_true if total_true else 1.0
    p_no_dd = correct / (predicted - dd) if predicted - dd else 1.0
    return precision, recall, p_no_dd


#: Kinds of edit that keep the picture as it is: re-encoded, resized.
NEAR_KINDS = {"jpeg10", "down25", "heavy_jpeg"}
#: Kinds that crop, mirror or rotate: never grouped at ``near``.
GEOMETRIC_KINDS = {"crop60", "crop40off", "rot15", "hflip", "quarter_turn", "perspective", "combined"}


def level_scores(groups, truth: dict[str, str], transforms: dict[str, str], ignored: set[frozenset]) -> dict:
    """Pairwise figures of one level's groups (see the module docstring)."""
    orig_of = truth
    kinds = {q: t for q, t in transforms.items()}
    predicted = correct = geometric = dd = 0
    near_found = 0
    for g in groups:
        paths = [m.path for m in g.members]
        for i in range(len(paths)):
            for j in range(i + 1, len(paths)):
                x, y = paths[i], paths[j]
                if frozenset((x, y)) in ignored:
                    continue
                predicted += 1
                dd += "/distractors/" in x and "/distractors/" in y
                same = orig_of.get(x, x) == orig_of.get(y, y)
                correct += same
                if same:
                    kx, ky = kinds.get(x), kinds.get(y)
                    if (kx is None and ky in GEOMETRIC_KINDS) or (ky is None and kx in GEOMETRIC_KINDS):
                        geometric += 1
                    if all(k is None or k in NEAR_KINDS for k in (kx, ky)) and (kx or ky):
                        near_found += 1
    sizes = Counter(orig_of.values())
    total = pair_count(sizes.values())
    near_sizes = Counter(orig_of[q] for q, t in kinds.items() if t in NEAR_KINDS)
    near_total = pair_count([n + 1 for n in near_sizes.values()])
    return {"groups": len(groups), "pairs": predicted,
            "precision": correct / predicted if predicted else 1.0,
            "precision w/o dd": correct / (predicted - dd) if predicted - dd else 1.0,
            "recall": correct / total if total else 1.0,
            "near recall": near_found / near_total if near_total else 1.0,
            "geometric pairs": geometric}


def run_levels(args) -> None:
    from lookalike.grouping import level_threshold
    from lookalike.levels import LEVELS

    work = Path(args.work or tempfile.mkdtemp(prefix="dedup-levels-"))
    bench = Path(args.bench)
    gallery, truth, transforms = bench_collection(bench, work)
    ignored = set()
    with open(bench / "ground_truth.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("ignore"):
                ignored.add(frozenset((str(gallery / row["query"]), str(gallery / row["ignore"]))))
    print(f"collection: {len(truth)} images ({bench}; {len(ignored)} pasted-picture pairs ignored)")
    print("| extractor | level | threshold | groups | pairs | precision | precision w/o distractor pairs "
          "| recall | near recall | original + crop/mirror/rotation pairs | group s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.extractor:
        idx = work / f"idx-{name}"
        if not (idx / "manifest.json").exists():
            with Index.create(idx, extractor=None if name == "default" else name) as ix:
                ix.add(gallery, jobs=args.jobs)
        with Index.open(idx) as ix:
            for level in LEVELS:
                thr = None if level == "exact" else level_threshold(ix, level) if args.threshold is None else args.threshold
                t0 = time.perf_counter()
                groups = ix.duplicates(threshold=thr, k=args.k, level=level)
                took = time.perf_counter() - t0
                r = level_scores(groups, truth, transforms, ignored)
                shown = "-" if thr is None else f"{thr:.3f}"
                print(f"| {name} | {level} | {shown} | {r['groups']} | {r['pairs']} | {r['precision']:.3f} "
                      f"| {r['precision w/o dd']:.3f} "
                      f"| {r['recall']:.3f} | {r['near recall']:.3f} | {r['geometric pairs']} | {took:.1f} |")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def bench_collection(bench: Path, work: Path):
    """A folder of symlinks to originals, distractors and queries, and the truth map."""
    gallery = work / "collection"
    if not gallery.exists():
        gallery.mkdir(parents=True)
        for sub in ("originals", "distractors", "queries"):
            os.symlink(bench / sub, gallery / sub)
    truth, transforms = {}, {}
    for sub in ("originals", "distractors"):
        for p in sorted((bench / sub).iterdir()):
            truth[str(gallery / sub / p.name)] = f"{sub}/{p.name}"
    with open(bench / "ground_truth.csv", newline="") as f:
        for row in csv.DictReader(f):
            truth[str(gallery / row["query"])] = row["original"]
            transforms[str(gallery / row["query"])] = row["transform"]
    return gallery, truth, transforms


def copy_recall(groups, truth: dict[str, str], transforms: dict[str, str]) -> dict[str, float]:
    """Per transform: share of edited copies put in the same group as their original."""
    where = {m.path: n for n, g in enumerate(groups) for m in g.members}
    orig_path = {v: k for k, v in truth.items() if v == k.split("/collection/")[-1]}
    hit, total = Counter(), Counter()
    for q, t in transforms.items():
        total[t] += 1
        o = orig_path.get(truth[q])
        if q in where and where.get(o) == where[q]:
            hit[t] += 1
    out = {t: hit[t] / total[t] for t in sorted(total)}
    out["all"] = sum(hit.values()) / sum(total.values())
    return out


def run_bench(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="dedup-bench-"))
    gallery, truth, transforms = bench_collection(Path(args.bench), work)
    recalls = []
    print(f"collection: {len(truth)} images ({gallery})")
    print("| extractor | threshold | groups | precision | recall | F1 | precision w/o distractor pairs | index s | group s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    sweeps = []
    for name in args.extractor:
        idx = work / f"idx-{name}"
        t0 = time.perf_counter()
        if not (idx / "manifest.json").exists():
            with Index.create(idx, extractor=name) as ix:
                ix.add(gallery, jobs=args.jobs)
        t_index = time.perf_counter() - t0
        with Index.open(idx) as ix:
            thr = args.threshold if args.threshold is not None else default_threshold(
                ix.store.manifest.extractor, ix.store.manifest.metric)
            t0 = time.perf_counter()
            groups = ix.duplicates(threshold=thr, k=args.k)
            t_group = time.perf_counter() - t0
            p, r, pdd = evaluate(groups, truth)
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            print(f"| {name} | {thr:.3f} | {len(groups)} | {p:.3f} | {r:.3f} | {f1:.3f} | {pdd:.3f} | {t_index:.1f} | {t_group:.2f} |")
            recalls.append((name, copy_recall(groups, truth, transforms)))
            if args.sweep:
                lo = 0.5 if ix.store.manifest.metric != "hamming" else 0.7
                cand = candidates(ix, lo, args.k)
                grid = (np.arange(lo, 0.99, 0.025) if ix.store.manifest.metric != "hamming"
                        else np.arange(48, 64) / 64)  # 16 .. 1 differing bits of 64
                for t in grid:
                    for kt_name, kt in (("keeper", None), ("none", -np.inf)):
                        gs = cand.groups(float(t), kt)
                        p, r, _ = evaluate(gs, truth)
                        f1 = 2 * p * r / (p + r) if p + r else 0.0
                        sweeps.append((name, float(t), kt_name, len(gs), p, r, f1))
    if recalls:
        cols = list(recalls[0][1])
        print("\nEdited copies grouped with their original, per transform:\n")
        print("| extractor | " + " | ".join(cols) + " |")
        print("| --- |" + " ---: |" * len(cols))
        for name, rec in recalls:
            print(f"| {name} | " + " | ".join(f"{rec[c]:.3f}" for c in cols) + " |")
    if sweeps:
        print("\n| extractor | threshold | keeper check | groups | precision | recall | F1 |")
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
        for name, t, kt, n, p, r, f1 in sweeps:
            print(f"| {name} | {t:.4f} | {kt} | {n} | {p:.3f} | {r:.3f} | {f1:.3f} |")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def run_synthetic(n: int, dim: int = 32, group: int = 4, k: int = 10, seed: int = 0) -> None:
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_groups = n // (2 * group)  # half of the vectors are in planted groups of `group`
    base = rng.standard_normal((n, dim)).astype(np.float32)
    planted = n_groups * group
    centres = base[:n_groups]
    noise = rng.standard_normal((planted, dim)).astype(np.float32) * 0.1
    base[:planted] = np.repeat(centres, group, axis=0) + noise
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # candidate pairs as neighbours() would give them: the planted mates plus random others
    a_parts, b_parts = [], []
    idx = np.arange(planted)
    gid = idx // group
    for off in range(1, group):
        mate = gid * group + (idx % group + off) % group
        a_parts.append(idx), b_parts.append(mate)
    for _ in range(k - (group - 1)):
        a_parts.append(np.arange(n)), b_parts.append(rng.integers(0, n, n))
    for _ in range(group - 1):
        a_parts.append(np.arange(planted, n)), b_parts.append(rng.integers(0, n, n - planted))
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    s = np.empty(len(a), np.float32)
    for i in range(0, len(a), 1 << 20):  # in slices: keep the setup's own peak small
        s[i:i + (1 << 20)] = np.einsum("ij,ij->i", base[a[i:i + (1 << 20)]], base[b[i:i + (1 << 20)]])
    t_setup = time.perf_counter() - t0
    rank = keeper_rank(rng.integers(1, 10**7, n), rng.integers(1, 10**7, n), rng.integers(0, 10**9, n))

    def sim(i, js):
        return base[js] @ base[i]

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    groups = group_pairs(n, a, b, s, 0.9, rank, sim)
    t_group = time.perf_counter() - t0
    tracemalloc.start()  # a second, traced run: the grouping's own peak of (NumPy) allocations
    group_pairs(n, a, b, s, 0.9, rank, sim)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact = sum(1 for _, m, _ in groups if len(m) == group)
    print(f"synthetic: n={n} dim={dim} pairs={len(a)} planted groups={n_groups} found={len(groups)} "
          f"(exactly {group} members: {exact}); setup {t_setup:.1f} s, grouping {t_group:.1f} s, "
          f"peak RSS {rss / 1024:.0f} MiB (at start {rss_start / 1024:.0f}, before grouping {rss0 / 1024:.0f} MiB; "
          f"grouping's own allocations peak {traced / 2**20:.0f} MiB; vectors {base.nbytes / 2**20:.0f} MiB, pairs {(a.nbytes + b.nbytes + s.nbytes) / 2**20:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=str(DEFAULT_BENCH))
    ap.add_argument("--extractor", action="append", default=[])
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--levels", action="store_true", help="Every duplicate level at its default threshold.")
    ap.add_argument("--work", default=None, help="Keep indexes here (reused on the next run).")
    ap.add_argument("--synthetic", type=int, default=0, help="Also group N synthetic vectors.")
    args = ap.parse_args()
    if args.extractor and args.levels:
        run_levels(args)
    elif args.extractor:
        run_bench(args)
    if args.synthetic:
        run_synthetic(args.synthetic)


if __name__ == "__main__":
    main()
