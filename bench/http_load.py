"""HTTP load: concurrent search requests against a real `lookalike serve` on loopback.

What it measures: the server is started by this script (``python -m
lookalike.cli serve --port 0 --no-access-log``, uvicorn, one process) on a
temporary index of the bundled demo photos (or on ``--index DIR``). Then, for
each ``--mode``, a bounded number of search requests (``--requests``) is sent
by ``--concurrency`` concurrent clients (httpx, asyncio, keep-alive
connections) and the script prints throughput (requests / wall seconds),
latency percentiles (p50, p90, p99, max: from sending the request to having
read the whole answer) and the number of errors (any answer other than 200, or
a transport error).

Modes:

* ``upload``: ``POST /api/search?k=10`` with an image file (multipart): the
  server decodes, embeds and searches. The images are edited copies (crop,
  rotation, grey, ...) of the demo photos, about 10-60 KB each.
* ``id``: ``GET /api/search/{id}?k=10`` for indexed files: the stored vector
  is searched, nothing is decoded or embedded.

``--warmup`` requests per mode are sent first and not counted. Client and
server share the machine, so on a small machine the client's own CPU use
lowers the figures. It only ever talks to 127.0.0.1, and stops after
``--requests`` requests or ``--max-seconds``, whichever comes first.

Run from the repository root::

    .venv/bin/python bench/http_load.py                                  # 500 requests, concurrency 8, both modes
    .venv/bin/python bench/http_load.py --requests 1000 --concurrency 16 --mode upload
    .venv/bin/python bench/http_load.py --index ~/.lookalike/pics --mode id

The report (Markdown) goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_info, markdown_table, print_header  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402  (the same helper the HTTP tests use)

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "lookalike" / "demo" / "images"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_queries(workdir: Path) -> list[tuple[str, bytes]]:
    from lookalike.demo import make_queries as edited

    return [(q.name, q.read_bytes()) for q, _, _ in edited(workdir / "queries", per_image=3)]


async def load(url: str, mode: str, n: int, concurrency: int, warmup: int, max_seconds: float,
               queries: list[tuple[str, bytes]], ids: list[int], k: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = {"next": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one(i: int) -> None:
            start = time.perf_counter()
            try:
                if mode == "upload":
                    name, data = queries[i % len(queries)]
                    r = await client.post("/api/search", params={"k": k}, files={"image": (name, data, "image/jpeg")})
                else:
                    r = await client.get(f"/api/search/{ids[i % len(ids)]}", params={"k": k})
                await r.aread()
                key = None if r.status_code == 200 else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                key = type(e).__name__
            if key:
                errors[key] = errors.get(key, 0) + 1
            return time.perf_counter() - start

        for i in range(warmup):
            await one(i)

        stop_at = time.monotonic() + max_seconds

        async def worker() -> None:
            while time.monotonic() < stop_at:
                i = counter["next"]
                if i >= n:
                    return
                counter["next"] += 1
                latencies.append(await one(i))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "mode": mode, "requests": len(latencies), "concurrency": concurrency,
        "errors": sum(errors.values()), "error_kinds": errors, "seconds": wall,
        "rps": len(latencies) / wall if wall > 0 else 0.0,
        "p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)), "max": float(lat.max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=None, help="serve this index (default: a temp index of the demo photos)")
    ap.add_argument("--extractor", default="cnn", help="extractor of the temp index (default: cnn)")
    ap.add_argument("--requests", type=int, default=500, help="counted requests per mode (default: 500)")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default: 8)")
    ap.add_argument("--mode", action="append", choices=["upload", "id"], help="upload, id (repeatable; default: both)")
    ap.add_argument("--warmup", type=int, default=10, help="uncounted requests first (default: 10)")
    ap.add_argument("-k", type=int, default=10, help="hits per search (default: 10)")
    ap.add_argument("--max-seconds", type=float, default=300, help="stop a mode after this long (default: 300)")
    args = ap.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        ap.error("--requests and --concurrency must be at least 1")
    modes = args.mode or ["upload", "id"]

    from lookalike import Index

    print_header("lookalike HTTP load", machine_info())
    with tempfile.TemporaryDirectory(prefix="lookalike-http-") as tmp:
        work = Path(tmp)
        index = args.index
        if index is None:
            index = work / "idx"
            log(f"indexing the demo photos into {index} ({args.extractor}) ...")
            with Index.create(index, args.extractor) as ix:
                ix.add(DEMO_IMAGES, jobs=1)
        with Index.open(index) as ix:
            ids = [int(i) for i in ix.live().ids]
            info = ix.info()
        if not ids:
            raise SystemExit(f"{index} has no indexed files")
        queries = make_queries(work)
        with LiveServer(index) as server:
            log(f"server: {server.url} (pid {server.proc.pid})")
            rows, results = [], []
            for mode in modes:
                log(f"{mode}: {args.requests} requests, concurrency {args.concurrency} ...")
                r = asyncio.run(load(server.url, mode, args.requests, args.concurrency, args.warmup,
                                     args.max_seconds, queries, ids, args.k))
                results.append(r)
                rows.append([r["mode"], r["requests"], r["concurrency"], r["errors"], f"{r['seconds']:.1f}",
                             f"{r['rps']:.1f}", f"{r['p50']:.1f}", f"{r['p90']:.1f}", f"{r['p99']:.1f}", f"{r['max']:.1f}"])
    extractor = info.manifest["extractor"].get("name")
    print(f"Index: {info.files} files, extractor {extractor}"
          f"{' (temp index of the bundled demo photos)' if args.index is None else ''}; "
          f"{len(queries)} upload queries (edited demo photos), k={args.k}; server: one uvicorn process.\n")
    print(markdown_table(["mode", "requests", "concurrency", "errors", "wall s", "req/s", "p50 ms", "p90 ms",
                          "p99 ms", "max ms"], rows))
    for r in results:
        if r["error_kinds"]:
            print(f"\n{r['mode']} errors: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["error_kinds"].items())))
    sys.exit(1 if any(r["errors"] for r in results) else 0)


if __name__ == "__main__":
    main()
