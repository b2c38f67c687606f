"""Measure an index configuration on a labelled folder: recall, mAP, precision@k, timing.

Two folder layouts are understood (:func:`detect_layout`):

* **benchmark**: ``originals/``, ``distractors/`` (optional), ``queries/``,
  ``ground_truth.csv`` (``query,original,transform``, and optionally an
  ``ignore`` column: gallery paths separated by ``;`` that are left out of
  that query's ranking before it is scored, e.g. the photo a picture was
  pasted onto, which is a correct answer too) and optionally
  ``labels.csv`` (``file,label``), paths relative to the folder, as in
  ``../shared/bench``. The gallery is originals + distractors; every query is
  searched; Recall@k is reported per transform and overall, and mAP over the
  labelled originals (each ranks the whole gallery, itself removed; relevant
  = the other originals with its label).
* **classes**: one subfolder per class (``root/cat/*.jpg``, ``root/dog/*.jpg``;
  images deeper down belong to their top-level subfolder, images directly in
  ``root`` are gallery-only distractors). Everything is indexed; each image of
  a class with 2+ images is a query against the rest (itself removed),
  relevant = the other indexed images of its class. mAP and precision@k are
  reported per class and overall (mean over queries).

The metric functions at the top take plain Python values (no I/O), so their
numbers can be worked out by hand. AP follows the benchmark's README: the mean
of precision@k over the ranks k of the relevant items; relevant items missing
from the ranking contribute 0.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import decode
from .errors import LookalikeError, PathNotFound, UsageError
from .extractors import Extractor, registry
from .sources import is_image_name, walk

OVERALL = "overall"

#: Queries per ``search_many`` call: bounds memory (a whole-gallery ranking per
#: query) and matches ``Index.search_many``'s own embedding batch.
QUERY_CHUNK = 256
RANKING_CHUNK = 64

#: ``progress(stage, done, total)``: stage is e.g. ``"index originals"``, ``"queries"``, ``"mAP"``.
StageProgress = Callable[[str, int, int], None]


# -- metrics (pure) -------------------------------------------------------------
def rank_of(ranking: Sequence[str], target: str) -> int | None:
    """1-based position of ``target`` in ``ranking``, or ``None`` if absent."""
    for position, item in enumerate(ranking, 1):
        if item == target:
            return position
    return None


def recall_by_transform(
    ground_truth: Iterable[tuple[str, str, str]],
    rankings: Mapping[str, Sequence[str]],
    ks: Sequence[int] = (1, 10),
) -> dict[str, dict[int, float]]:
    """Recall@k per transform and overall.

    ``ground_truth``: ``(query, original, transform)`` triples.
    ``rankings``: query -> its hits, best first (a query missing here, or with an
    empty list, is a miss). Returns ``{transform: {k: recall}}`` with the
    transforms sorted by name and :data:`OVERALL` last; every recall is in
    ``[0, 1]``. Transforms with no queries do not appear.
    """
    hits: dict[str, dict[int, int]] = defaultdict(lambda: {k: 0 for k in ks})
    counts: dict[str, int] = defaultdict(int)
    for query, original, transform in ground_truth:
        position = rank_of(rankings.get(query, ()), original)
        for group in (transform, OVERALL):
            counts[group] += 1
            for k in ks:
                if position is not None and position <= k:
                    hits[group][k] += 1
    groups = sorted(g for g in counts if g != OVERALL) + ([OVERALL] if counts else [])
    return {g: {k: hits[g][k] / counts[g] for k in ks} for g in groups}


def average_precision(ranking: Sequence[str], relevant: Iterable[str]) -> float:
    """AP of one ranked list: mean of precision@k at the ranks of the relevant items.

    ``ranking``: items best first (the query itself already removed).
    ``relevant``: the items that count as correct; those absent from
    ``ranking`` contribute 0. Returns 0.0 when ``relevant`` is empty.
    """
    relevant = set(relevant)
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for position, item in enumerate(ranking, 1):
        if item in relevant:
            found += 1
            total += found / position
            if found == len(relevant):
                break
    return total / len(relevant)


def precision_at(ranking: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Fraction of the first ``k`` items of ``ranking`` that are relevant (divided by ``k``,
    so a class with fewer than ``k`` other members cannot reach 1)."""
    relevant = set(relevant)
    return sum(1 for item in ranking[:k] if item in relevant) / k


def label_queries(labels: Mapping[str, str]) -> dict[str, set[str]]:
    """Labelled items whose label has at least one other item -> their relevant set.

    ``labels``: item -> label. An item's relevant set is every *other* item
    with the same label; items alone in their label are not queries.
    """
    by_label: dict[str, set[str]] = defaultdict(set)
    for item, label in labels.items():
        by_label[label].add(item)
    return {
        item: by_label[label] - {item}
        for item, label in labels.items()
        if len(by_label[label]) >= 2
    }


def mean_average_precision(
    rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, Iterable[str]]
) -> float:
    """Mean AP over the queries of ``relevant`` (query -> relevant items).

    ``rankings``: query -> the whole gallery ranked for it, best first; the
    query itself is removed here if present. A query with no ranking scores 0.
    Returns NaN when there are no queries.
    """
    if not relevant:
        return float("nan")
    aps = [average_precision([i for i in rankings.get(q, ()) if i != q], rel) for q, rel in relevant.items()]
    return sum(aps) / len(aps)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, like ``numpy.percentile``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def even_sample(items: Sequence, n: int | None) -> list:
    """``n`` items spread evenly over ``items`` (first and last included); all if ``n`` is None or larger."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    if n == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


# -- layouts --------------------------------------------------------------------
class LayoutError(LookalikeError, ValueError):
    """The folder is in neither accepted layout; the message says what is expected."""


BENCHMARK, CLASSES = "benchmark", "classes"
GALLERY_FOLDERS = ("originals", "distractors")

LAYOUTS_HELP = (
    "expected either a benchmark folder (originals/, distractors/, queries/, ground_truth.csv with "
    "query,original,transform and optionally labels.csv with file,label) or one subfolder per class "
    "with at least two class subfolders containing images (root/cat/*.jpg, root/dog/*.jpg)"
)


def class_folders(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Top-level subfolder name -> absolute paths of the images under it (sorted); empty ones left out."""
    root = os.path.abspath(os.fspath(folder))
    out = {}
    with os.scandir(root) as it:
        names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    for name in names:
        paths = sorted(f.path for f in walk(os.path.join(root, name)))
        if paths:
            out[name] = paths
    return out


def detect_layout(folder: str | os.PathLike) -> str:
    """:data:`BENCHMARK` or :data:`CLASSES`; raises :class:`LayoutError` (or ``FileNotFoundError``)."""
    root = Path(folder)
    if not root.is_dir():
        raise PathNotFound(f"not a folder: {folder}")
    if (root / "ground_truth.csv").is_file():
        if not (root / "originals").is_dir():
            raise LayoutError(f"{folder} has ground_truth.csv but no originals/ folder; {LAYOUTS_HELP}")
        return BENCHMARK
    classes = class_folders(root)
    if len(classes) >= 2:
        return CLASSES
    found = f"found {len(classes)} subfolder{'s' if len(classes) != 1 else ''} with images"
    raise LayoutError(f"{folder} is not an evaluation folder ({found}, no ground_truth.csv): {LAYOUTS_HELP}")


def load_ground_truth(folder: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(query, original, transform)`` rows of ``ground_truth.csv``, paths normalised."""
    with open(Path(folder) / "ground_truth.csv", newline="", encoding="utf-8") as f:
        return [(os.path.normpath(r["query"]), os.path.normpath(r["original"]), r["transform"])
                for r in csv.DictReader(f)]


def load_ignored(folder: str | os.PathLike) -> dict[str, set[str]]:
    """``query -> gallery paths left out of its ranking`` from ``ground_truth.csv``'s optional ``ignore`` column."""
    with open(Path(folder) / "ground_truth.csv", newline="", encoding="utf-8") as f:
        return {os.path.normpath(r["query"]): {os.path.normpath(p) for p in r["ignore"].split(";") if p.strip()}
                for r in csv.DictReader(f) if r.get("ignore")}


def without_ignored(rankings: Mapping[str, Sequence[str]], ignored: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Each query's ranking with the paths ignored for it removed (the order of the rest kept)."""
    return {q: [h for h in hits if h not in ignored.get(q, ())] for q, hits in rankings.items()}


def load_labels(folder: str | os.PathLike) -> dict[str, str] | None:
    """``file -> label`` from ``labels.csv``, or ``None`` if the file is absent."""
    path = Path(folder) / "labels.csv"
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return {os.path.normpath(r["file"]): r["label"] for r in csv.DictReader(f)}


# -- the report -----------------------------------------------------------------
@dataclass
class EvalReport:
    """What :func:`evaluate` measured. Recall/precision values are in [0, 1]; times in seconds or ms.

    ``recall``: transform -> ``{"R@1": ..., "R@10": ...}`` with ``"overall"`` last
    (benchmark layout; empty for classes). ``map``: mean AP over ``map_queries``
    queries (``None`` without labels). ``ap_by_class``: label/class -> mean AP
    of its queries. ``precision``: class -> ``{"P@1": ...}`` and ``"overall"``
    (classes layout). ``class_sizes``: class -> images found.
    """

    folder: str
    layout: str
    extractor: dict[str, Any]
    search_options: dict[str, Any]
    ks: list[int]
    index_path: str | None  # None: a temporary index, deleted afterwards
    gallery: int  # files searchable in the index
    skipped: int  # gallery files that could not be indexed
    queries: int
    query_errors: int
    error_examples: list[str] = field(default_factory=list)
    recall: dict[str, dict[str, float]] = field(default_factory=dict)
    map: float | None = None
    map_queries: int = 0
    ap_by_class: dict[str, float] = field(default_factory=dict)
    precision: dict[str, dict[str, float]] = field(default_factory=dict)
    class_sizes: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float | int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN becomes ``None``."""
        return _json_safe(asdict(self))

    def to_text(self) -> str:
        """A readable multi-line summary (what ``lookalike eval`` prints)."""
        lines = [f"{self.folder}: {self.layout} layout", f"extractor: {_spec_text(self.extractor)}"]
        opts = ", ".join(f"{k}={v}" for k, v in self.search_options.items()) or "index defaults"
        lines.append(f"search options: {opts}")
        lines.append(f"gallery: {self.gallery} images ({self.skipped} could not be indexed); "
                     f"{self.queries} queries ({self.query_errors} failed, counted as misses)")
        lines.append("")
        if self.recall:
            header = ["transform", *(f"R@{k}" for k in self.ks)]
            rows: list[list[Any]] = [[t, *(_num(r.get(f"R@{k}")) for k in self.ks)] for t, r in self.recall.items()]
            lines += _table(header, rows) + [""]
        if self.precision:
            header = ["class", "images", "queries", "AP", *(f"P@{k}" for k in self.ks)]
            rows = []
            for c, p in self.precision.items():
                size = sum(self.class_sizes.values()) if c == OVERALL else self.class_sizes.get(c, 0)
                ap = self.map if c == OVERALL else self.ap_by_class.get(c)
                rows.append([c, size, p.get("queries", 0), _num(ap), *(_num(p.get(f"P@{k}")) for k in self.ks)])
            lines += _table(header, rows) + [""]
        if self.map is not None and self.layout == BENCHMARK:
            lines.append(f"mAP (labels): {_num(self.map)} over {self.map_queries} labelled originals as queries")
            lines.append("AP by label: " + ", ".join(f"{c} {_num(ap)}" for c, ap in self.ap_by_class.items()))
        elif self.map is not None:
            lines.append(f"mAP: {_num(self.map)} over {self.map_queries} images as queries "
                         "(each against all the others, same class = relevant)")
        t = self.timing
        parts = []
        if t.get("index_images_per_s") is not None:
            parts.append(f"indexed {t['embedded']} images in {t['index_seconds']:.1f} s "
                         f"({t['index_images_per_s']:.1f} images/s)")
        elif self.index_path:
            parts.append("index reused: nothing to embed")
        if t.get("query_ms") is not None:
            parts.append(f"query {t['query_ms']:.2f} ms each (decode + embed + search)")
        if t.get("search_ms") is not None:
            parts.append(f"ranking the gallery by a stored vector {t['search_ms']:.2f} ms each")
        parts.append(f"total {t.get('total_seconds') or 0:.1f} s")
        lines.append("timing: " + "; ".join(parts))
        lines += [f"note: {n}" for n in self.notes]
        for e in self.error_examples:
            lines.append(f"failed query: {e}")
        return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _spec_text(spec: dict[str, Any]) -> str:
    extra = {k: v for k, v in spec.items() if k not in ("name", "version")}
    return spec.get("name", "?") + (" " + ", ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in cells]


# -- running it -----------------------------------------------------------------
def evaluate(
    folder: str | os.PathLike,
    extractor: str | dict | Extractor | None = None,
    *,
    index: Any = None,
    search_options: Mapping[str, Any] | None = None,
    ks: Sequence[int] | None = None,
    limit: int | None = None,
    jobs: int | None = None,
    progress: StageProgress | None = None,
) -> EvalReport:
    """Index ``folder``'s gallery and measure retrieval (see the module docstring for layouts).

    ``extractor``: name, JSON spec or :class:`Extractor` for a new index
    (default ``cnn``); with an existing index it must match (else
    :class:`~lookalike.store.ExtractorMismatch`). ``index``: ``None`` (a
    temporary index), an index folder (created, or reused and brought up to
    date incrementally: a second run embeds nothing), or an already opened
    index-like object with ``add(folder, ...)``, ``search_many(queries, k, ...)``
    and ``extractor`` (left open). ``search_options``: keywords passed to every
    ``search_many`` call (e.g. ``verify=True``); only what is given is passed.
    ``ks``: cut-offs for Recall@k / precision@k (default ``(1, 10)`` for the
    benchmark layout, ``(1, 5, 10)`` for classes). ``limit``: at most this many
    queries of each kind, spread evenly (for a quick run). ``jobs``: decoding
    processes for ``add`` (spawned, so scripts need a ``__main__`` guard; 1 =
    in-process). Raises :class:`LayoutError` for a folder of neither layout.
    """
    started = time.perf_counter()
    root = os.path.abspath(os.fspath(folder))
    layout = detect_layout(root)
    options = dict(search_options or {})
    ks = sorted(set(ks)) if ks else ([1, 10] if layout == BENCHMARK else [1, 5, 10])
    if ks[0] < 1:
        raise UsageError("k must be at least 1")
    say = progress or (lambda stage, done, total: None)
    if layout == BENCHMARK:
        gallery_roots = [os.path.join(root, g) for g in GALLERY_FOLDERS if os.path.isdir(os.path.join(root, g))]
        classes = None
    else:
        gallery_roots = [root]
        classes = class_folders(root)

    with ExitStack() as stack:
        ix, index_path, trained = _open_index(stack, index, extractor, gallery_roots, say)
        _check_search_options(ix, options)
        timing: dict[str, Any] = {"train_seconds": trained}
        embedded, skipped, seconds = 0, 0, 0.0
        for g in gallery_roots:
            stage = f"index {os.path.relpath(g, root)}" if g != root else "index"
            kw = {"jobs": jobs} if jobs is not None else {}
            report = ix.add(g, progress=lambda done, total, s=stage: say(s, done, total), **kw)
            embedded += report.added + report.updated
            skipped += report.skipped
            seconds += report.seconds
        timing.update(index_seconds=seconds, embedded=embedded,
                      index_images_per_s=embedded / seconds if embedded and seconds > 0 else None)
        spec = ix.extractor.spec()
        out = EvalReport(
            folder=root, layout=layout, extractor=spec, search_options=options, ks=list(ks),
            index_path=index_path, gallery=len(ix), skipped=skipped, queries=0, query_errors=0,
        )
        if layout == BENCHMARK:
            _run_benchmark(ix, root, out, options, limit, say)
        else:
            assert classes is not None  # found with the layout
            _run_classes(ix, root, classes, out, options, limit, say)
    out.timing = {**timing, **out.timing, "total_seconds": time.perf_counter() - started}
    return out


def _open_index(stack: ExitStack, index, extractor, gallery_roots: list[str], say) -> tuple[Any, str | None, float | None]:
    """``(index, its folder or None when temporary, seconds spent training or None)``."""
    from .index import Index  # the index module pulls in the search stack; keep this module light

    if index is not None and not isinstance(index, (str, os.PathLike)):
        return index, getattr(index, "path", None), None
    if index is not None:
        index = os.path.expanduser(os.fspath(index))
    if index is not None and (Path(index) / "manifest.json").exists():
        return stack.enter_context(Index.open(index, extractor)), os.path.abspath(os.fspath(index)), None
    path = index if index is not None else stack.enter_context(tempfile.TemporaryDirectory(prefix="lookalike-eval-"))
    ext = registry.create(extractor if extractor is not None else registry.default_spec())
    trained = None
    if ext.trainable and not ext.is_trained():
        trained = _train(ext, gallery_roots, say)
    ix = stack.enter_context(Index.create(path, extractor=ext))
    return ix, (os.path.abspath(os.fspath(index)) if index is not None else None), trained


def _train(ext: Extractor, gallery_roots: list[str], say) -> float:
    """Fit a trainable extractor on an even sample of the whole gallery (``Index.add`` alone
    would learn from the first folder added only). Returns the seconds it took."""
    started = time.perf_counter()
    files = sorted(e.path for g in gallery_roots for e in walk(g))
    sample = even_sample(files, getattr(ext, "train_images", 300))
    prepared = []
    for i, path in enumerate(sample):
        say("train", i, len(sample))
        try:
            prepared.append(ext.prepare(decode.decode_file(path, min_side=ext.min_side).pixels))
        except decode.DecodeError:
            continue  # the same file is skipped with its reason when indexed
    say("train", len(sample), len(sample))
    ext.fit(prepared)
    return time.perf_counter() - started


def _check_search_options(ix, options: Mapping[str, Any]) -> None:
    """Refuse options ``search_many`` does not take, with a clear message (not a TypeError deep inside)."""
    if not options:
        return
    params = inspect.signature(ix.search_many).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [name for name in options if name not in params]
    if unknown:
        raise UsageError(f"this index's search does not support {', '.join(unknown)} "
                         f"(it takes: {', '.join(n for n in params if n not in ('queries', 'k'))})")


def _search(ix, paths: list[str], k: int | None, options, root: str, chunk: int, stage: str, say):
    """Yield ``(query_rel, hits_rel, error)`` per query, searched in chunks; returns seconds spent."""
    seconds = 0.0
    say(stage, 0, len(paths))
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        t0 = time.perf_counter()
        results = ix.search_many(part, k, **options)
        seconds += time.perf_counter() - t0
        for path, r in zip(part, results):
            hits = [os.path.relpath(h.path, root) for h in r.hits]
            yield os.path.relpath(path, root), hits, (f"{r.query}: {r.error} ({r.detail})" if r.error else None)
        say(stage, start + len(part), len(paths))
    return seconds


def _drain(gen) -> tuple[list, float]:
    """Run a generator to its end: its items and its return value."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def _run_benchmark(ix, root: str, out: EvalReport, options, limit, say) -> None:
    ground_truth = even_sample(load_ground_truth(root), limit)
    paths = [os.path.join(root, q) for q, _, _ in ground_truth]
    ignored = load_ignored(root)
    extra = max((len(v) for v in ignored.values()), default=0)
    found, seconds = _drain(_search(ix, paths, max(out.ks) + extra, options, root, QUERY_CHUNK, "queries", say))
    rankings = without_ignored({q: hits for q, hits, _ in found}, ignored)
    errors = [e for _, _, e in found if e]
    recall = recall_by_transform(ground_truth, rankings, ks=out.ks)
    out.recall = {t: {f"R@{k}": v for k, v in by_k.items()} for t, by_k in recall.items()}
    out.queries, out.query_errors, out.error_examples = len(paths), len(errors), errors[:5]
    out.timing["query_seconds"] = seconds
    out.timing["query_ms"] = 1000 * seconds / len(paths) if paths else None
    labels = load_labels(root)
    if labels is None:
        out.notes.append("no labels.csv: mAP not measured")
        return
    relevant = label_queries(labels)
    queries = even_sample(sorted(relevant), limit)
    aps, seconds = _ranked_aps(ix, root, queries, relevant, options, say)
    out.map = sum(aps.values()) / len(aps) if aps else float("nan")
    out.map_queries = len(aps)
    by_label = defaultdict(list)
    for q, ap in aps.items():
        by_label[labels[q]].append(ap)
    out.ap_by_class = {c: sum(v) / len(v) for c, v in sorted(by_label.items())}
    out.timing["search_ms"] = 1000 * seconds / len(queries) if queries else None


def _ranked_aps(ix, root, queries, relevant, options, say):
    """AP per query, each ranking the whole gallery by its stored vector, itself removed.

    Returns ``({query: AP}, seconds)``; a query that failed scores 0, as in
    :func:`mean_average_precision`.
    """
    aps = {}
    gen = _search(ix, [os.path.join(root, q) for q in queries], None, options, root, RANKING_CHUNK, "mAP", say)
    found, seconds = _drain(gen)
    for q, hits, error in found:
        aps[q] = 0.0 if error else average_precision([h for h in hits if h != q], relevant[q])
    return aps, seconds


def _run_classes(ix, root: str, classes: dict[str, list[str]], out: EvalReport, options, limit, say) -> None:
    labels = {os.path.relpath(p, root): c for c, paths in classes.items() for p in paths}
    out.class_sizes = {c: len(paths) for c, paths in classes.items()}
    relevant = label_queries(labels)
    queries = even_sample(sorted(relevant), limit)
    depth = max(out.ks)
    aps: dict[str, float] = {}
    precisions: dict[str, dict[int, float]] = {}
    errors = []
    gen = _search(ix, [os.path.join(root, q) for q in queries], None, options, root, RANKING_CHUNK, "queries", say)
    found, seconds = _drain(gen)
    for q, hits, error in found:
        if error:
            errors.append(error)
            continue
        ranking = [h for h in hits if h != q]
        rel = relevant[q] & set(ranking)  # files that could not be indexed are not in the gallery
        if not rel:
            continue
        aps[q] = average_precision(ranking, rel)
        precisions[q] = {k: precision_at(ranking[:depth], rel, k) for k in out.ks}
    out.queries, out.query_errors, out.error_examples = len(queries), len(errors), errors[:5]
    out.map = sum(aps.values()) / len(aps) if aps else float("nan")
    out.map_queries = len(aps)
    per_class: dict[str, list[str]] = defaultdict(list)
    for q in aps:
        per_class[labels[q]].append(q)
    out.ap_by_class = {c: sum(aps[q] for q in qs) / len(qs) for c, qs in sorted(per_class.items())}
    out.precision = {
        c: {"queries": len(qs), **{f"P@{k}": sum(precisions[q][k] for q in qs) / len(qs) for k in out.ks}}
        for c, qs in [*sorted(per_class.items()), (OVERALL, list(aps))] if qs
    }
    out.timing["query_seconds"] = seconds
    out.timing["search_ms"] = 1000 * seconds / len(queries) if queries else None
    alone = sorted(c for c, n in out.class_sizes.items() if n < 2)
    if alone:
        out.notes.append(f"classes with a single image (gallery only, not queries): {', '.join(alone)}")
    unclassed = sum(1 for e in os.scandir(root) if not e.name.startswith(".") and e.is_file() and is_image_name(e.name))
    if unclassed:
        out.notes.append(f"{unclassed} images directly in {root} belong to no class: gallery only (distractors)")
