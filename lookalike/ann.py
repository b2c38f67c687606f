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

``ann.json``, written with ``ann.faiss``, records what the structure was built
from: its kind, metric and width, ``ntotal``, the index's identity (a random id
in the catalog), a digest of a sample of the vector rows it covers (64 rows,
whatever the collection's size) and a digest of a sample of the file itself.
A structure whose record is missing or does not match (copied from another
index, damaged, truncated, of another kind) is not used: it is rebuilt.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat

import logging

import numpy as np

from .errors import LookalikeError, UsageError
from .search import ExactSearch, LiveSet, SearchBackend, SearchResult, VectorSearch, hits_from_rows
from .store.manifest import (
    ANN_KINDS as KINDS,
    ANN_NAME as FILE_NAME,
    IndexStoreError,
    read_small_file,
    remove_quietly,
    write_new,
)

#: ``auto`` uses exact search below this many vectors, HNSW up to IVF_FROM, IVF-PQ beyond.
HNSW_FROM = 50_000
IVF_FROM = 5_000_000
RECORD_NAME = "ann.json"
RECORD_FORMAT = 1
#: Vector rows, and 4 KiB blocks of ann.faiss, that the record's digests cover.
SAMPLES = 64
_BLOCK = 4096


class AnnRejected(LookalikeError):
    """``ann.faiss`` does not fit this index; the message says why (it is then rebuilt)."""


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise RuntimeError("approximate search needs faiss: pip install faiss-cpu") from None
    return faiss


def resolve(kind: str, n: int) -> str:
    """The concrete kind for ``kind`` (maybe ``auto``) and ``n`` vectors."""
    if kind not in KINDS:
        raise UsageError(f"unknown ANN kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "exact" if n < HNSW_FROM else "hnsw" if n < IVF_FROM else "ivfpq"


class AnnIndex(VectorSearch):
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
    def save(self, directory: str, matrix: np.ndarray, identity: str | None) -> None:
        """Write ``ann.faiss`` and its record ``ann.json``, each complete before either replaces its file.

        ``matrix``: the stored vector rows (at least :attr:`ntotal`); ``identity``:
        the catalog's :meth:`~lookalike.store.catalog.Catalog.identity`. On a
        failure (a full disk) nothing is left behind and :class:`IndexStoreError` says so.
        """
        faiss = _faiss()
        write = faiss.write_index_binary if self.metric == "hamming" else faiss.write_index
        path, record_path = os.path.join(directory, FILE_NAME), os.path.join(directory, RECORD_NAME)
        tmp, record_tmp = path + ".tmp", record_path + ".tmp"
        try:
            write_new(tmp, lambda f: write(self.index, faiss.PyCallbackIOWriter(f.write)))
            with open(tmp, "rb") as f:
                digest = file_digest(f)
            record = {
                "format": RECORD_FORMAT, "kind": self.kind, "metric": self.metric, "width": int(matrix.shape[1]),
                "ntotal": self.ntotal, "index_id": identity, "rows": rows_digest(matrix, self.ntotal), "file": digest,
            }
            text = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
            write_new(record_tmp, lambda f: f.write(text))
            os.replace(tmp, path)  # the two renames follow each other: readers retry once in between
            os.replace(record_tmp, record_path)
        except (OSError, RuntimeError) as e:
            remove_quietly(tmp)
            remove_quietly(record_tmp)
            full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1]
            raise IndexStoreError(
                f"could not save the search structure {FILE_NAME}: {reason}; the indexed files are committed; "
                + ("free space and " if full else "") + "run `lookalike index` again"
            ) from None

    @classmethod
    def load(
        cls, directory: str, kind: str, metric: str, matrix: np.ndarray, identity: str | None
    ) -> "AnnIndex | None":
        """``ann.faiss`` if it was built, as ``kind``, from the first rows of ``matrix`` (the stored
        vectors) of the index ``identity``; ``None`` when there is none.

        Raises :class:`AnnRejected` (saying why) for one that does not fit or cannot be read.
        """
        path = os.path.join(directory, FILE_NAME)
        if not os.path.lexists(path):
            return None
        f, record = _open_checked(directory, metric, matrix, identity)
        with f:
            if record["kind"] != kind:
                raise AnnRejected(f"{path} is an {record['kind']} structure; the index uses {kind} now")
            faiss = _faiss()
            read = faiss.read_index_binary if metric == "hamming" else faiss.read_index
            try:
                index = read(faiss.PyCallbackIOReader(f.read))
            except (RuntimeError, MemoryError, OSError) as e:
                raise AnnRejected(f"{path} cannot be read ({_first_line(e)})") from None
        width = matrix.shape[1]
        expected = width * 8 if metric == "hamming" else width
        if (index.ntotal != record["ntotal"] or index.d != expected or kind_of(index) != kind
                or metric != "hamming" and index.metric_type != faiss.METRIC_INNER_PRODUCT):
            raise AnnRejected(f"{path} does not hold what its record {RECORD_NAME} says")
        return cls(index, kind, metric)


    # -- search (the VectorSearch interface) --------------------------------------------
    _live: LiveSet | None = None
    _bitmap: tuple[np.ndarray, int] | None = None  # (live rows bitmap, dead row count)

    def update(self, live: LiveSet) -> bool:
        """Add the rows committed since it was built or saved; rows no file of ``live`` uses
        are dead (left in the structure, never returned). ``True`` if rows were added."""
        grew = self.ntotal < len(live.matrix)
        if grew:
            self.extend(live.matrix)
        if live is not self._live:
            distinct = np.unique(live.rows)
            self._live = live
            self._bitmap = (live_bitmap(distinct, len(live.matrix)), len(live.matrix) - len(distinct))
        return grew

    def hits(self, queries: np.ndarray, k: int | None) -> list[list[SearchResult]]:
        live, held = self._live, self._bitmap
        if live is None or held is None:
            raise RuntimeError("AnnIndex.hits needs update(live) first")
        q = np.atleast_2d(queries)
        if not len(live.rows):
            return [[] for _ in q]
        k = len(live.rows) if k is None else k
        bitmap, dead = held
        scores, rows = self.search_rows(q, k, bitmap, dead, live.matrix)
        bits = self.index.d if self.metric == "hamming" else 0
        return hits_from_rows(live, scores, rows, k, self.metric, bits)

    def search_rows(
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


log = logging.getLogger("lookalike")


def open_search(store, live: LiveSet, current: AnnIndex | None = None, *, save: bool = False) -> AnnIndex | None:
    """The FAISS structure of ``store`` (an :class:`~lookalike.store.IndexStore`) brought up
    to date with the snapshot ``live``; ``None`` when the index searches exactly.

    ``current`` (the structure already in memory) is reused when it is of the right
    kind; otherwise ``ann.faiss`` is loaded, or built when it is missing or does not fit
    (damaged, copied from elsewhere, of another kind: with a note through the
    ``lookalike`` logger). Rows committed since are added. ``save=True`` writes it back
    when it changed (taking the writer lock).
    """
    kind = resolve(store.manifest.ann, len(live.rows))
    if kind == "exact":
        return None
    metric = store.manifest.metric
    directory = str(store.directory)
    if current is None or current.kind != kind:
        try:
            current = AnnIndex.load(directory, kind, metric, store.matrix(), store.catalog.identity())
        except AnnRejected as e:
            later = "" if save else f" (the next `lookalike index` or `lookalike check --repair {directory}` saves it)"
            log.warning("%s; rebuilding it%s", e, later)
            current = None
        if current is not None and current.ntotal > len(live.matrix):
            current = None  # saved by a writer after this snapshot of the rows: build from the snapshot
    changed = current is None
    if current is None:
        current = AnnIndex.build(kind, metric, live.matrix)
    changed = current.update(live) or changed
    if save and changed:
        with store.writing():
            current.save(directory, store.matrix(), store.catalog.identity())
            store.note_file(FILE_NAME, "ann")
    return current


class FolderSearch(SearchBackend):
    """The search side of an index folder: the FAISS structure when the index uses one
    (:func:`open_search`, kept in memory between searches), exact search otherwise."""

    def __init__(self) -> None:
        self.ann: AnnIndex | None = None

    def kind(self, index) -> str:
        return resolve(index.store.manifest.ann, len(index.live().rows))

    def set_kind(self, index, kind: str) -> None:
        resolve(kind, 0)
        if kind != index.store.manifest.ann:
            index.store.set_ann(kind)
            self.ann = None
        self.refresh(index, save=True)

    def refresh(self, index, *, save: bool = False) -> AnnIndex | None:
        self.ann = open_search(index.store, index.live(), self.ann, save=save)
        return self.ann

    def forget(self) -> None:
        """Drop the structure held in memory (after a repair): the next search loads it again."""
        self.ann = None

    def vector_search(self, index, *, exact: bool = False, every: bool = False) -> VectorSearch:
        live = index.live()
        if not (exact or every):
            ann = self.ann
            if ann is None or ann.ntotal != len(live.matrix) or ann.kind != self.kind(index):
                ann = self.refresh(index)
            if ann is not None:
                ann.update(live)
                return ann
        return ExactSearch(live, index.store.manifest.metric, index.extractor.dim)


def problem(directory: str, metric: str, matrix: np.ndarray, identity: str | None) -> str | None:
    """Why ``ann.faiss`` in ``directory`` does not fit the index (``None``: it fits, or there is none).

    Cheap: reads the record and samples of the file and of ``matrix``, never all of either.
    """
    if not os.path.lexists(os.path.join(directory, FILE_NAME)):
        return None
    try:
        f, _ = _open_checked(directory, metric, matrix, identity)
    except AnnRejected as e:
        return str(e)
    f.close()
    return None


def remove(directory: str) -> None:
    """Delete ``ann.faiss`` and its record (it is built again when needed)."""
    for name in (FILE_NAME, RECORD_NAME):
        remove_quietly(os.path.join(directory, name))


def rows_digest(matrix: np.ndarray, n: int) -> str:
    """Digest of rows ``0``, ``n - 1`` and evenly spaced ones between (:data:`SAMPLES` in all) of ``matrix``."""
    h = hashlib.sha256(f"{n} {matrix.shape[1]} {matrix.dtype.str}".encode())
    if n:
        rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLES)).round().astype(np.int64))
        h.update(rows.tobytes())
        h.update(np.ascontiguousarray(matrix[rows]).tobytes())
    return h.hexdigest()


def file_digest(f) -> dict:
    """Size and digest of :data:`SAMPLES` evenly spaced 4 KiB blocks of an open file (all of a small one)."""
    fd = f.fileno()
    size = os.fstat(fd).st_size
    h = hashlib.sha256(str(size).encode())
    if size <= SAMPLES * _BLOCK:
        h.update(os.pread(fd, size, 0))
    else:
        for offset in np.linspace(0, size - _BLOCK, SAMPLES).astype(np.int64):
            h.update(os.pread(fd, _BLOCK, int(offset)))
    return {"size": size, "sha256": h.hexdigest()}


def _open_checked(directory: str, metric: str, matrix: np.ndarray, identity: str | None):
    """``(open ann.faiss, its record)`` when the record matches the file and the index, else
    :class:`AnnRejected`. Tried twice: a writer renames the file and then its record."""
    path = os.path.join(directory, FILE_NAME)
    why = ""
    for _ in range(2):
        record, why = _read_record(directory)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise AnnRejected(f"{path} cannot be opened ({e.strerror or e})") from None
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise AnnRejected(f"{path} is not a regular file")
        if record is not None:
            mismatch = _mismatch(record, f, metric, matrix, identity)
            if mismatch is None:
                return f, record
            why = mismatch
        f.close()
    raise AnnRejected(f"{path} {why}")


def _read_record(directory: str) -> tuple[dict | None, str]:
    path = os.path.join(directory, RECORD_NAME)
    if not os.path.lexists(path):
        return None, f"has no record of the vectors it was built from ({RECORD_NAME})"
    try:
        record = json.loads(read_small_file(path, 64 * 1024))
    except (OSError, ValueError, RecursionError) as e:
        return None, f"has an unreadable record {RECORD_NAME} ({_first_line(e)})"
    keys = {"format": int, "kind": str, "metric": str, "width": int, "ntotal": int, "rows": str, "file": dict}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in keys.items()) \
            or record["format"] != RECORD_FORMAT or record["kind"] not in KINDS:
        return None, f"has a damaged record {RECORD_NAME}"
    return record, ""


def _mismatch(record: dict, f, metric: str, matrix: np.ndarray, identity: str | None) -> str | None:
    n, width = matrix.shape
    if record["file"] != file_digest(f):
        return f"does not match its record {RECORD_NAME}: it changed or was damaged after it was saved"
    if record.get("index_id") != identity:
        return "was built for another index"
    if record["metric"] != metric or record["width"] != width:
        return f"was built for {record['width']}-wide {record['metric']} vectors, not {width}-wide {metric} ones"
    if not 0 <= record["ntotal"] <= n:
        return f"covers {record['ntotal']} vector rows; the index has {n}"
    if record["rows"] != rows_digest(matrix, record["ntotal"]):
        return "was built from other vectors than this index holds"
    return None


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def kind_of(index) -> str:
    """``hnsw``, ``ivfpq`` or ``exact`` for a FAISS index object."""
    name = type(index).__name__
    return "hnsw" if "HNSW" in name else "ivfpq" if "IVF" in name else "exact"


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
