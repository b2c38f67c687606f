"""Search stage: top-k over an index snapshot, one interface for every structure.

A :class:`LiveSet` is the snapshot (ids, paths, vector rows, the matrix), read
in one consistent transaction. A :class:`VectorSearch` answers queries over it::

    engine.update(live)        # take in rows committed since; rows no file uses are dead
    engine.hits(queries, k)    # [[SearchResult, ...], ...]: best first, ties by path
    engine.search(queries, k)  # (scores, ids): (q, k) arrays, id -1 where fewer than k
    engine.save(...)           # persist it (FAISS); nothing to do for the others
    engine.kind                # "exact", "hnsw", "ivfpq", "milvus ..."

Implementations: :class:`ExactSearch` here (NumPy brute force, the reference the
others are tested against), :class:`lookalike.ann.FaissSearch` (HNSW, IVF-PQ,
binary) and :class:`lookalike.backends.milvus.MilvusSearch`.

Cosine vectors are stored L2-normalised, so similarity is a dot product.
Bit vectors are compared by Hamming distance and scored ``1 - d / bits``.
Results are ordered by score, ties broken by path, so output is deterministic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

#: Rows scored per matrix product; bounds temporary memory to about
#: ``CHUNK_ROWS x n_queries x 4`` bytes however large the index is.
CHUNK_ROWS = 65536
#: Candidates a copies-first extractor's vector search fetches, and re-ranks by
#: copy score, whatever k is (so a copy ranked lower by the fused score still
#: comes first).
COPY_CANDIDATES = 100


@dataclass(frozen=True)
class SearchResult:
    """One hit: ``rank`` starts at 1; ``score`` in [-1, 1] (cosine) or [0, 1] (Hamming)."""

    rank: int
    path: str
    score: float
    id: int
    distance: int | None = None  # Hamming distance in bits, for hash extractors
    inliers: int | None = None  # geometric verification: matched keypoints (0 = no model); None = not verified
    region: tuple[tuple[float, float], ...] | None = None  # query's outline projected into this image (pixels)
    #: calibrated copy score (extractors trained for copy detection, e.g. ``sscd``):
    #: a copy from the extractor's ``copy_threshold()`` up; ``None`` = not measured
    copy_score: float | None = None
    #: the verification result itself (a :class:`lookalike.verify.Match`), kept so that
    #: drawing it (``search --explain``) need not verify again; not part of the result's value
    match: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class LiveSet:
    """The searchable part of an index, read in one consistent snapshot."""

    ids: np.ndarray  # (m,) int64 catalog ids
    paths: list[str]  # (m,) sorted ascending
    rows: np.ndarray  # (m,) int64 rows of the vector matrix
    matrix: np.ndarray  # (n_rows, width) all committed rows (memory-mapped)

    @cached_property
    def position(self) -> dict[str, int]:
        """Path -> its position in this snapshot (built once per snapshot)."""
        return {p: i for i, p in enumerate(self.paths)}

    @cached_property
    def by_row(self) -> tuple[np.ndarray, np.ndarray]:
        """``(order, sorted rows)``: the snapshot's files ordered by vector row (built once
        per snapshot, not once per search)."""
        order = np.argsort(self.rows, kind="stable")
        return order, self.rows[order]

    def row_of(self, path: str) -> int | None:
        """The vector row of an indexed path in this snapshot (``None``: not indexed)."""
        i = self.position.get(path)
        return None if i is None else int(self.rows[i])


def scores(live: LiveSet, queries: np.ndarray, metric: str, bits: int) -> np.ndarray:
    """``(q, m)`` similarity of each query to each live vector (float32).

    The matrix is read in contiguous slices straight from the memory map (no
    gather copy); rows no live file uses any more are scored and dropped.
    """
    q = np.atleast_2d(queries)
    n_rows = len(live.matrix)
    out = np.empty((q.shape[0], n_rows), np.float32)
    if metric != "hamming":
        q = q.astype(np.float32, copy=False)
    for start in range(0, n_rows, CHUNK_ROWS):
        block = live.matrix[start : start + CHUNK_ROWS]
        if metric == "hamming":
            dist = np.zeros((q.shape[0], len(block)), np.int32)
            for j in range(block.shape[1]):  # byte by byte: no (q, rows, bytes) temporary
                dist += np.bitwise_count(q[:, j, None] ^ block[None, :, j])
            out[:, start : start + len(block)] = 1.0 - dist / bits
        else:
            out[:, start : start + len(block)] = q @ block.T.astype(np.float32, copy=False)
    if metric != "hamming":
        np.clip(out, -1.0, 1.0, out=out)  # float16 storage rounds unit vectors to norms of 1 +- 1e-4
    return out[:, live.rows]


def top_k(row_scores: np.ndarray, k: int | None) -> np.ndarray:
    """Indices of the ``k`` best scores, best first, ties by index (= path order).

    Every item tied with the k-th score takes part in the tie-break, so the
    result is the same as a full stable sort.
    """
    m = len(row_scores)
    if k is None or k >= m:
        return np.lexsort((np.arange(m), -row_scores))
    kth = np.partition(row_scores, m - k)[m - k]
    cand = np.flatnonzero(row_scores >= kth)
    order = np.lexsort((cand, -row_scores[cand]))
    return cand[order[:k]]


def search_vectors(
    live: LiveSet, queries: np.ndarray, k: int | None, metric: str, bits: int
) -> list[list[SearchResult]]:
    """Top-``k`` hits for each query vector (``(q, width)``); ``k=None``: all."""
    all_scores = scores(live, queries, metric, bits)
    results = []
    for row_scores in all_scores:
        hits = []
        for rank, i in enumerate(top_k(row_scores, k), 1):
            s = float(row_scores[i])
            dist = round((1.0 - s) * bits) if metric == "hamming" else None
            hits.append(SearchResult(rank, live.paths[i], s, int(live.ids[i]), dist))
        results.append(hits)
    return results


def hits_from_rows(live: LiveSet, scores: np.ndarray, rows: np.ndarray, k: int, metric: str, bits: int):
    """Vector rows found by a structure -> hits: each row expanded to the live files that
    use it (copies share a row), best first, ties by path."""
    order, sorted_rows = live.by_row
    results: list[list[SearchResult]] = []
    for q_scores, q_rows in zip(scores, rows):
        entries: list[int] = []
        entry_scores: list[float] = []
        for s, r in zip(q_scores, q_rows):
            if r < 0:
                continue
            lo, hi = np.searchsorted(sorted_rows, r, "left"), np.searchsorted(sorted_rows, r, "right")
            for e in order[lo:hi]:
                entries.append(int(e))
                entry_scores.append(float(s))
        if not entries:
            results.append([])
            continue
        entries_arr = np.asarray(entries)
        pick = np.lexsort((entries_arr, -np.asarray(entry_scores, np.float64)))[:k]
        hits = []
        for rank, j in enumerate(pick, 1):
            e, s = entries[j], entry_scores[j]
            dist = round((1.0 - s) * bits) if metric == "hamming" else None
            hits.append(SearchResult(rank, live.paths[e], s, int(live.ids[e]), dist))
        results.append(hits)
    return results


def with_copy_scores(extractor, live: LiveSet, queries: np.ndarray,
                     found: list[list[SearchResult]]) -> list[list[SearchResult]]:
    """``found`` (hits per row of ``queries``) with each hit's calibrated copy score,
    for an extractor that has one (``copy_vectors``); unchanged otherwise.

    The score is the copy descriptor's similarity minus the query's offset
    (``copy_offsets``, e.g. its similarity to a background set), read from the
    stored vectors of the snapshot ``live``.
    """
    if not len(queries) or not extractor.has_copy_score():
        return found
    q = extractor.copy_vectors(queries)
    offsets = extractor.copy_offsets(q)
    out = []
    for vector, offset, hits in zip(q, offsets, found):
        rows = [live.row_of(h.path) for h in hits]
        known = [i for i, r in enumerate(rows) if r is not None]
        sims = np.zeros(len(hits), np.float32)
        if known:
            stored = np.asarray(live.matrix[np.array([rows[i] for i in known])], np.float32)
            sims[known] = extractor.copy_vectors(stored) @ vector
        out.append([replace(h, copy_score=round(float(s - offset), 4)) if r is not None else h
                    for h, s, r in zip(hits, sims, rows)])
    return out


def copy_paths(views: list[list[SearchResult]], threshold: float,
               best_of_view: tuple[float, float] | None = None) -> set[str]:
    """The files that are copies by the hits of a query's views (the whole query, its
    regions): a copy score of at least ``threshold``, or, with ``best_of_view = (floor,
    margin)``, a view's best hit whose copy score is at least ``floor`` and ``margin``
    ahead of that view's next file (a copy under the strict threshold still stands out
    among its own query's hits; a query with no copy meets a crowd of similar scores)."""
    found: set[str] = set()
    for hits in views:
        scored = sorted((h for h in hits if h.copy_score is not None), key=lambda h: (-(h.copy_score or 0.0), h.path))
        found.update(h.path for h in scored if (h.copy_score or 0.0) >= threshold)
        if best_of_view is not None and len(scored) >= 2:
            floor, margin = best_of_view
            first, second = scored[0].copy_score or 0.0, scored[1].copy_score or 0.0
            if first >= floor and first - second >= margin:
                found.add(scored[0].path)
    return found


def copies_first(hits: list[SearchResult], threshold: float, also: set[str] | frozenset[str] = frozenset()) -> list[SearchResult]:
    """Hits whose copy score reaches ``threshold`` (and those in ``also``, copies by
    :func:`copy_paths`) first, best copy score first (ties by path); the others after
    them in their given order; ranks renumbered."""
    copies = sorted((h for h in hits if h.copy_score is not None and (h.copy_score >= threshold or h.path in also)),
                    key=lambda h: (-(h.copy_score or 0.0), h.path))
    taken = {h.path for h in copies}
    ordered = copies + [h for h in hits if h.path not in taken]
    return [h if h.rank == i else replace(h, rank=i) for i, h in enumerate(ordered, 1)]


class VectorSearch(ABC):
    """Top-k search over the live vectors of a snapshot (see the module docstring)."""

    kind = "exact"

    def update(self, live: LiveSet) -> bool:
        """Follow the snapshot ``live``; ``True`` when the structure changed (worth saving)."""
        return False

    @abstractmethod
    def hits(self, queries: np.ndarray, k: int | None) -> list[list[SearchResult]]:
        """Top-``k`` hits per row of ``queries`` (``(q, width)``, as stored); ``k=None``: all."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each ``(q, k)``, best first; ids are file ids (-1 where fewer)."""
        found = self.hits(queries, k)
        scores = np.full((len(found), k), -np.inf, np.float32)
        ids = np.full((len(found), k), -1, np.int64)
        for i, hits in enumerate(found):
            for j, h in enumerate(hits[:k]):
                scores[i, j], ids[i, j] = h.score, h.id
        return scores, ids

    def save(self, *args, **kwargs) -> None:
        """Persist the structure; nothing to do unless it has a file of its own."""


class ExactSearch(VectorSearch):
    """Every live vector scored: the reference result."""

    def __init__(self, live: LiveSet, metric: str, bits: int):
        self.live, self.metric, self.bits = live, metric, bits

    def update(self, live: LiveSet) -> bool:
        self.live = live
        return False

    def hits(self, queries: np.ndarray, k: int | None) -> list[list[SearchResult]]:
        if not len(self.live.rows):
            return [[] for _ in np.atleast_2d(queries)]
        return search_vectors(self.live, queries, k, self.metric, self.bits)


class SearchBackend:
    """Where an index's vectors are searched, and what that place adds to the index:
    :class:`lookalike.ann.FolderSearch` (the index folder: FAISS or exact) or
    :class:`lookalike.backends.milvus.MilvusBackend` (a Milvus collection).

    :class:`~lookalike.index.Index` holds one and asks it; the defaults here are those
    of a backend with nothing to add.
    """

    name = "folder"

    def kind(self, index) -> str:
        """The structure searches use now (``exact``, ``hnsw``, ``milvus HNSW (COSINE)``, ...)."""
        raise NotImplementedError

    def set_kind(self, index, kind: str) -> None:
        """Choose the structure (``auto``, ``exact``, ``hnsw``, ``ivfpq``) and build it."""
        raise NotImplementedError

    def refresh(self, index, *, save: bool = False):
        """Bring the structure up to date with the committed vectors; ``save``: persist it."""
        return None

    def vector_search(self, index, *, exact: bool = False, every: bool = False) -> VectorSearch:
        """The :class:`VectorSearch` over the index's current snapshot (``exact``: the reference)."""
        live = index.live()
        return ExactSearch(live, index.store.manifest.metric, index.extractor.dim)

    def file_ids(self, ids: np.ndarray, paths: list[str]) -> np.ndarray:
        """The ids search results give the files of a snapshot (default: catalog ids)."""
        return ids

    def record_id(self, rec) -> int:
        assert rec.id is not None  # a record read from the catalog
        return rec.id

    def before_add(self, index, shard: tuple[int, int] | None) -> None:
        """Called before indexing a folder (the backend may refuse, or repair first)."""

    def repair(self, index) -> list[str]:
        """What the backend repaired beyond the index folder, one line each."""
        return []

    def describe(self) -> dict:
        """Extra entries for :meth:`Index.info`'s manifest."""
        return {}

    def close(self) -> None:
        pass
