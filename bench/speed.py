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

Optional sections (see ``--help``):

* ``--photos DIR`` (from ``bench/make_photos.py``): indexing with the default
  configuration on camera-sized photos (``DIR/1mp``, ``DIR/12mp``, ``DIR/heic``,
  ``DIR/mixed``), next to the **decode floor** and the **inference-only limit**
  measured in the same run (``bench/photo_speed.py`` says how).
* ``--baselines``: on the same gallery files (first ``--baseline-files``), the
  OpenCV tutorial's pipeline (``cv2.imread`` + ``kaze-concat`` + brute-force
  cosine over a NumPy matrix) and a plain ``imagehash.phash`` loop, both in
  this process, next to lookalike's ``kaze-concat``, ``phash`` and ``cnn``
  (``Index.add`` + ``Index.search``): images/s and per-query ms.
* ``--hashes`` (on by default): indexing throughput of phash, ahash, dhash,
  whash and colorhash on the gallery (and the 1 MP set with ``--photos``);
  target >= 300 images/s on 2 cores.

``--no-index`` / ``--no-draft`` / ``--no-hashes`` leave out those sections.

Images: by default the benchmark's ``originals/`` + ``distractors/`` (a temp
folder of symlinks to both); queries come from its ``queries/``. Without the
benchmark the bundled demo photos (``lookalike/demo/images``) are indexed and
edited copies of them are the queries.

Run from the repository root::

    .venv/bin/python bench/speed.py                                  # cnn, jobs 1 and 2
    .venv/bin/python bench/speed.py --extractor cnn --extractor phash --jobs 1 --jobs 4
    .venv/bin/python bench/speed.py --images ~/Pictures --queries 50
    .venv/bin/python bench/make_photos.py                            # once: /tmp/lookalike-photos
    .venv/bin/python bench/speed.py --no-index --no-draft --photos /tmp/lookalike-photos
    .venv/bin/python bench/speed.py --no-index --no-draft --no-hashes --baselines --jobs 1

Progress goes to stderr; the report (Markdown) to stdout. Numbers depend on
the machine: the header says which one, and with how many CPUs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import metrics, photo_speed  # noqa: E402
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
#: ``keypoints`` setting of every index made here (``--keypoints``; "auto": SIFT with cnn).
KEYPOINTS = "auto"
#: search options of the timed queries (``--verify``).
SEARCH_OPTIONS: dict[str, Any] = {}


def index_throughput(spec: str, gallery: Path, jobs: int, index_dir: Path) -> tuple[Index, dict[str, Any]]:
    """Time one ``Index.add`` of ``gallery`` into a fresh index; the index stays open."""
    index = Index.create(index_dir, extractor=registry.parse(spec), keypoints=KEYPOINTS)
    marks: dict[str, float] = {}

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == 1:
            marks["first"] = now  # the first file is back from decoding: start-up is over
        if done == total:
            marks["last"] = now

    started = time.perf_counter()
    report = index.add(gallery, jobs=jobs, progress=progress)
    seconds = time.perf_counter() - started
    embedded = report.added + report.updated
    # Steady state: files processed after the first one, from its arrival to the
    # last file's (worker and session start-up, listing and the final commit left out).
    span = marks.get("last", 0.0) - marks.get("first", 0.0)
    return index, {
        "images": embedded,
        "skipped": report.skipped,
        "seconds": seconds,
        "images_per_s": embedded / seconds if seconds > 0 else float("nan"),
        "steady_per_s": (report.processed - 1) / span if span > 0 else float("nan"),
    }


def query_latency(index: Index, queries: list[Path]) -> dict[str, Any]:
    """Time ``index.search(q, k=10)`` per query; the first one is the warm-up."""
    times_ms = []
    for q in queries:
        started = time.perf_counter()
        index.search(q, k=10, **SEARCH_OPTIONS)
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


# -- camera-sized photos: bench/photo_speed.py ---------------------------------------
HASHES = ("phash", "ahash", "dhash", "whash", "colorhash")
HASH_TARGET = 300.0  # images/s on 2 cores (issue target)


def inference_limit(files: list[Path], batch: int = 64, rounds: int = 5) -> dict[str, Any]:
    """images/s of the cnn ONNX session alone, on pre-decoded, pre-resized 224x224 batches.

    ``embed_prepared`` (uint8 -> normalised float NCHW -> session.run -> pooling)
    on ``batch`` images already decoded and resized outside the timing; best of
    ``rounds`` passes after a warm-up pass (the session start-up is not counted).
    """
    extractor = registry.create("cnn")
    prepared = []
    for f in itertools.islice(itertools.cycle(files), batch):
        prepared.append(extractor.prepare(decode.decode_file(f, min_side=extractor.min_side).pixels))
    extractor.embed_prepared(prepared)  # warm-up: session start-up, first-run allocations
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        extractor.embed_prepared(prepared)
        best = min(best, time.perf_counter() - started)
    return {"batch": batch, "ms_per_image": 1000 * best / batch, "images_per_s": batch / best}


# -- baselines: the OpenCV tutorial's KAZE pipeline and plain imagehash -------------
def linked_folder(files: list[Path], folder: Path) -> Path:
    """A folder of symlinks to ``files`` (names made unique), so Index.add sees exactly them."""
    folder.mkdir()
    for i, f in enumerate(files):
        (folder / f"{i:05d}-{f.name}").symlink_to(f.resolve())
    return folder


def tutorial_kaze(files: list[Path], queries: list[Path]) -> dict[str, Any]:
    """The tutorial's pipeline: a loop over the files, then one matrix, brute-force cosine.

    Written as the tutorial writes it (Nikishaev, "Feature extraction and
    similar image search with OpenCV for newbies"): ``cv2.imread`` each file,
    extract its KAZE vector (here ``lookalike.extractors.create('kaze-concat')``,
    the same 32 x 64-d concatenation), stack the vectors into a NumPy matrix,
    and score a query by cosine against every row.
    """
    import cv2

    from lookalike.extractors import create

    extractor = create("kaze-concat")

    def extract_features(path):
        image = cv2.imread(str(path))
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return extractor.prepare(image)

    started = time.perf_counter()
    result = {}
    for f in files:
        result[str(f)] = extract_features(f)
    names = list(result)
    matrix = np.array([result[n] for n in names])
    index_s = time.perf_counter() - started

    def match(path, topn=10):
        features = extract_features(path)
        # cosine distance to every row, as scipy's cdist(matrix, v, "cosine") computes it
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(features)
        distances = 1.0 - (matrix @ features) / np.where(norms > 0, norms, 1.0)
        nearest = np.argsort(distances)[:topn]
        return [names[i] for i in nearest], distances[nearest]

    return {"index_s": index_s, "images": len(names), **_time_queries(match, queries)}


def plain_imagehash(files: list[Path], queries: list[Path]) -> dict[str, Any]:
    """``imagehash.phash`` over PIL-opened files in a plain loop; queries by Hamming distance to each."""
    import imagehash
    from PIL import Image

    started = time.perf_counter()
    hashes = []
    for f in files:
        hashes.append(imagehash.phash(Image.open(f)))
    index_s = time.perf_counter() - started

    def match(path, topn=10):
        h = imagehash.phash(Image.open(path))
        distances = [h - other for other in hashes]
        nearest = np.argsort(distances)[:topn]
        return [files[i] for i in nearest]

    return {"index_s": index_s, "images": len(hashes), **_time_queries(match, queries)}


def _time_queries(match, queries: list[Path]) -> dict[str, Any]:
    times_ms = []
    for q in queries:
        started = time.perf_counter()
        match(q)
        times_ms.append(1000 * (time.perf_counter() - started))
    timed = times_ms[1:]  # the first is the warm-up, as in query_latency
    return {"p50_ms": metrics.percentile(timed, 50), "p95_ms": metrics.percentile(timed, 95), "timed": len(timed)}


def baseline_rows(files: list[Path], queries: list[Path], workdir: Path, jobs: int) -> list[list[str]]:
    rows = []

    def row(name, images, seconds, p50, p95):
        rows.append([name, images, _f(seconds), _f(images / seconds if seconds > 0 else float("nan")),
                     _f(p50, 2), _f(p95, 2)])

    log(f"[baselines] tutorial KAZE pipeline on {len(files)} files")
    r = tutorial_kaze(files, queries)
    row("tutorial: cv2.imread + KAZE concat + NumPy cosine (1 process)", r["images"], r["index_s"], r["p50_ms"], r["p95_ms"])
    log(f"[baselines] imagehash.phash loop on {len(files)} files")
    r = plain_imagehash(files, queries)
    row("plain imagehash.phash loop (1 process)", r["images"], r["index_s"], r["p50_ms"], r["p95_ms"])
    folder = linked_folder(files, workdir / "baseline-files")
    for spec in ("kaze-concat", "phash", "cnn"):
        log(f"[baselines] lookalike {spec}, jobs={jobs}")
        index, indexing = index_throughput(spec, folder, jobs, workdir / f"baseline-{slug(spec)}")
        with index:
            latency = query_latency(index, queries)
        row(f"lookalike {spec} (Index.add jobs={jobs}, Index.search)", indexing["images"], indexing["seconds"],
            latency["p50_ms"], latency["p95_ms"])
    return rows


def baselines_table(rows: list[list[str]]) -> str:
    header = ["pipeline", "images", "index s", "index images/s", "query p50 ms", "query p95 ms"]
    return markdown_table(header, rows, numeric_from=1)


# -- hash extractors -----------------------------------------------------------------
def hash_rows(sets: list[tuple[str, Path]], jobs_values: list[int], workdir: Path) -> list[list[str]]:
    rows = []
    for set_name, folder in sets:
        for spec in HASHES:
            for jobs in jobs_values:
                log(f"[hashes {set_name}] {spec}, jobs={jobs}")
                index, indexing = index_throughput(spec, folder, jobs, workdir / f"hash-{slug(set_name)}-{spec}-j{jobs}")
                index.close()
                ips = indexing["images_per_s"]
                rows.append([set_name, spec, jobs, indexing["images"], _f(indexing["seconds"], 2), _f(ips),
                             _f(indexing["steady_per_s"]), "yes" if ips >= HASH_TARGET else "no"])
    return rows


def hashes_table(rows: list[list[str]]) -> str:
    header = ["images", "extractor", "jobs", "files", "index s", "index images/s", "steady images/s",
              f">= {HASH_TARGET:.0f}/s"]
    return markdown_table(header, rows, numeric_from=2)


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
    p.add_argument("--index", action=argparse.BooleanOptionalAction, default=True,
                   help="the indexing and query latency table (default: on)")
    p.add_argument("--draft", action=argparse.BooleanOptionalAction, default=True,
                   help="the JPEG draft decoding table (default: on)")
    p.add_argument("--photos", type=Path, metavar="DIR",
                   help="camera-sized photos from bench/make_photos.py (DIR/1mp, 12mp, heic, mixed, or one folder): "
                        "the default configuration's indexing rate against the decode floor (default: off)")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=False,
                   help="the OpenCV tutorial's KAZE pipeline and a plain imagehash.phash loop next to "
                        "lookalike's kaze-concat, phash and cnn, same files, same process (default: off)")
    p.add_argument("--baseline-files", type=int, default=1000, metavar="N",
                   help="gallery files for --baselines: the first N in walk order (default: 1000; 0 = all)")
    p.add_argument("--baseline-queries", type=int, default=50, metavar="N",
                   help="timed queries per --baselines pipeline, after one warm-up (default: 50)")
    p.add_argument("--hashes", action=argparse.BooleanOptionalAction, default=True,
                   help=f"indexing throughput of {', '.join(HASHES)} on the gallery "
                        f"(and the 1 MP set with --photos), for each --jobs (default: on)")
    p.add_argument("--keypoints", choices=["auto", "sift", "none"], default="auto",
                   help="store SIFT keypoints for verification (default auto: with cnn, as lookalike index does)")
    p.add_argument("--verify", action="store_true",
                   help="time queries with geometric verification (search --verify; needs keypoints)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    global KEYPOINTS
    args = parse_args(argv)
    KEYPOINTS = args.keypoints
    if args.verify:
        SEARCH_OPTIONS["verify"] = True
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
        for spec, jobs in itertools.product(extractors if args.index else [], jobs_values):
            label = extractor_label(spec)
            log(f"[{label}, jobs={jobs}] indexing {gallery}")
            index, indexing = index_throughput(spec, gallery, jobs, workdir / f"{slug(label)}-j{jobs}")
            with index:
                log(f"[{label}, jobs={jobs}] {indexing['images']} images in {indexing['seconds']:.1f} s; "
                    f"{len(queries)} queries")
                latency = query_latency(index, queries)
            rows.append({"extractor": label, "jobs": jobs, "index": indexing, "query": latency})

        draft_rows, gen_seconds = [], 0.0
        if args.draft:
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

        limit, photo_results = None, []
        uses_cnn = args.index and any(registry.parse(spec)["name"] == "cnn" for spec in extractors)
        if uses_cnn:
            log("inference-only limit: cnn session on pre-resized 224x224 batches")
            limit = inference_limit(image_files(gallery))
        if args.photos is not None:
            photo_results = photo_speed.photo_rows(args.photos, workdir, log)

        baseline_results, baseline_count = [], 0
        if args.baselines:
            files = image_files(gallery)
            files = files[: args.baseline_files] if args.baseline_files > 0 else files
            baseline_count = len(files)
            baseline_results = baseline_rows(files, queries[: args.baseline_queries + 1], workdir, min(jobs_values))

        hash_results = []
        if args.hashes:
            sets = [("gallery", gallery)]
            if args.photos is not None:
                sets += [(n, f) for n, f in photo_speed.photo_sets(args.photos) if n == "1mp"]
            hash_results = hash_rows(sets, jobs_values, workdir)
    total = time.perf_counter() - started

    print_header("lookalike speed", machine)
    if rows:
        print("## Indexing and query latency\n")
        print(speed_table(rows))
        print()
    if limit is not None:
        print(f"Inference only (cnn, pre-resized 224x224, batches of {limit['batch']}): "
              f"{limit['images_per_s']:.1f} images/s ({limit['ms_per_image']:.2f} ms/image).\n")
    if draft_rows:
        print("## JPEG draft decoding (decode_bytes from memory)\n")
        print(draft_table(draft_rows))
        print()
    if photo_results:
        print("## Camera-sized photos: the default configuration against the decode floor\n")
        print(photo_speed.photos_table(photo_results))
        print()
        print("Decoders to the extractor's size, one thread, bytes in memory (ms per image; only those "
              "that read every file of the set):\n")
        print(photo_speed.decoders_table(photo_results))
        print()
    if baseline_results:
        print(f"## Baselines on the same {baseline_count} files\n")
        print(baselines_table(baseline_results))
        print()
    if hash_results:
        print("## Hash extractors: indexing throughput\n")
        print(hashes_table(hash_results))
        print()
    for line in notes:
        if line.startswith("Draft test") and not draft_rows:
            continue
        if line.startswith("Queries") and not (rows or baseline_results):
            continue
        print(f"- {line}")
    for r in rows:
        if r["index"]["skipped"]:
            print(f"- {r['extractor']} jobs={r['jobs']}: {r['index']['skipped']} files could not be indexed.")
    if rows:
        print("- index s: wall time of Index.add in a fresh index (worker start-up included); "
              "query times: Index.search(path, k=10), one call at a time, on images not in the index.")
    if draft_rows:
        print(f"- Draft test: mean over {args.draft_repeat} pass(es) over each set, after one warm-up pass; \"draft applied\" = images whose shorter side "
              f"exceeds 2 x {DRAFT_MIN_SIDE} px, the only ones decode_bytes reduces. "
              f"Synthetic images generated in {gen_seconds:.1f} s.")
    if limit is not None:
        print(f"- Inference-only limit: CnnExtractor.embed_prepared (normalise, ONNX session, pooling; "
              f"onnxruntime intra-op threads = CPU count) on {limit['batch']} images decoded and resized to "
              f"224x224 beforehand; best of 5 passes after a warm-up. End-to-end can at best approach it.")
    if photo_results:
        extractor = photo_results[0]["run"]["extractor"]
        print(f"- Photos: {args.photos} (bench/make_photos.py); the default configuration ({extractor}). "
              f"decode floor: per file the fastest decoder to the extractor's size, one thread; inference only: "
              f"the extractor on decoded, prepared images, every core; floor = 1 / (decode / cores + inference); "
              f"lookalike: Index.add in a fresh index in a process of its own (default --jobs), start-up "
              f"included, steady = the files from a quarter to three quarters of the way, over the time between them; \"of floor\" and "
              f"\"of inference\" and \"met\" use the steady rate (what a long run settles at). Targets from the issue: >= "
              f"{photo_speed.TARGETS['12mp']:.0f} images/s at 12 MP, >= {photo_speed.TARGETS['1mp']:.0f} at "
              f"1 MP, and >= {photo_speed.FLOOR_SHARE_TARGET} of the floor.")
    if baseline_results:
        print(f"- Baselines: the first {baseline_count} gallery files (walk order); the two baselines run in this "
              f"process, one image at a time; lookalike rows use Index.add --jobs {min(jobs_values)} on a folder of "
              f"symlinks to the same files. Query p50/p95 over {min(args.baseline_queries, len(queries) - 1)} queries "
              f"after one warm-up (the tutorial: imread + extract + cosine against every row + argsort; "
              f"imagehash: open + phash + Hamming distance to every stored hash in a Python loop).")
    if hash_results:
        print(f"- Hashes: Index.add in a fresh index, worker start-up included (steady images/s as above); "
              f"target >= {HASH_TARGET:.0f} images/s on 2 cores.")
    print(f"- Total time: {total:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
