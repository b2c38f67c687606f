"""The local backend and Milvus Lite side by side: insert rate, query latency, recall@10.

Synthetic vectors (unit-length samples around 2000 random centres with noise,
as in ``bench/scale.py``) of the extractor's dimension are committed through
each backend's own store, in batches as ``lookalike index`` commits them (a
batch = one Milvus upsert + one SQLite transaction), as fake files
``/bench/NNNNNNN.jpg``. Then single queries (perturbed stored vectors) go
through ``Index.search_vectors``: FAISS (HNSW from 50k vectors, as ``--ann
auto`` chooses) for the local backend, the collection's HNSW for Milvus.
Recall@10 is against exact search over the same stored (float16) vectors.
Run from the repository root::

    .venv/bin/python bench/milvus.py                         # 100k x 128-d (the color extractor)
    .venv/bin/python bench/milvus.py --size 20000 --extractor cnn
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command_line, markdown_table  # noqa: E402
from lookalike.backends import open_index  # noqa: E402
from lookalike.store import FileRecord  # noqa: E402


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    x = centres[rng.integers(0, 2000, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def queries(matrix: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = matrix[rng.choice(len(matrix), n, replace=False)].copy()
    q += 0.05 * rng.standard_normal(q.shape).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def fill(ix, matrix: np.ndarray, batch: int) -> float:
    """Commit ``matrix`` as fake files in batches; returns seconds."""
    started = time.perf_counter()
    with ix.store.writing():
        for start in range(0, len(matrix), batch):
            part = matrix[start : start + batch]
            records = [FileRecord(None, f"/bench/{i:07d}.jpg", 1000 + i, i, f"{i:064x}", 64, 64, "ok")
                       for i in range(start, start + len(part))]
            ix.store.commit(vectors=part, records=records, root="/bench")
    ix._live = None
    return time.perf_counter() - started


def measure(ix, q: np.ndarray, truth: list[set[str]]) -> tuple[float, float, float]:
    times, found = [], 0
    for v, want in zip(q, truth):
        t = time.perf_counter()
        hits = ix.search_vectors(v[None], 10)[0]
        times.append(1000 * (time.perf_counter() - t))
        found += len({h.path for h in hits} & want)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), found / (10 * len(q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--extractor", default="color", help="its dimension is the vectors' (default: color, 128-d)")
    ap.add_argument("--batch", type=int, default=1000, help="vectors per commit")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="lookalike-bench-milvus-")
    rows = []
    truth: list[set[str]] | None = None
    for name, location in (("local", os.path.join(workdir, "local")), ("Milvus Lite", os.path.join(workdir, "lite.db"))):
        with open_index(location, args.extractor, create=True) as ix:
            dim = ix.extractor.dim
            matrix = vectors(args.size, dim)
            q = queries(matrix, args.queries)
            print(f"[{name}] inserting {args.size} x {dim}-d ...", file=sys.stderr, flush=True)
            insert_s = fill(ix, matrix, args.batch)
            t = time.perf_counter()
            ix.update_ann(save=True)  # local: builds the FAISS structure; Milvus: nothing (it indexes on insert)
            build_s = time.perf_counter() - t
            if truth is None:
                truth = [{h.path for h in hits} for hits in ix.search_vectors(q, 10, exact=True)]
            ix.search_vectors(q[:5], 10)  # warm up (loads, first-call costs)
            p50, p99, recall = measure(ix, q, truth)
            rows.append([name, ix.ann_kind(), f"{args.size / insert_s:,.0f}", f"{build_s:.1f}",
                         f"{p50:.2f}", f"{p99:.2f}", f"{recall:.3f}"])
            print(f"[{name}] done", file=sys.stderr, flush=True)
    print("# lookalike: local backend vs Milvus Lite\n")
    print(f"Command: `{command_line()}`\n")
    print(f"{args.size:,} vectors of {dim} dimensions (extractor {args.extractor}), {args.queries} single "
          f"queries, commits of {args.batch}; {os.cpu_count()} CPUs.\n")
    print(markdown_table(["backend", "search", "insert (vectors/s)", "index build (s)", "query p50 (ms)",
                          "query p99 (ms)", "recall@10 vs exact"], rows, numeric_from=2))


if __name__ == "__main__":
    main()
