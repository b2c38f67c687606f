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
* **query ms**: wall time of the ``search_many`` calls over all queries (in
  chunks of 256; decoding + embedding + search) divided by the number of queries.

Indexing, searching and the metrics are :func:`lookalike.evaluate.evaluate`
(what ``lookalike eval`` runs); this script adds the Markdown tables over
several configurations. Trainable extractors (VLAD, PCA) learn their state
from an even sample of the whole gallery before indexing; no query image is
used. ``--verify`` / ``--augment`` (or ``--no-...``) pass those search options
to every search and name the rows accordingly (``cnn + verify``).

Run from the repository root::

    .venv/bin/python bench/quality.py                        # cnn on ../shared/bench
    .venv/bin/python bench/quality.py --extractor cnn --extractor phash --extractor kaze-concat
    .venv/bin/python bench/quality.py --extractor '{"name": "cnn", "input_size": 256}' --json
    .venv/bin/python bench/quality.py --bench /path/to/other/set --keep /tmp/idx
    .venv/bin/python bench/quality.py --extractor cnn --verify --keep /tmp/idx

The benchmark folder must have the layout ``originals/``, ``distractors/``,
``queries/``, ``ground_truth.csv`` (query,original,transform) and optionally
``labels.csv`` (file,label), all paths relative to the folder. Progress goes
to stderr; the report (Markdown, or JSON with ``--json``) to stdout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    DEFAULT_BENCH, command_line, extractor_label, machine_info, markdown_table, print_header, slug,
)
from lookalike import Index  # noqa: E402
from lookalike.evaluate import evaluate as run_evaluation  # noqa: E402
from lookalike.evaluate import GALLERY_FOLDERS, OVERALL, load_ground_truth, load_labels  # noqa: E402
from lookalike.extractors import registry  # noqa: E402


def check_bench(bench: Path) -> str | None:
    """Why ``bench`` cannot be used, or ``None`` if it looks complete."""
    if not bench.is_dir():
        return f"benchmark folder not found: {bench} (give its location with --bench DIR)"
    missing = [n for n in (*GALLERY_FOLDERS, "ground_truth.csv") if not (bench / n).exists()]
    if missing:
        return f"{bench} is not a benchmark folder: missing {', '.join(missing)}"
    return None


def config_label(spec: str, search_options: dict[str, Any]) -> str:
    """``cnn``, ``cnn + verify``, ``cnn + verify + no augment``: the row name of one configuration."""
    label = extractor_label(spec)
    for name, on in search_options.items():
        label += f" + {name}" if on else f" + no {name}"
    return label


# -- one configuration ----------------------------------------------------------
def evaluate(spec: str, bench: Path, index_dir: Path, jobs: int | None,
             search_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build one index and measure everything for one ``--extractor`` value (``lookalike.evaluate``)."""
    options = search_options or {}
    label = config_label(spec, options)
    log(f"[{label}] indexing {', '.join(GALLERY_FOLDERS)} into {index_dir}")
    logged = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in logged:
            logged.add(stage)
            log(f"[{label}] {stage}: {total} images")

    report = run_evaluation(bench, spec, index=index_dir, search_options=options, jobs=jobs, progress=progress)
    t = report.timing
    return {
        "extractor": label,
        "spec": report.extractor,
        "search_options": report.search_options,
        "recall": report.recall,
        "map": {"map": report.map, "queries": report.map_queries, "labels": len(report.ap_by_class)}
        if report.map is not None else None,
        "index": {
            "files": report.gallery,
            "embedded": t["embedded"],
            "skipped": report.skipped,
            "seconds": t["index_seconds"],
            "images_per_s": t["index_images_per_s"] if t["index_images_per_s"] is not None else float("nan"),
            "train_seconds": t["train_seconds"],
        },
        "query": {
            "count": report.queries,
            "errors": report.query_errors,
            "error_examples": report.error_examples,
            "seconds": t["query_seconds"],
            "ms_per_query": t["query_ms"] if t["query_ms"] is not None else float("nan"),
        },
    }


# -- output ----------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_table(results: list[dict[str, Any]]) -> str:
    transforms = sorted({t for r in results for t in r["recall"] if t != OVERALL})
    header = ["extractor", *(f"R@1 {t}" for t in transforms), "R@1 overall", "R@10 overall",
              "mAP", "index images/s", "query ms"]
    rows = []
    for r in results:
        rec = r["recall"]
        rows.append([
            r["extractor"],
            *(_f(rec[t]["R@1"]) if t in rec else "n/a" for t in transforms),
            _f(rec.get(OVERALL, {}).get("R@1")),
            _f(rec.get(OVERALL, {}).get("R@10")),
            _f(r["map"]["map"]) if r["map"] else "n/a",
            _f(r["index"]["images_per_s"], 1),
            _f(r["query"]["ms_per_query"], 2),
        ])
    return markdown_table(header, rows)


def recall10_table(results: list[dict[str, Any]]) -> str:
    """Recall@10 for every extractor x transform (the companion of :func:`results_table`)."""
    transforms = sorted({t for r in results for t in r["recall"] if t != OVERALL})
    header = ["extractor", *(f"R@10 {t}" for t in transforms), "R@10 overall"]
    rows = [
        [r["extractor"], *(_f(r["recall"][t]["R@10"]) if t in r["recall"] else "n/a" for t in transforms),
         _f(r["recall"].get(OVERALL, {}).get("R@10"))]
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
                   help="build the indexes in DIR/<extractor> and keep them (an existing one with the same "
                        "extractor is reused and updated incrementally)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="pass verify=True/False to every search (geometric re-ranking; default: the index's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="pass augment=True/False to every search (test-time augmentation; default: the index's)")
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
    options = {name: getattr(args, name) for name in ("verify", "augment") if getattr(args, name) is not None}
    unsupported = [name for name in options if name not in inspect.signature(Index.search_many).parameters]
    if unsupported:  # before any slow indexing
        print(f"quality.py: this lookalike's Index.search_many does not take {', '.join(unsupported)}", file=sys.stderr)
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
            name = slug(config_label(spec, options))
            while name in used:
                name += "_"
            used.add(name)
            results.append(evaluate(spec, bench, parent / name, args.jobs, options))
    total = time.perf_counter() - started

    if args.json:
        print(json.dumps({
            "command": command_line(), "machine": machine, "bench": str(bench),
            "queries": len(ground_truth), "jobs": args.jobs, "search_options": options, "results": results,
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
