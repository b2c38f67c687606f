"""Retrieval quality of lookalike's extractors on a benchmark folder.

What it measures, for each extractor (metrics as defined in the benchmark's README):

* **Recall@1 / Recall@10** per transform and overall: every query in
  ``ground_truth.csv`` is searched (``Index.search_many``, k=10) against an index
  of ``originals/`` + ``distractors/``; a hit is the query's original ranked
  first / in the top 10. Transforms are read from ``ground_truth.csv``.
* **mAP (labels)**: every original in ``labels.csv`` whose label has another
  original ranks the whole gallery (``k=None``, reusing its stored vector),
  itself removed; the other originals with its label are the relevant items.
  Skipped with a note when ``labels.csv`` is absent.
* **index images/s**: files embedded / seconds spent in ``Index.add`` (both
  folders, worker start-up included).
* **query ms**: wall time of the one ``search_many`` call over all queries
  (decoding + embedding + search) divided by the number of queries.

Run from the repository root::

    .venv/bin/python bench/quality.py                        # cnn on ../shared/bench
    .venv/bin/python bench/quality.py --extractor cnn --extractor phash --extractor kaze-concat
    .venv/bin/python bench/quality.py --extractor '{"name": "cnn", "input_size": 256}' --json
    .venv/bin/python bench/quality.py --bench /path/to/other/set --keep /tmp/idx

The benchmark folder must have the layout ``originals/``, ``distractors/``,
``queries/``, ``ground_truth.csv`` (query,original,transform) and optionally
``labels.csv`` (file,label), all paths relative to the folder. Progress goes
to stderr; the report (Markdown, or JSON with ``--json``) to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import metrics  # noqa: E402
from bench.common import (  # noqa: E402
    DEFAULT_BENCH, command_line, extractor_label, machine_info, markdown_table, print_header, slug,
)
from lookalike import Index  # noqa: E402
from lookalike.extractors import registry  # noqa: E402

GALLERY_FOLDERS = ("originals", "distractors")


# -- reading the benchmark folder ---------------------------------------------
def load_ground_truth(bench: Path) -> list[tuple[str, str, str]]:
    """``(query, original, transform)`` rows of ``ground_truth.csv``, paths normalised."""
    with open(bench / "ground_truth.csv", newline="", encoding="utf-8") as f:
        return [
            (os.path.normpath(r["query"]), os.path.normpath(r["original"]), r["transform"])
            for r in csv.DictReader(f)
        ]


def load_labels(bench: Path) -> dict[str, str] | None:
    """``file -> label`` from ``labels.csv``, or ``None`` if the file is absent."""
    path = bench / "labels.csv"
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return {os.path.normpath(r["file"]): r["label"] for r in csv.DictReader(f)}


def check_bench(bench: Path) -> str | None:
    """Why ``bench`` cannot be used, or ``None`` if it looks complete."""
    if not bench.is_dir():
        return f"benchmark folder not found: {bench} (give its location with --bench DIR)"
    missing = [n for n in (*GALLERY_FOLDERS, "ground_truth.csv") if not (bench / n).exists()]
    if missing:
        return f"{bench} is not a benchmark folder: missing {', '.join(missing)}"
    return None


# -- one extractor ------------------------------------------------------------
def build_index(index: Index, bench: Path, jobs: int | None) -> dict[str, Any]:
    """Add the gallery folders; returns embedded/skipped counts and seconds of ``add``."""
    embedded = skipped = 0
    seconds = 0.0
    for folder in GALLERY_FOLDERS:
        report = index.add(bench / folder, jobs=jobs)
        embedded += report.added + report.updated
        skipped += report.skipped
        seconds += report.seconds
    return {
        "files": len(index),
        "embedded": embedded,
        "skipped": skipped,
        "seconds": seconds,
        "images_per_s": embedded / seconds if seconds > 0 else float("nan"),
    }


def relative_rankings(results, bench: Path) -> dict[str, list[str]]:
    """``QueryResult`` list -> query -> hit paths, all relative to ``bench``."""
    root = os.path.abspath(bench)
    return {
        os.path.relpath(r.query, root): [os.path.relpath(h.path, root) for h in r.hits]
        for r in results
    }


def run_queries(index: Index, bench: Path, ground_truth) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Search every query (k=10) in one ``search_many``; returns rankings and timing."""
    root = os.path.abspath(bench)
    queries = [os.path.join(root, q) for q, _, _ in ground_truth]
    started = time.perf_counter()
    results = index.search_many(queries, k=10)
    seconds = time.perf_counter() - started
    errors = [f"{r.query}: {r.error} ({r.detail})" for r in results if r.error]
    timing = {
        "count": len(queries),
        "errors": len(errors),
        "error_examples": errors[:5],
        "seconds": seconds,
        "ms_per_query": 1000 * seconds / len(queries) if queries else float("nan"),
    }
    return relative_rankings(results, bench), timing


def label_map(index: Index, bench: Path, labels: dict[str, str]) -> dict[str, Any]:
    """mAP over the labelled originals, each ranking the whole gallery minus itself."""
    relevant = metrics.label_queries(labels)
    root = os.path.abspath(bench)
    queries = sorted(relevant)
    results = index.search_many([os.path.join(root, q) for q in queries], k=None)
    rankings = relative_rankings(results, bench)
    return {
        "map": metrics.mean_average_precision(rankings, relevant),
        "queries": len(queries),
        "labels": len(set(labels[q] for q in queries)),
    }


def train(extractor, bench: Path) -> None:
    """Learn a trainable extractor's state on an even sample of the whole gallery.

    (``Index.add`` would learn it from the first folder added alone, here the
    243 originals.) No query image is used.
    """
    from lookalike import decode

    files = sorted(p for folder in GALLERY_FOLDERS for p in (bench / folder).iterdir())
    n = min(len(files), getattr(extractor, "train_images", 300))
    sample = [files[round(i * (len(files) - 1) / max(1, n - 1))] for i in range(n)]
    prepared = [extractor.prepare(decode.decode_file(p, min_side=extractor.min_side).pixels) for p in sample]
    extractor.fit(prepared)
    log(f"[{extractor.name}] trained on {len(prepared)} gallery images")


def evaluate(spec: str, bench: Path, index_dir: Path, jobs: int | None, ground_truth, labels) -> dict[str, Any]:
    """Build one index and measure everything for one ``--extractor`` value."""
    label = extractor_label(spec)
    log(f"[{label}] indexing {', '.join(GALLERY_FOLDERS)} into {index_dir}")
    extractor = registry.create(registry.parse(spec))
    if extractor.trainable:
        train(extractor, bench)
    with Index.create(index_dir, extractor=extractor) as index:
        indexing = build_index(index, bench, jobs)
        log(f"[{label}] {indexing['embedded']} images in {indexing['seconds']:.1f} s; "
            f"searching {len(ground_truth)} queries")
        rankings, querying = run_queries(index, bench, ground_truth)
        recall = metrics.recall_by_transform(ground_truth, rankings, ks=(1, 10))
        if labels is None:
            map_result = None
        else:
            log(f"[{label}] mAP over labelled originals")
            map_result = label_map(index, bench, labels)
        spec_dict = index.extractor.spec()
    return {
        "extractor": label,
        "spec": spec_dict,
        "recall": {t: {f"R@{k}": v for k, v in by_k.items()} for t, by_k in recall.items()},
        "map": map_result,
        "index": indexing,
        "query": querying,
    }


# -- output ----------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_table(results: list[dict[str, Any]]) -> str:
    transforms = sorted({t for r in results for t in r["recall"] if t != metrics.OVERALL})
    header = ["extractor", *(f"R@1 {t}" for t in transforms), "R@1 overall", "R@10 overall",
              "mAP", "index images/s", "query ms"]
    rows = []
    for r in results:
        rec = r["recall"]
        rows.append([
            r["extractor"],
            *(_f(rec[t]["R@1"]) if t in rec else "n/a" for t in transforms),
            _f(rec.get(metrics.OVERALL, {}).get("R@1")),
            _f(rec.get(metrics.OVERALL, {}).get("R@10")),
            _f(r["map"]["map"]) if r["map"] else "n/a",
            _f(r["index"]["images_per_s"], 1),
            _f(r["query"]["ms_per_query"], 2),
        ])
    return markdown_table(header, rows)


def recall10_table(results: list[dict[str, Any]]) -> str:
    """Recall@10 for every extractor x transform (the companion of :func:`results_table`)."""
    transforms = sorted({t for r in results for t in r["recall"] if t != metrics.OVERALL})
    header = ["extractor", *(f"R@10 {t}" for t in transforms), "R@10 overall"]
    rows = [
        [r["extractor"], *(_f(r["recall"][t]["R@10"]) if t in r["recall"] else "n/a" for t in transforms),
         _f(r["recall"].get(metrics.OVERALL, {}).get("R@10"))]
        for r in results
    ]
    return markdown_table(header, rows)


def notes(results: list[dict[str, Any]], bench: Path, ground_truth, labels, jobs) -> list[str]:
    gallery = results[0]["index"]["files"] if results else 0
    out = [
        f"Benchmark: {bench} ({len(ground_truth)} queries, gallery of {gallery} images "
        f"from {' + '.join(f'{g}/' for g in GALLERY_FOLDERS)}); jobs={jobs if jobs else 'default (CPU count)'}.",
    ]
    if labels is None:
        out.append("mAP skipped: no labels.csv in the benchmark folder.")
    elif results and results[0]["map"]:
        m = results[0]["map"]
        out.append(f"mAP over {m['queries']} labelled originals ({m['labels']} labels with 2+ originals).")
    for r in results:
        if r["index"]["skipped"]:
            out.append(f"{r['extractor']}: {r['index']['skipped']} gallery files could not be indexed.")
        if r["query"]["errors"]:
            out.append(f"{r['extractor']}: {r['query']['errors']} queries failed (counted as misses), e.g. "
                       + "; ".join(r["query"]["error_examples"]))
    return out


# -- main --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH,
                   help=f"benchmark folder (default: {DEFAULT_BENCH})")
    p.add_argument("--extractor", action="append", metavar="NAME",
                   help="extractor name or JSON spec; repeat for several (default: cnn)")
    p.add_argument("--jobs", type=int, default=None,
                   help="decoding processes for Index.add (default: the library's, the CPU count)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of Markdown")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="build the indexes in DIR/<extractor> (new or empty folders) and keep them")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    extractors = args.extractor or ["cnn"]
    problem = check_bench(args.bench)
    if problem:
        print(f"quality.py: {problem}", file=sys.stderr)
        return 2
    for spec in extractors:  # fail fast on a typo, before any slow indexing
        try:
            registry.create(registry.parse(spec))
        except Exception as e:
            print(f"quality.py: bad --extractor {spec!r}: {e}", file=sys.stderr)
            return 2
    bench = args.bench.absolute()
    ground_truth = load_ground_truth(bench)
    labels = load_labels(bench)
    machine = machine_info()

    started = time.perf_counter()
    results = []
    with ExitStack() as stack:
        parent = args.keep if args.keep else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lookalike-quality-")))
        used = set()
        for spec in extractors:
            name = slug(extractor_label(spec))
            while name in used:
                name += "_"
            used.add(name)
            results.append(evaluate(spec, bench, parent / name, args.jobs, ground_truth, labels))
    total = time.perf_counter() - started

    if args.json:
        print(json.dumps({
            "command": command_line(), "machine": machine, "bench": str(bench),
            "queries": len(ground_truth), "jobs": args.jobs, "results": results,
            "notes": notes(results, bench, ground_truth, labels, args.jobs), "total_seconds": total,
        }, indent=2, default=str))
        return 0
    print_header("lookalike retrieval quality", machine)
    print(results_table(results))
    print()
    print(recall10_table(results))
    print()
    for line in notes(results, bench, ground_truth, labels, args.jobs):
        print(f"- {line}")
    print(f"- Total time: {total:.0f} s.")
    if args.keep:
        print(f"- Indexes kept under {args.keep}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
