"""Approximate nearest-neighbour search with FAISS, over the rows of the vector file.

The FAISS structure holds rows ``0 .. ntotal-1`` of ``vectors.bin`` in order, so a
FAISS id *is* a vector row; new rows are appended to it incrementally. Rows no
live file uses any more stay in the structure and are excluded at search time
(a bitmap selector for float indexes, over-fetching for binary ones), so a
deletion never forces a rebuild. The structure is saved as ``ann.faiss`` in
FAISS's own format; on opening, rows committed since it was saved are added.

Kinds: ``exact`` (no structure: NumPy brute force, the reference),
``hnsw`` (graph; float vectors stored as float16 inside it),
``ivfpq`` (inverted lists + product quantisation, then exact re-scoring of the
candidates from the memory-mapped vectors). ``auto`` picks by collection size.
"""

from __future__ import annotations

import math
import os

import numpy as np

KINDS = ("auto", "exact", "hnsw", "ivfpq")
#: ``auto`` uses exact search below this many vectors, HNSW up to IVF_FROM, IVF-PQ beyond.
HNSW_FROM = 50_000
IVF_FROM = 5_000_000
FILE_NAME = "ann.faiss"


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise RuntimeError("approximate search needs faiss: pip install faiss-cpu") from None
    return faiss


def resolve(kind: str, n: int) -> str:
    """The concrete kind for ``kind`` (maybe ``auto``) and ``n`` vectors."""
    if kind not in KINDS:
        raise ValueError(f"unknown ANN kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "exact" if n < HNSW_FROM else "hnsw" if n < IVF_FROM else "ivfpq"


class AnnIndex:
    """A FAISS index over vector rows. ``metric``: ``cosine`` (inner product) or ``hamming``."""

    #: HNSW candidate-list size at search time: higher = better recall, slower.
    ef_search = 512

    def __init__(self, index, kind: str, metric: str):
        self.index = index
        self.kind = kind
        self.metric = metric

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    # -- building -------------------------------------------------------------------
    @classmethod
    def build(cls, kind: str, metric: str, matrix: np.ndarray, *, seed: int = 0) -> "AnnIndex":
        """A new index of ``kind`` over all rows of ``matrix`` (``(n, width)``)."""
        faiss = _faiss()
        n, width = matrix.shape
        if metric == "hamming":
            bits = width * 8
            if kind == "hnsw":
                index = faiss.IndexBinaryHNSW(bits, 16)
            elif kind == "ivfpq":
                nlist = _nlist(n)
                index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
                index.nprobe = max(1, nlist // 8)
                index.train(np.ascontiguousarray(_sample(matrix, 50 * nlist, seed)))
            else:
                index = faiss.IndexBinaryFlat(bits)
        else:
            ip = faiss.METRIC_INNER_PRODUCT
            if kind == "hnsw":
                index = faiss.IndexHNSWSQ(width, faiss.ScalarQuantizer.QT_fp16, 32, ip)
                index.hnsw.efConstruction = 80
                index.train(np.ascontiguousarray(_sample(matrix, 1000, seed), dtype=np.float32))
            elif kind == "ivfpq":
                nlist = _nlist(n)
                m = _pq_subquantizers(width)
                index = faiss.IndexIVFPQ(faiss.IndexFlatIP(width), width, nlist, m, 8, ip)
                index.nprobe = max(1, nlist // 4)
                index.train(np.ascontiguousarray(_sample(matrix, max(256 * 40, 40 * nlist), seed), dtype=np.float32))
            else:
                index = faiss.IndexFlatIP(width)
        ann = cls(index, kind, metric)
        ann.extend(matrix)
        return ann

    def extend(self, matrix: np.ndarray, chunk: int = 20_000) -> None:
        """Add rows ``ntotal .. len(matrix)-1`` of ``matrix`` (the rows it lacks)."""
        dtype = np.uint8 if self.metric == "hamming" else np.float32
        for start in range(self.ntotal, len(matrix), chunk):
            self.index.add(np.ascontiguousarray(matrix[start : start + chunk], dtype=dtype))

    # -- persistence ------------------------------------------------------------------
    def save(self, directory: str) -> None:
        faiss = _faiss()
        tmp = os.path.join(directory, FILE_NAME + ".tmp")
        if self.metric == "hamming":
            faiss.write_index_binary(self.index, tmp)
        else:
            faiss.write_index(self.index, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, FILE_NAME))

    @classmethod
    def load(cls, directory: str, kind: str, metric: str) -> "AnnIndex | None":
        path = os.path.join(directory, FILE_NAME)
        if not os.path.exists(path):
            return None
        faiss = _faiss()
        index = faiss.read_index_binary(path) if metric == "hamming" else faiss.read_index(path)
        return cls(index, kind, metric)

    # -- search -------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, live_bitmap: np.ndarray, n_dead: int, matrix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(q, k)``, best first; ``rows`` -1 where fewer found.

        ``live_bitmap``: bit ``r`` (little-endian bit order) set when row ``r`` is live.
        Scores are cosine similarities, or ``1 - hamming/bits``.
        """
        faiss = _faiss()
        k = max(1, min(k, self.ntotal))
        if self.metric == "hamming":
            fetch = min(self.ntotal, k + n_dead)
            dist, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.uint8), fetch)
            bits = self.index.d
            scores = 1.0 - dist.astype(np.float32) / bits
            return _keep_live(scores, rows, live_bitmap, k)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        selector = faiss.IDSelectorBitmap(len(live_bitmap) * 8, faiss.swig_ptr(live_bitmap)) if n_dead else None
        if self.kind == "hnsw":  # float16 inside the graph: re-score the candidates exactly
            fetch = min(self.ntotal, 2 * k)
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, fetch))
            _, cand = self.index.search(q, fetch, params=params)
            scores, rows = _rescore(q, cand, matrix, k)
        elif self.kind == "ivfpq":
            fetch = min(self.ntotal, max(30 * k, 300))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
            _, cand = self.index.search(q, fetch, params=params)
            scores, rows = _rescore(q, cand, matrix, k)
        else:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            scores, rows = self.index.search(q, k, params=params)
        return scores, rows


def _keep_live(scores: np.ndarray, rows: np.ndarray, bitmap: np.ndarray, k: int):
    out_s = np.full((len(rows), k), -np.inf, np.float32)
    out_r = np.full((len(rows), k), -1, np.int64)
    for i in range(len(rows)):
        ok = rows[i] >= 0
        r = rows[i][ok]
        alive = (bitmap[r >> 3] >> (r & 7)) & 1 == 1
        keep = r[alive][:k]
        out_r[i, : len(keep)] = keep
        out_s[i, : len(keep)] = scores[i][ok][alive][:k]
    return out_s, out_r


def _rescore(q: np.ndarray, cand: np.ndarray, matrix: np.ndarray, k: int):
    """Exact inner products of approximate candidates, from the stored vectors."""
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_r = np.full((len(q), k), -1, np.int64)
    for i in range(len(q)):
        rows = cand[i][cand[i] >= 0]
        if not len(rows):
            continue
        order = np.argsort(rows)
        exact = np.clip(np.asarray(matrix[rows[order]], dtype=np.float32) @ q[i], -1.0, 1.0)
        best = np.argsort(-exact, kind="stable")[:k]
        out_r[i, : len(best)] = rows[order][best]
        out_s[i, : len(best)] = exact[best]
    return out_s, out_r


def _nlist(n: int) -> int:
    return int(max(1, min(65536, round(4 * math.sqrt(n)), n // 40)))


def _pq_subquantizers(width: int) -> int:
    """About 4 dimensions per 1-byte code, at most 128 codes, dividing ``width``."""
    for m in range(min(128, max(1, width // 4)), 0, -1):
        if width % m == 0:
            return m
    return 1


def _sample(matrix: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(matrix) <= n:
        return np.asarray(matrix)
    rows = np.sort(np.random.default_rng(seed).choice(len(matrix), n, replace=False))
    return np.asarray(matrix[rows])


def live_bitmap(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Little-endian bitmap of ``n_rows`` bits with the given rows set (uint8)."""
    bits = np.zeros(n_rows, bool)
    bits[rows] = True
    return np.packbits(bits, bitorder="little")
