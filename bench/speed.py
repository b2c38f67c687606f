"""Indexing throughput, query latency and JPEG draft-decoding gain of lookalike.

What it measures:

* **Indexing throughput** (images/s), for each extractor and each ``--jobs``
  value: wall time of one ``Index.add`` on the whole image folder in a fresh
  index, end to end (listing, hashing, worker process start-up, decoding,
  embedding, committing; for ``cnn`` also the onnxruntime session start-up).
* **Query latency**: ``Index.search(path, k=10)`` for images that are *not* in
  the index (so each query is read, decoded, embedded and searched), one call
  at a time. The first call is reported on its own ("first query ms", it pays
  one-time costs such as mapping the vectors); p50 / p95 are over the next N.
* **JPEG draft gain**: mean time of ``lookalike.decode.decode_bytes(data,
  min_side=224)`` (reduced-scale DCT decoding, used by ``cnn``) against
  ``min_side=None`` (full decode), bytes already in memory, on (a) the
  benchmark originals and (b) 20 synthetic 4000x3000 photo-like JPEGs
  (smooth noise, quality 90) made in a temp folder.

Images: by default the benchmark's ``originals/`` + ``distractors/`` (a temp
folder of symlinks to both); queries come from its ``queries/``. Without the
benchmark the bundled demo photos (``lookalike/demo/images``) are indexed and
edited copies of them are the queries.

Run from the repository root::

    .venv/bin/python bench/speed.py                                  # cnn, jobs 1 and 2
    .venv/bin/python bench/speed.py --extractor cnn --extractor phash --jobs 1 --jobs 4
    .venv/bin/python bench/speed.py --images ~/Pictures --queries 50

Progress goes to stderr; the report (Markdown) to stdout. Numbers depend on
the machine: the header says which one, and with how many CPUs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import metrics  # noqa: E402
from bench.common import (  # noqa: E402
    DEFAULT_BENCH, extractor_label, machine_info, markdown_table, print_header, slug,
)
from lookalike import Index, decode  # noqa: E402
from lookalike.extractors import registry  # noqa: E402
from lookalike.sources import walk  # noqa: E402

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "lookalike" / "demo" / "images"
DRAFT_MIN_SIDE = 224
SYNTHETIC_COUNT = 20
SYNTHETIC_SIZE = (4000, 3000)  # width, height


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- inputs ------------------------------------------------------------------------
def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` in the order the indexer walks them."""
    return [Path(e.path) for e in walk(folder)]


def bench_gallery(bench: Path, workdir: Path) -> Path:
    """A folder holding symlinks to the benchmark's ``originals/`` and ``distractors/``."""
    gallery = workdir / "gallery"
    gallery.mkdir()
    for name in ("originals", "distractors"):
        (gallery / name).symlink_to((bench / name).absolute(), target_is_directory=True)
    return gallery


def edited_queries(images: list[Path], count: int, workdir: Path) -> list[Path]:
    """``count`` edited copies (crop, rotation, ...) of ``images``, cycling through both."""
    from PIL import Image

    from lookalike.demo import EDITS

    out = workdir / "queries"
    out.mkdir()
    made = []
    pairs = itertools.cycle(itertools.product(EDITS.items(), images))
    for i, ((edit_name, edit), source) in zip(range(count), pairs):
        with Image.open(source) as im:
            target = out / f"q{i:05d}-{edit_name}-{source.stem}.jpg"
            edit(im.convert("RGB")).save(target, quality=85)
        made.append(target)
    return made


def choose_inputs(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[Path], list[Path], list[str]]:
    """Gallery folder, query images, draft-test JPEGs and notes on where they came from."""
    bench = args.bench
    has_bench = (bench / "originals").is_dir() and (bench / "distractors").is_dir()
    notes = []
    if args.images is not None:
        gallery = args.images
        notes.append(f"Gallery: {gallery}.")
    elif has_bench:
        gallery = bench_gallery(bench, workdir)
        notes.append(f"Gallery: {bench}/originals + distractors (symlinked into a temp folder).")
    else:
        gallery = DEMO_IMAGES
        log(f"benchmark not found at {bench}: using the bundled demo images in {DEMO_IMAGES}")
        notes.append(f"Benchmark not found at {bench}: gallery = the bundled demo images ({DEMO_IMAGES}).")

    wanted = args.queries + 1  # one warm-up query, then N timed ones
    if (bench / "queries").is_dir():
        queries = image_files(bench / "queries")[:wanted]
        notes.append(f"Queries: the first {len(queries)} files of {bench}/queries (1 warm-up + {len(queries) - 1} timed).")
    else:
        queries = edited_queries(image_files(gallery), wanted, workdir)
        notes.append(f"Queries: {len(queries)} edited copies of gallery images (1 warm-up + {len(queries) - 1} timed).")

    if (bench / "originals").is_dir():
        draft_set = image_files(bench / "originals")
        notes.append(f"Draft test (a): {bench}/originals.")
    else:
        draft_set = image_files(gallery)
        notes.append(f"Draft test (a): the gallery images ({gallery}), the benchmark originals being absent.")
    return gallery, queries, draft_set, notes


# -- indexing and querying ---------------------------------------------------------
def index_throughput(spec: str, gallery: Path, jobs: int, index_dir: Path) -> tuple[Index, dict[str, Any]]:
    """Time one ``Index.add`` of ``gallery`` into a fresh index; the index stays open."""
    index = Index.create(index_dir, extractor=registry.parse(spec))
    started = time.perf_counter()
    report = index.add(gallery, jobs=jobs)
    seconds = time.perf_counter() - started
    embedded = report.added + report.updated
    return index, {
        "images": embedded,
        "skipped": report.skipped,
        "seconds": seconds,
        "images_per_s": embedded / seconds if seconds > 0 else float("nan"),
    }


def query_latency(index: Index, queries: list[Path]) -> dict[str, Any]:
    """Time ``index.search(q, k=10)`` per query; the first one is the warm-up."""
    times_ms = []
    for q in queries:
        started = time.perf_counter()
        index.search(q, k=10)
        times_ms.append(1000 * (time.perf_counter() - started))
    timed = times_ms[1:]
    return {
        "first_ms": times_ms[0] if times_ms else float("nan"),
        "timed": len(timed),
        "p50_ms": metrics.percentile(timed, 50),
        "p95_ms": metrics.percentile(timed, 95),
        "mean_ms": sum(timed) / len(timed) if timed else float("nan"),
    }


# -- JPEG draft decoding ---------------------------------------------------------
def synthetic_photos(folder: Path, count: int = SYNTHETIC_COUNT, size=SYNTHETIC_SIZE, seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth multi-scale noise plus grain), quality 90."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    grain = rng.standard_normal((512, 512, 3), dtype=np.float32) * 3.0  # sensor grain, tiled
    grain = np.tile(grain, (height // 512 + 1, width // 512 + 1, 1))[:height, :width]
    for i in range(count):
        img = grain.copy()
        for cells, amplitude in ((6, 90.0), (40, 35.0), (250, 12.0)):  # coarse to fine structure
            small = rng.normal(0.0, amplitude, (cells * height // width + 1, cells, 3)).astype(np.float32)
            img += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        pixels = np.clip(img + 128.0, 0, 255).astype(np.uint8)
        path = folder / f"synthetic{i:02d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def mean_decode_ms(blobs: list[bytes], min_side: int | None, repeat: int) -> float:
    """Mean milliseconds of one ``decode_bytes`` call over ``blobs`` x ``repeat``."""
    started = time.perf_counter()
    for _ in range(repeat):
        for data in blobs:
            decode.decode_bytes(data, min_side=min_side)
    return 1000 * (time.perf_counter() - started) / (len(blobs) * repeat)


def draft_gain(files: list[Path], repeat: int) -> dict[str, Any]:
    """Full vs reduced-scale decoding of ``files`` (read into memory first)."""
    blobs = [f.read_bytes() for f in files]
    drafted, example = 0, ""
    for data in blobs:  # also warms up the decoder
        d = decode.decode_bytes(data, min_side=DRAFT_MIN_SIDE)
        if d.pixels.shape[1] < d.width:
            drafted += 1
            example = example or f"{d.width}x{d.height} -> {d.pixels.shape[1]}x{d.pixels.shape[0]}"
    full = mean_decode_ms(blobs, None, repeat)
    draft = mean_decode_ms(blobs, DRAFT_MIN_SIDE, repeat)
    return {
        "images": len(blobs),
        "drafted": drafted,
        "full_ms": full,
        "draft_ms": draft,
        "speedup": full / draft if draft > 0 else float("nan"),
        "example": example or "none reduced",
    }


# -- output --------------------------------------------------------------------
def _f(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def speed_table(rows: list[dict[str, Any]]) -> str:
    header = ["extractor", "jobs", "images", "index s", "index images/s",
              "first query ms", "query p50 ms", "query p95 ms"]
    body = [[r["extractor"], r["jobs"], r["index"]["images"], _f(r["index"]["seconds"]),
             _f(r["index"]["images_per_s"]), _f(r["query"]["first_ms"]),
             _f(r["query"]["p50_ms"], 2), _f(r["query"]["p95_ms"], 2)] for r in rows]
    return markdown_table(header, body, numeric_from=1)


def draft_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    header = ["images", "count", "draft applied", "full decode ms", f"min_side={DRAFT_MIN_SIDE} ms",
              "speed-up", "example (drafted)"]
    body = [[name, r["images"], r["drafted"], _f(r["full_ms"], 2), _f(r["draft_ms"], 2),
             f"{_f(r['speedup'], 2)}x", r["example"]] for name, r in rows]
    return markdown_table(header, body, numeric_from=1)


# -- main --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, help="folder to index (default: the benchmark gallery)")
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH,
                   help=f"benchmark folder for the default images and queries (default: {DEFAULT_BENCH})")
    p.add_argument("--extractor", action="append", metavar="NAME",
                   help="extractor name or JSON spec; repeat for several (default: cnn)")
    p.add_argument("--jobs", action="append", type=int, metavar="N",
                   help="decoding processes for Index.add; repeat for several (default: 1 and 2)")
    p.add_argument("--queries", type=int, default=200, metavar="N",
                   help="timed queries per run, after one warm-up query (default: 200)")
    p.add_argument("--draft-repeat", type=int, default=3, metavar="N",
                   help="passes over each image set in the draft test (default: 3)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    extractors = args.extractor or ["cnn"]
    jobs_values = args.jobs or [1, 2]
    if args.images is not None and not args.images.is_dir():
        print(f"speed.py: no such folder: {args.images}", file=sys.stderr)
        return 2
    for spec in extractors:  # fail fast on a typo, before any slow indexing
        try:
            registry.create(registry.parse(spec))
        except Exception as e:
            print(f"speed.py: bad --extractor {spec!r}: {e}", file=sys.stderr)
            return 2
    machine = machine_info()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="lookalike-speed-") as tmp:
        workdir = Path(tmp)
        gallery, queries, draft_set, notes = choose_inputs(args, workdir)
        rows = []
        for spec, jobs in itertools.product(extractors, jobs_values):
            label = extractor_label(spec)
            log(f"[{label}, jobs={jobs}] indexing {gallery}")
            index, indexing = index_throughput(spec, gallery, jobs, workdir / f"{slug(label)}-j{jobs}")
            with index:
                log(f"[{label}, jobs={jobs}] {indexing['images']} images in {indexing['seconds']:.1f} s; "
                    f"{len(queries)} queries")
                latency = query_latency(index, queries)
            rows.append({"extractor": label, "jobs": jobs, "index": indexing, "query": latency})

        log(f"draft test: {len(draft_set)} files, then {SYNTHETIC_COUNT} synthetic "
            f"{SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]} JPEGs")
        gen_started = time.perf_counter()
        synthetic = synthetic_photos(workdir / "synthetic")
        gen_seconds = time.perf_counter() - gen_started
        draft_rows = [
            ("(a) " + ("benchmark originals" if (args.bench / "originals").is_dir() else "gallery images"),
             draft_gain(draft_set, args.draft_repeat)),
            (f"(b) synthetic {SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]} q90", draft_gain(synthetic, args.draft_repeat)),
        ]
    total = time.perf_counter() - started

    print_header("lookalike speed", machine)
    print("## Indexing and query latency\n")
    print(speed_table(rows))
    print()
    print("## JPEG draft decoding (decode_bytes from memory)\n")
    print(draft_table(draft_rows))
    print()
    for line in notes:
        print(f"- {line}")
    for r in rows:
        if r["index"]["skipped"]:
            print(f"- {r['extractor']} jobs={r['jobs']}: {r['index']['skipped']} files could not be indexed.")
    print(f"- index s: wall time of Index.add in a fresh index (worker start-up included); "
          f"query times: Index.search(path, k=10), one call at a time, on images not in the index.")
    print(f"- Draft test: mean over {args.draft_repeat} pass(es) over each set, after one warm-up pass; \"draft applied\" = images whose shorter side "
          f"exceeds 2 x {DRAFT_MIN_SIDE} px, the only ones decode_bytes reduces. "
          f"Synthetic images generated in {gen_seconds:.1f} s.")
    print(f"- Total time: {total:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
