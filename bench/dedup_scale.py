"""Duplicates at scale, end to end on vectors: HNSW neighbours of every vector, then grouping.

    .venv/bin/python bench/dedup_scale.py --n 1000000

Synthetic unit vectors of the copy descriptor's dimension (512), float16 on
disk as an index stores them: clustered background vectors (2000 centres,
as ``bench/scale.py``) and planted groups of 4 copies (a tenth of the
collection; each copy the original plus a little noise). Steps, each timed:
write the vectors, build the HNSW structure (``lookalike.ann``, all cores),
find every vector's 10 nearest others through it (in batches, as
``Index.neighbours`` does), keep the pairs scoring at least the threshold, and
group them (``lookalike.grouping.group_pairs``, the anchor check included).
Printed: times, peak resident memory, and how many planted groups came out
whole. Not included: the pixel checks of the ``near`` and ``edited`` levels,
which read a small thumbnail of each file in a pair (see docs/duplicates.md
for their rate), and embedding the files.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookalike.ann import AnnIndex, live_bitmap  # noqa: E402
from lookalike.grouping import group_pairs, keeper_rank  # noqa: E402

GROUP = 4


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_vectors(path: str, n: int, dim: int, seed: int = 0, chunk: int = 50_000) -> tuple[np.memmap, int]:
    """``n`` unit vectors as float16; the first ``planted`` are groups of GROUP copies."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    planted = (n // 10) // GROUP * GROUP
    out = np.memmap(path, dtype=np.float16, mode="w+", shape=(n, dim))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, 2000, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows = np.arange(start, start + m)
        inside = rows < planted
        if inside.any():  # each planted row: its group's first vector plus noise
            first = rows[inside] // GROUP * GROUP
            base = x[first - start] if (first >= start).all() else np.asarray(out[first], np.float32)
            y = base + 0.008 * rng.standard_normal(base.shape).astype(np.float32)
            y[rows[inside] % GROUP == 0] = base[rows[inside] % GROUP == 0]
            x[inside] = y / np.linalg.norm(y, axis=1, keepdims=True)
        out[start : start + m] = x
    out.flush()
    del out
    return np.memmap(path, dtype=np.float16, mode="r", shape=(n, dim)), planted


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--ef", type=int, default=None, help="HNSW efSearch (default: lookalike's)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="dedup-scale-") as work:
        t0 = time.perf_counter()
        matrix, planted = write_vectors(os.path.join(work, "v.f16"), args.n, args.dim)
        t_write = time.perf_counter() - t0
        faiss.omp_set_num_threads(cores)
        t0 = time.perf_counter()
        ann = AnnIndex.build("hnsw", "cosine", matrix)
        t_build = time.perf_counter() - t0
        if args.ef:
            ann.ef_search = args.ef
        bitmap = live_bitmap(np.arange(args.n), args.n)
        t0 = time.perf_counter()
        a_parts, b_parts, s_parts = [], [], []
        for start in range(0, args.n, args.batch):
            q = np.asarray(matrix[start : start + args.batch], np.float32)
            scores, rows = ann.search_rows(q, args.k + 1, bitmap, 0, matrix)
            own = np.arange(start, start + len(q))[:, None]
            keep = (rows != own) & (rows >= 0) & (scores >= args.threshold)
            a_parts.append(np.broadcast_to(own, rows.shape)[keep])
            b_parts.append(rows[keep])
            s_parts.append(scores[keep])
        a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
        t_neigh = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        rank = keeper_rank(rng.integers(1, 10**7, args.n), rng.integers(1, 10**7, args.n), rng.integers(0, 10**9, args.n))

        def sim(i, js):
            return np.asarray(matrix[np.atleast_1d(js)], np.float32) @ np.asarray(matrix[i], np.float32)

        t0 = time.perf_counter()
        groups = group_pairs(args.n, a, b, s, args.threshold, rank, sim)
        t_group = time.perf_counter() - t0
        whole = sum(1 for _, m, _ in groups
                    if len(m) == GROUP and m.max() < planted and len(set((m // GROUP).tolist())) == 1)
        print(f"n={args.n:,} dim={args.dim} planted groups={planted // GROUP:,} found={len(groups):,} "
              f"(whole planted groups: {whole:,}); pairs={len(a):,}")
        print(f"write {t_write:.1f} s, HNSW build {t_build:.1f} s ({cores} cores), neighbours {t_neigh:.1f} s "
              f"(k={args.k}, efSearch {ann.ef_search}), grouping {t_group:.1f} s; total {t_write + t_build + t_neigh + t_group:.1f} s; "
              f"peak RSS {peak_mib():.0f} MiB (vectors {matrix.nbytes / 2**20:.0f} MiB on disk)")


if __name__ == "__main__":
    main()
