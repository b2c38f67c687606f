"""Search structures at scale, on synthetic vectors of the CNN's dimension.

For each collection size and each kind (``exact`` = NumPy brute force over the
memory-mapped float16 vectors, ``hnsw``, ``ivfpq``) it reports: build time,
size on disk (vectors + FAISS file), resident memory of the process after
building, single-threaded search latency p50/p99 over 200 queries, and
recall@10 against exact search.

The vectors are unit-length samples around 2000 random centres with noise,
a stand-in for real embeddings (uniform random vectors in 1280-d have no
neighbourhood structure and no index can beat brute force on them).

Run from the repository root::

    .venv/bin/python bench/scale.py                       # 10k and 100k
    .venv/bin/python bench/scale.py --sizes 10000 100000 1000000
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

from bench.common import machine_info, markdown_table, print_header  # noqa: E402
from lookalike.ann import AnnIndex, FILE_NAME, live_bitmap  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_vectors(path: str, n: int, dim: int, seed: int = 0, chunk: int = 50_000) -> np.memmap:
    """``n`` clustered unit vectors as float16 in a raw file; returns a read-only memmap."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    out = np.memmap(path, dtype=np.float16, mode="w+", shape=(n, dim))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, 2000, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    return np.memmap(path, dtype=np.float16, mode="r", shape=(n, dim))


def queries_like(matrix: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = np.asarray(matrix[rng.choice(len(matrix), n, replace=False)], dtype=np.float32)
    q += 0.05 * rng.standard_normal(q.shape).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top10(matrix: np.ndarray, q: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """Ground truth: the exact top 10 rows for every query, in one pass over the matrix."""
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_r = np.zeros((len(q), 10), np.int64)
    for s in range(0, len(matrix), chunk):
        scores = q @ np.asarray(matrix[s : s + chunk], dtype=np.float32).T
        all_s = np.concatenate([best_s, scores], axis=1)
        all_r = np.concatenate([best_r, np.broadcast_to(np.arange(s, s + scores.shape[1]), scores.shape)], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
        best_s, best_r = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_r, top, 1)
    return best_r


def exact_latency_ms(matrix: np.ndarray, q: np.ndarray, chunk: int = 100_000) -> list[float]:
    """Brute force one query at a time, as a single exact search over float16 on disk would run."""
    times = []
    for v in q:
        t = time.perf_counter()
        scores = np.concatenate([
            np.asarray(matrix[s : s + chunk], dtype=np.float32) @ v for s in range(0, len(matrix), chunk)
        ])
        np.argpartition(-scores, 10)[:10]
        times.append(1000 * (time.perf_counter() - t))
    return times


def run(size: int, dim: int, kinds: list[str], workdir: str, ef_values: list[int]) -> list[list[str]]:
    import faiss

    faiss.omp_set_num_threads(1)
    path = os.path.join(workdir, f"vectors-{size}.f16")
    t = time.perf_counter()
    matrix = write_vectors(path, size, dim)
    print(f"[{size}] vectors written in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    q = queries_like(matrix, 200)
    truth = exact_top10(matrix, q)
    exact_ms = exact_latency_ms(matrix, q[: 200 if size <= 100_000 else 10])
    vec_mb = os.path.getsize(path) / 1e6
    rows = [[f"{size:,}", "exact", "-", f"{vec_mb:.0f}", f"{rss_mb():.0f}",
             f"{np.percentile(exact_ms, 50):.2f}", f"{np.percentile(exact_ms, 99):.2f}", "1.000"]]
    bitmap = live_bitmap(np.arange(size), size)
    for kind in kinds:
        before = rss_mb()
        t = time.perf_counter()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # building may use every core
        ann = AnnIndex.build(kind, "cosine", matrix)
        faiss.omp_set_num_threads(1)
        build_s = time.perf_counter() - t
        d = os.path.join(workdir, kind)
        os.makedirs(d, exist_ok=True)
        ann.save(d)
        ann_mb = os.path.getsize(os.path.join(d, FILE_NAME)) / 1e6
        for ef in ef_values if kind == "hnsw" else [None]:
            if ef is not None:
                ann.ef_search = ef
            times, found = [], []
            for v in q:
                t = time.perf_counter()
                _, r = ann.search_rows(v[None], 10, bitmap, 0, matrix)
                times.append(1000 * (time.perf_counter() - t))
                found.append(r[0])
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
            label = kind if ef is None else f"{kind} ef={ef}"
            rows.append([f"{size:,}", label, f"{build_s:.1f}", f"{vec_mb + ann_mb:.0f}",
                         f"{rss_mb():.0f} (+{rss_mb() - before:.0f})",
                         f"{np.percentile(times, 50):.2f}", f"{np.percentile(times, 99):.2f}", f"{recall:.3f}"])
            print(f"[{size}] {label}: built in {build_s:.1f} s, recall@10 {recall:.3f}", file=sys.stderr, flush=True)
        del ann
    del matrix
    os.remove(path)
    return rows


def real_run(bench: Path, kinds: list[str], workdir: str, n_queries: int = 200) -> list[list[str]]:
    """The CNN index of the benchmark gallery, searched with every structure."""
    from lookalike import Index

    gallery = Path(workdir) / "gallery"
    gallery.mkdir()
    for folder in ("originals", "distractors"):
        os.symlink(bench / folder, gallery / folder)
    rows = []
    with Index.create(Path(workdir) / "real-idx", extractor="cnn") as ix:
        t = time.perf_counter()
        report = ix.add(gallery)
        print(f"[real] {report.added} images indexed in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        queries = sorted((bench / "queries").iterdir())[:n_queries]
        vectors = [ix.embed(q) for q in queries]
        truth = [[h.path for h in hits] for hits in ix.search_vectors(np.stack(vectors), 10, exact=True)]
        vec_mb = (Path(ix.path) / "vectors.bin").stat().st_size / 1e6
        import faiss

        for kind in ["exact", *kinds]:
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            t = time.perf_counter()
            ix.set_ann(kind)
            build_s = time.perf_counter() - t
            faiss.omp_set_num_threads(1)
            ann_file = Path(ix.path) / FILE_NAME
            ann_mb = ann_file.stat().st_size / 1e6 if kind != "exact" and ann_file.exists() else 0.0
            times, found = [], []
            for v in vectors:
                t = time.perf_counter()
                hits = ix.search_vectors(v[None], 10)[0]
                times.append(1000 * (time.perf_counter() - t))
                found.append([h.path for h in hits])
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
            rows.append([f"{len(ix):,} (real)", kind, "-" if kind == "exact" else f"{build_s:.1f}",
                         f"{vec_mb + ann_mb:.0f}", f"{rss_mb():.0f}",
                         f"{np.percentile(times, 50):.2f}", f"{np.percentile(times, 99):.2f}", f"{recall:.3f}"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivfpq"])
    parser.add_argument("--real", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "bench",
                        help="benchmark folder for the real-image run (CNN index of originals + distractors); skipped if absent")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[512],
                        help="HNSW search effort(s) to measure on the same graph (default: the library's 512)")
    args = parser.parse_args()
    print_header("lookalike search structures at scale", machine_info())
    rows = []
    with tempfile.TemporaryDirectory(prefix="lookalike-scale-") as workdir:
        if (args.real / "originals").is_dir():
            rows += real_run(args.real, args.kinds, workdir)
        else:
            print(f"[real] {args.real} not found: real-image run skipped", file=sys.stderr)
        for size in args.sizes:
            rows += run(size, args.dim, args.kinds, workdir, args.ef_search)
    header = ["vectors", "kind", "build s", "disk MB", "RSS MB after build", "search p50 ms", "search p99 ms", "recall@10"]
    print(markdown_table(header, rows))
    print()
    print(f"- {args.dim}-d float16 vectors on disk (memory-mapped); searches single-threaded, one query at a time;")
    print("  recall@10 against exact search over the same vectors; builds may use every core.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
