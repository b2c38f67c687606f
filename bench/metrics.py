"""Retrieval metrics for the benchmark scripts, free of any I/O so they can be unit-tested.

Definitions follow the public benchmark's README (``/work/shared/bench/README.md``):

* **Recall@k**: the fraction of queries whose ground-truth original is among the
  first ``k`` hits. A query that failed (no hits) counts as a miss.
* **AP**: the mean of precision@k over the ranks k at which the relevant items
  appear; relevant items missing from the ranking contribute a precision of 0.
  **mAP** is the mean AP over the queries.

Every function takes plain Python values (strings, lists, dicts), never
lookalike objects, so the expected numbers can be worked out by hand.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

OVERALL = "overall"


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
    """
    if not relevant:
        return float("nan")
    aps = []
    for query, rel in relevant.items():
        ranking = [item for item in rankings.get(query, ()) if item != query]
        aps.append(average_precision(ranking, rel))
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
