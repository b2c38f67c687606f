"""Search stage: exact top-k over every live vector of an index.

Cosine vectors are stored L2-normalised, so similarity is a dot product.
Bit vectors are compared by Hamming distance and scored ``1 - d / bits``.
Results are ordered by score, ties broken by path, so output is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rows scored per matrix product; bounds temporary memory to about
#: ``CHUNK_ROWS x n_queries x 4`` bytes however large the index is.
CHUNK_ROWS = 65536


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


@dataclass(frozen=True)
class LiveSet:
    """The searchable part of an index, read in one consistent snapshot."""

    ids: np.ndarray  # (m,) int64 catalog ids
    paths: list[str]  # (m,) sorted ascending
    rows: np.ndarray  # (m,) int64 rows of the vector matrix
    matrix: np.ndarray  # (n_rows, width) all committed rows (memory-mapped)


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
