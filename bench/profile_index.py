"""Where the time goes when indexing with ``cnn``: stage by stage, in one process.

For each image set it runs the indexing pipeline's stages separately, one
after the other over all files, in this process, and times each:

* **list**: ``lookalike.sources.walk`` of the folder;
* **read + hash**: ``decode.read_file`` and ``sources.content_hash`` (BLAKE2b);
* **decode**: ``decode.decode_bytes(data, min_side=224)`` (JPEGs decoded at a
  reduced DCT scale), bytes already in memory;
* **prepare**: ``extractor.prepare`` (crop to cover, area resize to 224x224);
* **embed**: ``extractor.embed_prepared`` in batches of 64 (normalisation,
  onnxruntime session on every core, pooling); session start-up excluded;
* **store**: per batch of 64, the catalog's content-hash lookup for each file
  (as the indexer does) and ``IndexStore.commit`` (vectors appended + fsync,
  one SQLite transaction) on a real ``Index`` in a temp folder.

Each stage is timed ``--repeat`` times and the fastest pass is kept (the
machine may be shared). Then, for comparison, the end-to-end ``Index.add``
throughput on the same folder in a fresh index, for each ``--jobs`` (worker
processes overlap decoding with inference there, so its time is below the sum
of the stages when jobs > 1).

Run from the repository root::

    .venv/bin/python bench/make_photos.py                     # once: /tmp/lookalike-photos
    .venv/bin/python bench/profile_index.py                   # gallery + /tmp/lookalike-photos/1mp
    .venv/bin/python bench/profile_index.py --images ~/Pictures --jobs 1 --jobs 2
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

from bench.common import DEFAULT_BENCH, machine_info, markdown_table, print_header  # noqa: E402
from lookalike import Index, decode  # noqa: E402
from lookalike.sources import content_hash, display_path, walk  # noqa: E402
from lookalike.store import FileRecord  # noqa: E402

BATCH = 64
DEFAULT_PHOTOS = Path("/tmp/lookalike-photos/1mp")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def one_pass(folder: Path, workdir: Path) -> dict[str, float]:
    """Seconds per stage for one pass over ``folder`` (each stage over all files)."""
    index = Index.create(workdir, extractor="cnn")
    extractor, store = index.extractor, index.store
    extractor.embed_prepared([np.zeros((224, 224, 3), np.uint8)])  # session start-up, not timed
    t: dict[str, float] = {}
    entries, t["list"] = _timed(lambda: list(walk(folder)))

    def read_hash():
        out = []
        for e in entries:
            data = decode.read_file(e.path)
            out.append((data, content_hash(data)))
        return out

    blobs, t["read + hash"] = _timed(read_hash)
    decoded, t["decode"] = _timed(
        lambda: [decode.decode_bytes(d, min_side=extractor.min_side, max_pixels=index.max_pixels) for d, _ in blobs])
    prepared, t["prepare"] = _timed(lambda: [extractor.prepare(img.pixels) for img in decoded])
    vectors, t["embed"] = _timed(lambda: [extractor.embed_prepared(prepared[i : i + BATCH])
                                          for i in range(0, len(prepared), BATCH)])

    def commit():
        with store.writing():
            for b, start in enumerate(range(0, len(entries), BATCH)):
                records = []
                for e, (_, digest), img in zip(entries[start : start + BATCH], blobs[start : start + BATCH],
                                               decoded[start : start + BATCH]):
                    store.catalog.by_hash(digest)  # the indexer looks up copies of every file
                    records.append(FileRecord(None, path=display_path(e.path), size=e.size, mtime_ns=e.mtime_ns,
                                              content_hash=digest, width=img.width, height=img.height,
                                              status="ok"))
                store.commit(vectors=vectors[b], records=records)

    _, t["store"] = _timed(commit)
    t["files"] = len(entries)
    index.close()
    return t


def profile(folder: Path, repeat: int, tmp: Path) -> dict[str, float]:
    best: dict[str, float] = {}
    for r in range(repeat):
        t = one_pass(folder, tmp / f"stages-{r}")
        for k, v in t.items():
            best[k] = min(best.get(k, float("inf")), v)
    return best


def end_to_end(folder: Path, jobs: int, tmp: Path, repeat: int) -> tuple[int, float]:
    best, images = float("inf"), 0
    for r in range(repeat):
        index = Index.create(tmp / f"e2e-j{jobs}-{r}", extractor="cnn")
        started = time.perf_counter()
        report = index.add(folder, jobs=jobs)
        best = min(best, time.perf_counter() - started)
        images = report.added + report.updated
        index.close()
    return images, best


def stage_table(name: str, t: dict[str, float], e2e: list[tuple[int, int, float]]) -> str:
    n = t["files"]
    stages = ["list", "read + hash", "decode", "prepare", "embed", "store"]
    total = sum(t[s] for s in stages)
    rows = [[s, f"{1000 * t[s] / n:.2f}", f"{100 * t[s] / total:.0f}%"] for s in stages]
    rows.append(["**sum of stages**", f"**{1000 * total / n:.2f}**", "100%"])
    rows.append(["= images/s if run one after the other", f"{n / total:.1f}", "-"])
    rows.append(["= images/s of embed alone (the inference limit)", f"{n / t['embed']:.1f}", "-"])
    for jobs, images, seconds in e2e:
        rows.append([f"Index.add end to end, jobs={jobs} ({images} images, {seconds:.1f} s): ms/image, images/s",
                     f"{1000 * seconds / images:.2f}", f"{images / seconds:.1f}/s"])
    return f"### {name} ({n} files)\n\n" + markdown_table(["stage", "ms/image", "% of sum"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, action="append", metavar="DIR",
                   help="folder to profile; repeat for several (default: the benchmark gallery "
                        f"and {DEFAULT_PHOTOS} if present)")
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    p.add_argument("--jobs", type=int, action="append", metavar="N",
                   help="--jobs for the end-to-end Index.add rows; repeat (default: 1 and 2)")
    p.add_argument("--repeat", type=int, default=2, metavar="N",
                   help="passes per measurement, the fastest kept (default: 2)")
    args = p.parse_args(argv)
    jobs_values = args.jobs or [1, 2]
    machine = machine_info()

    with tempfile.TemporaryDirectory(prefix="lookalike-profile-") as tmp_name:
        tmp = Path(tmp_name)
        sets: list[tuple[str, Path]] = []
        if args.images:
            sets = [(str(f), f) for f in args.images]
        else:
            if (args.bench / "originals").is_dir() and (args.bench / "distractors").is_dir():
                gallery = tmp / "gallery"
                gallery.mkdir()
                for name in ("originals", "distractors"):
                    (gallery / name).symlink_to((args.bench / name).absolute(), target_is_directory=True)
                sets.append(("benchmark gallery (originals + distractors)", gallery))
            if DEFAULT_PHOTOS.is_dir():
                sets.append(("1 MP photos (bench/make_photos.py)", DEFAULT_PHOTOS))
            else:
                log(f"{DEFAULT_PHOTOS} not found: run bench/make_photos.py to profile 1 MP photos too")
        tables = []
        for i, (name, folder) in enumerate(sets):
            log(f"[{name}] stages x{args.repeat}")
            t = profile(folder, args.repeat, tmp / f"set{i}")
            e2e = []
            for jobs in jobs_values:
                log(f"[{name}] Index.add jobs={jobs} x{args.repeat}")
                images, seconds = end_to_end(folder, jobs, tmp / f"set{i}", args.repeat)
                e2e.append((jobs, images, seconds))
            tables.append(stage_table(name, t, e2e))

    print_header("lookalike indexing profile (cnn)", machine)
    for table in tables:
        print(table)
        print()
    print(f"- Stages run one after the other in this process, each over every file, fastest of {args.repeat} "
          f"passes; embed in batches of {BATCH} on an onnxruntime session using {os.cpu_count()} threads "
          f"(start-up excluded); store = catalog hash lookup per file + IndexStore.commit per batch "
          f"(vectors + fsync + SQLite) on a real index in a temp folder.")
    print(f"- Index.add: fresh index, fastest of {args.repeat}, worker and session start-up included.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
