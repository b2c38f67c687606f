"""The local backend, Milvus Lite and a Milvus server side by side: insert rate, index build,
query latency, recall@10, memory.

Synthetic vectors (unit-length samples around 2000 random centres with noise,
as in ``bench/scale.py``) of the extractor's dimension are committed through
each backend's own store, in batches as ``lookalike index`` commits them (a
batch = one Milvus upsert + one SQLite transaction), as fake files
``/bench/NNNNNNN.jpg``. Then single queries (perturbed stored vectors) go
through ``Index.search_vectors``: FAISS (HNSW from 50k vectors, as ``--ann
auto`` chooses) for the local backend, the collection's HNSW for Milvus.
Recall@10 is against exact search over the same stored (float16) vectors.
"index build" is the local FAISS build, and for Milvus the flush at the end of
a run plus, on a server, the wait until its index covers every vector (Milvus
Lite indexes as it flushes). "peak memory" is this process's peak resident
memory after that backend (local, Milvus Lite: they run inside it) and the
server binary's own peak (``milvus run standalone``, read from /proc). Run from
the repository root::

    .venv/bin/python bench/milvus.py                         # 100k x 128-d (the color extractor)
    .venv/bin/python bench/milvus.py --size 20000 --extractor cnn
    tools/milvus_server.sh start /tmp/msrv /tmp/mdata        # then, with a server:
    .venv/bin/python bench/milvus.py --server http://127.0.0.1:19530 --backends local,server
    .venv/bin/python bench/milvus.py --server http://127.0.0.1:19530 --agreement ../shared/bench --extractor cnn
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command_line, markdown_table  # noqa: E402
from lookalike.backends import open_index  # noqa: E402
from lookalike.store import FileRecord  # noqa: E402


def vector_batches(n: int, dim: int, batch: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` unit-length vectors around 2000 random centres, ``batch`` at a time (float32,
    made as they are needed, so that a million of them never sit in memory at once)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim), dtype=np.float32)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        x = centres[rng.integers(0, 2000, m)] + 0.8 * rng.standard_normal((m, dim), dtype=np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(ix, n: int, dim: int, batch: int, n_queries: int, seed: int = 1) -> tuple[float, np.ndarray]:
    """Commit ``n`` vectors as fake files in batches. Returns the seconds the commits took
    and ``n_queries`` queries: stored vectors picked at random, slightly perturbed."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n, n_queries, replace=False))
    rows: list[np.ndarray] = []
    spent = 0.0
    with ix.store.writing():
        for start, part in zip(range(0, n, batch), vector_batches(n, dim, batch)):
            inside = picked[(picked >= start) & (picked < start + len(part))]
            rows.extend(part[inside - start])
            records = [FileRecord(None, f"/bench/{i:07d}.jpg", 1000 + i, i, f"{i:064x}", 64, 64, "ok")
                       for i in range(start, start + len(part))]
            t = time.perf_counter()
            ix.store.commit(vectors=part, records=records, root="/bench")
            spent += time.perf_counter() - t
    ix._live = None
    q = np.stack(rows)[rng.permutation(n_queries)]
    q += 0.05 * rng.standard_normal(q.shape).astype(np.float32)
    return spent, q / np.linalg.norm(q, axis=1, keepdims=True)


def measure(ix, q: np.ndarray, truth: list[set[str]]) -> tuple[float, float, float]:
    times, found = [], 0
    for v, want in zip(q, truth):
        t = time.perf_counter()
        hits = ix.search_vectors(v[None], 10)[0]
        times.append(1000 * (time.perf_counter() - t))
        found += len({h.path for h in hits} & want)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), found / (10 * len(q))


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of ``pid`` (default: this process), in MB."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def server_pid() -> int | None:
    """The Milvus server binary on this machine (``milvus run standalone``), if one runs here."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if len(cmd) >= 3 and cmd[0].endswith(b"milvus") and cmd[1:3] == [b"run", b"standalone"]:
                return int(entry)
    return None


def wait_indexed(ix, size: int, timeout: float = 7200) -> None:
    """On a server: until the collection's index covers ``size`` vectors."""
    coll = ix.backend.collection
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = coll.client.describe_index(coll.name, "vector")
        if int(info.get("indexed_rows", 0)) >= size:
            return
        time.sleep(1)
    raise TimeoutError("the server's index did not cover the vectors in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--extractor", default="color", help="its dimension is the vectors' (default: color, 128-d)")
    ap.add_argument("--batch", type=int, default=1000, help="vectors per commit")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--backends", default="local,lite", help="comma-separated: local, lite, server (default: %(default)s)")
    ap.add_argument("--server", default=None, metavar="URI",
                    help="a Milvus server for the 'server' backend (token: env LOOKALIKE_MILVUS_TOKEN)")
    ap.add_argument("--collection", default="bench_milvus", help="the server collection (dropped first)")
    ap.add_argument("--agreement", type=Path, default=None, metavar="BENCH",
                    help="instead: a benchmark folder's gallery on the local backend and the server; "
                         "how often both rank the same file first")
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="lookalike-bench-milvus-")
    if args.agreement:
        if not args.server:
            ap.error("--agreement needs --server URI")
        agreement(args.agreement, args.extractor, args.server,
                  {"collection": args.collection, "local": os.path.join(workdir, "server-catalog"),
                   "token": os.environ.get("LOOKALIKE_MILVUS_TOKEN")}, workdir)
        return
    wanted = args.backends.split(",")
    if "server" in wanted and not args.server:
        ap.error("--backends server needs --server URI")
    places = {"local": ("local", os.path.join(workdir, "local"), {}),
              "lite": ("Milvus Lite", os.path.join(workdir, "lite.db"), {}),
              "server": ("Milvus server", args.server, {"collection": args.collection,
                                                         "local": os.path.join(workdir, "server-catalog"),
                                                         "token": os.environ.get("LOOKALIKE_MILVUS_TOKEN")})}
    rows = []
    truth: list[set[str]] | None = None
    for key in wanted:
        name, location, options = places[key]
        if key == "server":
            drop_collection(location, options)
            shutil.rmtree(options["local"], ignore_errors=True)
        with open_index(location, args.extractor, create=True, **options) as ix:
            dim = ix.extractor.dim
            print(f"[{name}] inserting {args.size} x {dim}-d ...", file=sys.stderr, flush=True)
            insert_s, q = fill(ix, args.size, dim, args.batch, args.queries)
            t = time.perf_counter()
            ix.update_ann(save=True)  # local: builds the FAISS structure; Milvus: flushes
            if key == "server":
                wait_indexed(ix, args.size)
            build_s = time.perf_counter() - t
            if truth is None:
                truth = [{h.path for h in hits} for hits in ix.search_vectors(q, 10, exact=True)]
            ix.search_vectors(q[:5], 10)  # warm up (loads, first-call costs)
            p50, p99, recall = measure(ix, q, truth)
            pid = server_pid() if key == "server" else None
            memory = f"{peak_rss_mb(pid):,.0f} (server)" if pid else ("-" if key == "server" else f"{peak_rss_mb():,.0f}")
            rows.append([name, ix.ann_kind(), f"{args.size / insert_s:,.0f}", f"{build_s:.1f}",
                         f"{p50:.2f}", f"{p99:.2f}", f"{recall:.3f}", memory])
            print(f"[{name}] done", file=sys.stderr, flush=True)
    print("# lookalike: local backend and Milvus\n")
    print(f"Command: `{command_line()}`\n")
    print(f"{args.size:,} vectors of {dim} dimensions (extractor {args.extractor}), {args.queries} single "
          f"queries, commits of {args.batch}; {os.cpu_count()} CPUs.\n")
    print(markdown_table(["backend", "search", "insert (vectors/s)", "index build (s)", "query p50 (ms)",
                          "query p99 (ms)", "recall@10 vs exact", "peak memory (MB)"], rows, numeric_from=2))


def agreement(bench: Path, extractor: str, server: str, options: dict, workdir: str) -> None:
    """The bench gallery in a local index and in a collection of the server, every bench
    query searched in both with the same vector: how often the first hit is the same
    file, and how many of the ten are."""
    import csv

    drop_collection(server, options)
    shutil.rmtree(options["local"], ignore_errors=True)
    local_dir = os.path.join(workdir, "agreement-local")
    shutil.rmtree(local_dir, ignore_errors=True)
    with open_index(local_dir, extractor, create=True, keypoints=None) as local, \
            open_index(server, extractor, create=True, keypoints=None, **options) as remote:
        for ix in (local, remote):
            for part in ("originals", "distractors"):
                ix.add(bench / part)
        rows = list(csv.DictReader(open(bench / "ground_truth.csv")))
        same1 = overlap = 0
        for row in rows:
            v = local.embed(bench / row["query"])[None]
            a, b = local.search_vectors(v, 10)[0], remote.search_vectors(v, 10)[0]
            same1 += a[0].path == b[0].path
            overlap += len({h.path for h in a} & {h.path for h in b})
        print(f"\nBench gallery ({len(local)} images, extractor {extractor}), {len(rows)} queries: top-1 the same file "
              f"{same1 / len(rows):.4f}, top-10 overlap {overlap / (10 * len(rows)):.4f} "
              f"(local {local.ann_kind()}, server {remote.ann_kind()}).")


def drop_collection(uri: str, options: dict) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, **({"token": options["token"]} if options.get("token") else {}))
    if client.has_collection(options["collection"]):
        client.drop_collection(options["collection"])
    client.close()


if __name__ == "__main__":
    main()
