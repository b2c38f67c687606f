"""The Python API: create or open an index, add folders, search."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from . import __version__, ann as ann_mod, decode, indexer, local
from .extractors import Extractor, registry
from .search import LiveSet, SearchResult, search_vectors
from .sources import display_path, walk
from .store import FileRecord, IndexDamaged, IndexStore, Manifest

#: Notes (a search structure rebuilt, ...) go to this logger; the CLI prints them as "note: ...".
log = logging.getLogger("lookalike")

Query = str | os.PathLike | np.ndarray | Image.Image

#: float16 vectors up to this size (as float32) are held in memory for fast exact search;
#: larger collections stay memory-mapped and are searched through the ANN structure.
DENSE_LIMIT_BYTES = 512 * 1024 * 1024

#: Candidates of the vector search that geometric verification re-ranks.
VERIFY_CANDIDATES = 50
#: Query regions smaller than this (pixels, shorter side) carry too little of a
#: picture to search with: the CNN would see a blur enlarged from a few pixels.
MIN_REGION_SIDE = 112


class QueryError(Exception):
    """A query image could not be used; ``reason`` is a :class:`decode.SkipReason`."""

    def __init__(self, query: str, error: decode.DecodeError):
        super().__init__(f"{query}: {error}")
        self.query = query
        self.reason = error.reason
        self.detail = error.detail


class NoKeypoints(ValueError):
    """Verification asked of an index built without keypoints."""


@dataclass(frozen=True)
class QueryResult:
    """Hits for one query of a batch; ``error`` set (and ``hits`` empty) if it failed."""

    query: str
    hits: list[SearchResult]
    error: str | None = None  # a SkipReason value
    detail: str | None = None


@dataclass(frozen=True)
class IndexInfo:
    path: str
    manifest: dict[str, Any]
    files: int  # indexed (searchable) files
    skipped: int
    skip_reasons: dict[str, int]
    roots: list[str]
    vector_rows: int  # rows in the vector file, including rows no file uses any more
    bytes_on_disk: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Index:
    """A persistent image index in one directory.

    >>> index = Index.create("pics.idx", extractor="cnn")   # doctest: +SKIP
    >>> index.add("~/Pictures")                               # doctest: +SKIP
    >>> index.search("query.jpg", k=5)[0].path                # doctest: +SKIP
    """

    def __init__(self, store: IndexStore, extractor: Extractor, max_pixels: int = decode.DEFAULT_MAX_PIXELS):
        self.store = store
        self.extractor = extractor
        self.max_pixels = max_pixels
        self._live: LiveSet | None = None
        self._live_key: tuple | None = None
        self._ann: ann_mod.AnnIndex | None = None
        self._bitmap: tuple[np.ndarray, int] | None = None  # (live rows bitmap, dead row count)

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        extractor: str | dict | Extractor = registry.DEFAULT,
        *,
        threads: int | None = None,
        max_pixels: int = decode.DEFAULT_MAX_PIXELS,
        ann: str = "auto",
        storage: str | None = None,
        keypoints: str | dict | None = "auto",
    ) -> "Index":
        """Make a new index in ``path`` (a new or empty folder) for ``extractor``.

        ``storage``: dtype of the stored vectors; float vectors default to
        ``"float16"`` (half the disk and memory; cosine scores change by ~1e-3),
        ``"float32"`` keeps them as computed. Bit vectors are always ``uint8``.

        ``extractor``: a registered name (``"cnn"``, ``"phash"``, ``"kaze-concat"``),
        a JSON spec string or dict with settings, or an :class:`Extractor`.

        ``keypoints``: local features stored for ``search(..., verify=True)``:
        ``"sift"`` (or a dict of :data:`lookalike.local.DEFAULTS` settings),
        ``None`` for none, ``"auto"`` (default): SIFT with the ``cnn`` extractor
        (the default configuration), none with the others.
        """
        ext = registry.create(extractor, threads=threads)
        ann_mod.resolve(ann, 0)  # validate early
        if keypoints == "auto":
            keypoints = default_keypoints(ext)
        local_spec = local.settings(keypoints)
        dtype = ext.dtype
        if ext.metric != "hamming":
            dtype = storage or "float16"
            if dtype not in ("float16", "float32"):
                raise ValueError("storage must be 'float16' or 'float32'")
        manifest = Manifest(
            extractor=ext.spec(), dim=ext.dim, dtype=dtype, metric=ext.metric,
            lookalike_version=__version__, ann=ann, local=local_spec,
        )
        store = IndexStore.create(os.path.expanduser(os.fspath(path)), manifest)
        if ext.trainable and ext.is_trained():  # an extractor trained beforehand: keep its state
            with store.writing():
                store.save_state(ext.state())
        return cls(store, ext, max_pixels)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        extractor: str | dict | Extractor | None = None,
        *,
        threads: int | None = None,
        max_pixels: int = decode.DEFAULT_MAX_PIXELS,
        validate: bool = True,
    ) -> "Index":
        """Open an existing index. If ``extractor`` is given it must match the
        one the index was built with (:class:`ExtractorMismatch` says what differs).

        Raises :class:`~lookalike.store.IndexDamaged` (one line saying what is
        wrong) when the manifest, the catalog, the vector file and the extractor
        disagree; ``validate=False`` opens such an index anyway, for
        :meth:`check` and :meth:`repair`.
        """
        path = os.path.expanduser(os.fspath(path))
        wanted = registry.create(extractor, threads=threads).spec() if extractor is not None else None
        store = IndexStore.open(path, wanted, validate=False)
        try:
            ext = _stored_extractor(store, threads)
            problem = _extractor_problem(store.manifest, ext)
            if validate and problem:  # first: a wrong dim also makes the vector file look short
                raise IndexDamaged(f"the index {path} is damaged: {problem}; "
                                   f"`lookalike check --repair {path}` repairs it")
            if validate:
                store.require_sound()
            if ext.trainable:
                ext.load_state(store.load_state())
        except BaseException:
            store.close()
            raise
        return cls(store, ext, max_pixels)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, extractor=None, **kw) -> "Index":
        path = os.path.expanduser(os.fspath(path))
        if (Path(path) / "manifest.json").exists():
            return cls.open(path, extractor, **kw)
        return cls.create(path, extractor if extractor is not None else registry.DEFAULT, **kw)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> str:
        return str(self.store.directory)

    def __len__(self) -> int:
        return self.store.catalog.counts()["ok"]

    # -- writing -------------------------------------------------------------
    def add(
        self,
        folder: str | os.PathLike,
        *,
        jobs: int | None = None,
        batch_size: int = 64,
        include_hidden: bool = False,
        progress: indexer.ProgressFn | None = None,
        shard: tuple[int, int] | None = None,
    ) -> indexer.IndexReport:
        """Index the images under ``folder`` (or one file); incremental, resumable.

        Returns an :class:`~lookalike.indexer.IndexReport` of what changed.
        ``progress(done, total)`` is called as files are processed. ``jobs``:
        decoding processes (default: CPU count; 1 = decode in this process).
        Worker processes are started with ``spawn``, so a script that calls
        this with ``jobs != 1`` needs the usual ``if __name__ == "__main__":`` guard.
        ``shard=(I, N)``: only the files of shard I of N (see :func:`lookalike.backends.shard_filter`).
        """
        from .backends import shard_filter

        folder = os.path.expanduser(os.fspath(folder))
        try:
            report = indexer.index_folder(
                self.store, self.extractor, folder, jobs=jobs, batch_size=batch_size,
                include_hidden=include_hidden, max_pixels=self.max_pixels, progress=progress,
                select=shard_filter(shard),
            )
        finally:
            self._live = None
        self.update_ann(save=True)
        return report

    def set_ann(self, kind: str) -> None:
        """Choose the search structure (``auto``, ``exact``, ``hnsw``, ``ivfpq``) and build it."""
        ann_mod.resolve(kind, 0)
        if kind != self.store.manifest.ann:
            with self.store.writing():
                self.store.manifest.ann = kind
                from .store.manifest import write_manifest

                write_manifest(self.store.directory, self.store.manifest)
            self._ann = None
        self.update_ann(save=True)

    def ann_kind(self) -> str:
        """The structure searches use now (``exact``, ``hnsw`` or ``ivfpq``)."""
        return ann_mod.resolve(self.store.manifest.ann, len(self.live().rows))

    def update_ann(self, *, save: bool = False) -> ann_mod.AnnIndex | None:
        """Bring the ANN structure up to date with the committed vectors.

        Loads ``ann.faiss`` (or builds it when missing or of another kind) and
        adds rows committed since it was saved. ``save=True`` writes it back
        (the caller must be the writer, or hold no one's lock).
        """
        live = self.live()
        kind = ann_mod.resolve(self.store.manifest.ann, len(live.rows))
        if kind == "exact":
            self._ann = None
            return None
        metric = self.store.manifest.metric
        directory = str(self.store.directory)
        current = self._ann
        if current is None or current.kind != kind:
            try:
                current = ann_mod.AnnIndex.load(directory, kind, metric, self.store.matrix(),
                                                self.store.catalog.identity())
            except ann_mod.AnnRejected as e:  # damaged, copied from elsewhere, of another kind: not used
                later = "" if save else \
                    f" (the next `lookalike index` or `lookalike check --repair {directory}` saves it)"
                log.warning("%s; rebuilding it%s", e, later)
                current = None
            if current is not None and current.ntotal > len(live.matrix):
                current = None  # saved by a writer after this snapshot of the rows: build from the snapshot
        changed = False
        if current is None:
            current = ann_mod.AnnIndex.build(kind, metric, live.matrix)
            changed = True
        elif current.ntotal < len(live.matrix):
            current.extend(live.matrix)
            changed = True
        self._ann = current
        if save and changed:
            with self.store.writing():
                current.save(directory, self.store.matrix(), self.store.catalog.identity())
                if self.store.manifest.files.get(ann_mod.FILE_NAME) != "ann":
                    self.store.manifest.files[ann_mod.FILE_NAME] = "ann"
                    from .store.manifest import write_manifest

                    write_manifest(self.store.directory, self.store.manifest)
        return current

    # -- reading -------------------------------------------------------------
    def live(self) -> LiveSet:
        """The searchable vectors, refreshed whenever another process committed."""
        db = self.store.catalog.db
        key = (db.execute("PRAGMA data_version").fetchone()[0], db.total_changes)
        if self._live is None or key != self._live_key:
            db.execute("BEGIN")
            try:
                ids, paths, rows = self.store.catalog.live()
                matrix = self.store.matrix()
            finally:
                db.execute("COMMIT")
            if matrix.dtype == np.float16 and matrix.size * 4 <= DENSE_LIMIT_BYTES:
                # BLAS has no float16: converting per query would dominate exact search
                matrix = np.asarray(matrix, dtype=np.float32)
            self._live = LiveSet(np.asarray(ids, np.int64), paths, np.asarray(rows, np.int64), matrix)
            self._live_key = key
            self._bitmap = None
        return self._live

    def _prepare(self, query: Query) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(stored_vector, None)`` for an indexed, unchanged path, else ``(None, prepared)``."""
        if not isinstance(query, (Image.Image, np.ndarray)):
            path = os.path.abspath(os.path.expanduser(os.fspath(query)))
            rec = self.store.catalog.get(display_path(path))
            if rec is not None and rec.status == "ok" and _same_file(rec, path):
                stored = np.array(self.live().matrix[rec.row])
                return (stored if self.store.manifest.metric == "hamming" else stored.astype(np.float32)), None
        pixels, name = self._pixels(query, min_side=self.extractor.min_side)
        return None, self._prepare_pixels(pixels, name)

    def _prepare_pixels(self, pixels: np.ndarray, name: str) -> np.ndarray:
        try:
            return self.extractor.prepare(pixels)
        except Exception as e:  # as when indexing: an extractor failing on one odd image is that image's problem
            error = decode.DecodeError(decode.SkipReason.DECODE_ERROR, f"{type(e).__name__}: {e}")
            raise QueryError(name, error) from None

    def embed(self, query: Query) -> np.ndarray:
        """One query (path, PIL image or RGB array) -> its ``(width,)`` vector.

        An indexed path whose file is unchanged reuses its stored vector.
        """
        stored, prepared = self._prepare(query)
        return stored if stored is not None else self.extractor.embed_prepared([prepared])[0]

    def search(
        self, query: Query, k: int | None = 10, *, verify: bool | int = False, augment: bool | None = None
    ) -> list[SearchResult]:
        """The ``k`` indexed images most like ``query`` (a path, PIL image or RGB array).

        ``verify``: re-rank the best :data:`VERIFY_CANDIDATES` (or ``verify`` if
        an int) by geometric verification against the keypoints stored at index
        time; verified hits come first, by inlier count, and carry ``inliers``
        and ``region``. ``augment``: also search the query's quarter turns,
        mirror images and five regions, keeping each file's best score (finds
        rotated, mirrored and framed copies); default: on when verifying.

        Raises :class:`QueryError` when the query image cannot be decoded.
        """
        augment = bool(verify) if augment is None else augment
        if verify or augment:
            return self._search_robust(query, k, verify, augment)
        return self.search_vectors(self.embed(query)[None], k)[0]

    def search_many(
        self,
        queries: Iterable[Query],
        k: int | None = 10,
        *,
        chunk: int = 256,
        verify: bool | int = False,
        augment: bool | None = None,
    ) -> list[QueryResult]:
        """Search several queries, embedded in batches; a bad query gives an error entry."""
        out: list[QueryResult] = []
        if verify or augment:
            for i, q in enumerate(queries):
                name = _query_name(q, i)
                try:
                    out.append(QueryResult(name, self.search(q, k, verify=verify, augment=augment)))
                except QueryError as e:
                    out.append(QueryResult(name, [], e.reason.value, e.detail))
            return out
        pending: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []

        def flush() -> None:
            fresh = [p for _, v, p in pending if v is None]
            embedded = iter(self.extractor.embed_prepared(fresh)) if fresh else iter(())
            vectors = np.stack([v if v is not None else next(embedded) for _, v, _ in pending])
            found = self.search_vectors(vectors, k)
            out.extend(QueryResult(name, hits) for (name, _, _), hits in zip(pending, found))
            pending.clear()

        for i, q in enumerate(queries):
            name = _query_name(q, i)
            try:
                pending.append((name, *self._prepare(q)))
            except QueryError as e:
                if pending:
                    flush()
                out.append(QueryResult(name, [], e.reason.value, e.detail))
                continue
            if len(pending) >= chunk:
                flush()
        if pending:
            flush()
        return out

    # -- robust search: views of the query, geometric verification ---------------
    def _pixels(self, query: Query, min_side: int | None = None) -> tuple[np.ndarray, str]:
        """Decoded RGB pixels of a query and its display name, or :class:`QueryError`.

        ``min_side``: a JPEG may be decoded at reduced size down to this (see :func:`decode.decode_file`).
        """
        if isinstance(query, (Image.Image, np.ndarray)):
            name = f"<{type(query).__name__}>"
            try:
                return decode.pixels_of(query, max_pixels=self.max_pixels), name
            except decode.DecodeError as e:
                raise QueryError(name, e) from None
        path = os.path.abspath(os.path.expanduser(os.fspath(query)))
        try:
            return decode.decode_file(path, min_side=min_side, max_pixels=self.max_pixels).pixels, display_path(path)
        except decode.DecodeError as e:
            raise QueryError(display_path(path), e) from None

    def _search_robust(self, query: Query, k: int | None, verify: bool | int, augment: bool) -> list[SearchResult]:
        if verify:
            self.require_keypoints()
        pixels, name = self._pixels(query)
        views = query_views(pixels) if augment else [pixels]
        with ThreadPoolExecutor(1) as pool:  # the query's keypoints are measured while the CNN runs
            keypoints = pool.submit(local.detect, pixels, self.store.manifest.local) if verify else None
            vectors = self.extractor.embed_prepared([self._prepare_pixels(v, name) for v in views])
        checked = (VERIFY_CANDIDATES if verify is True else int(verify)) if verify else 0
        n = None if k is None else max(k, checked)
        best: dict[str, SearchResult] = {}
        for hits in self.search_vectors(vectors, n):
            for h in hits:
                if h.path not in best or h.score > best[h.path].score:
                    best[h.path] = h
        hits = sorted(best.values(), key=lambda h: (-h.score, h.path))[:n]
        if not verify:
            return [replace(h, rank=i) for i, h in enumerate(hits[:k] if k is not None else hits, 1)]
        # only the best candidates are verified, whatever k is; regions of the
        # query nominate a few more, kept only if they verify
        extra = self._region_candidates(pixels, {h.path for h in hits[:checked]}, max(1, checked // 2)) if augment else []
        nominated = {h.path for h in extra}
        verified = self._verified(pixels, hits[:checked] + extra, keypoints.result())
        verified = [h for h in verified if h.inliers or h.path not in nominated]
        kept = {h.path for h in verified}
        hits = verified + [h for h in hits[checked:] if h.path not in kept]
        return [replace(h, rank=i) for i, h in enumerate(hits[:k] if k is not None else hits, 1)]

    def _region_candidates(self, pixels: np.ndarray, taken: set[str], n: int) -> list[SearchResult]:
        """Up to ``n`` files, not in ``taken``, best matched by regional vectors of the query."""
        regions = getattr(self.extractor, "embed_regions", None)
        if regions is None:
            return []
        vectors = regions(pixels, MIN_REGION_SIDE)
        if not len(vectors):
            return []
        best: dict[str, SearchResult] = {}
        for hits in self.search_vectors(vectors, n + len(taken)):
            for h in hits:
                if h.path not in taken and (h.path not in best or h.score > best[h.path].score):
                    best[h.path] = h
        return sorted(best.values(), key=lambda h: (-h.score, h.path))[:n]

    def require_keypoints(self) -> None:
        """Raise :class:`NoKeypoints` unless this index stores keypoints (``verify`` needs them)."""
        if not self.store.manifest.local:
            raise NoKeypoints(
                "this index stores no keypoints, so it cannot verify matches; "
                "build it with keypoints (lookalike index --keypoints sift)"
            )

    def candidate_features(self, paths: Sequence[str]) -> list[local.Features | None]:
        """Stored keypoints of indexed files (``None`` where there are none)."""
        recs = [self.store.catalog.get(p) for p in paths]
        stored = self.store.catalog.keypoints(r.row for r in recs if r is not None and r.row is not None)
        out = []
        for r in recs:
            blob = stored.get(r.row) if r is not None and r.row is not None else None
            out.append(local.Features.from_blobs(blob[2], blob[3], blob[0], blob[1]) if blob else None)
        return out

    def _verified(
        self, pixels: np.ndarray, hits: list[SearchResult], keypoints: local.Features | None = None
    ) -> list[SearchResult]:
        features = self.candidate_features([h.path for h in hits])
        matches = local.verify_query(pixels, features, self.store.manifest.local, keypoints)
        h, w = pixels.shape[:2]
        out = []
        for hit, m in zip(hits, matches):
            outline = m.outline(w, h)
            region = None if outline is None else tuple((round(float(x), 1), round(float(y), 1)) for x, y in outline)
            out.append(replace(hit, inliers=m.inliers, region=region))
        return sorted(out, key=lambda x: (x.inliers == 0, -x.inliers, -x.score, x.path))

    def verify_pair(self, query: Query, path: str) -> tuple[np.ndarray, local.Match]:
        """Verification of ``query`` against one indexed file: ``(query pixels, match)``."""
        self.require_keypoints()
        pixels, _ = self._pixels(query)
        return pixels, local.verify_query(pixels, self.candidate_features([path]), self.store.manifest.local)[0]

    def search_vectors(self, vectors: np.ndarray, k: int | None = 10, *, exact: bool = False) -> list[list[SearchResult]]:
        """Top-``k`` hits for each row of ``vectors`` (``(q, width)``, as stored).

        Uses the ANN structure when the index has one (see :meth:`ann_kind`),
        exact search otherwise or when ``exact`` or ``k=None``.
        """
        live = self.live()
        metric, bits = self.store.manifest.metric, self.extractor.dim
        if exact or k is None or not len(live.rows):
            return search_vectors(live, vectors, k, metric, bits)
        ann = self._ann if self._ann is not None and self._ann.ntotal == len(live.matrix) else self.update_ann()
        if ann is None:
            return search_vectors(live, vectors, k, metric, bits)
        bitmap, dead = self._live_bitmap(live)
        scores, rows = ann.search(vectors, k, bitmap, dead, live.matrix)
        return _hits_from_rows(live, scores, rows, k, metric, bits)

    def _live_bitmap(self, live: LiveSet) -> tuple[np.ndarray, int]:
        if self._bitmap is None:
            distinct = np.unique(live.rows)
            self._bitmap = (ann_mod.live_bitmap(distinct, len(live.matrix)), len(live.matrix) - len(distinct))
        return self._bitmap

    def neighbours(self, k: int = 10, *, batch: int = 1024, exact: bool = False):
        """Each indexed file's ``k`` nearest other files, computed in batches.

        Yields ``(path, hits)`` per file in path order; ``hits`` excludes the
        file itself (copies of it are included, with score 1). Memory stays
        ``O(batch x k)`` plus the search structure: no n x n matrix is formed.
        """
        live = self.live()
        for start in range(0, len(live.rows), batch):
            rows = live.rows[start : start + batch]
            vectors = np.asarray(live.matrix[rows])
            if self.store.manifest.metric != "hamming":
                vectors = vectors.astype(np.float32)
            found = self.search_vectors(vectors, k + 1, exact=exact)
            for offset, hits in enumerate(found):
                path = live.paths[start + offset]
                others = [h for h in hits if h.path != path][:k]
                yield path, [SearchResult(i + 1, h.path, h.score, h.id, h.distance) for i, h in enumerate(others)]

    def search_folder(self, folder: str | os.PathLike, k: int | None = 10) -> list[QueryResult]:
        """Every image under ``folder`` as a query, in path order."""
        return self.search_many([e.path for e in walk(os.path.expanduser(os.fspath(folder)))], k)

    def check(self) -> list[str]:
        """Integrity problems of the index directory; an empty list means consistent.

        The store's checks (catalog, row count, vector file, keypoints), the
        manifest against the extractor, the search structure ``ann.faiss``
        against its record and the vectors (see :mod:`lookalike.ann`), and
        duplicate action runs that were killed before they finished.
        """
        problems = self.store.check()
        problem = _extractor_problem(self.store.manifest, self.extractor)
        if problem:
            problems.append(problem)
        problem = self._ann_problem()
        if problem:
            problems.append(f"{problem}; searches rebuild it in memory until it is saved again")
        from .actions import unfinished_runs

        for log_path, n in unfinished_runs(self.path):
            what = "cannot be read" if n < 0 else f"was interrupted with {n} action(s) unfinished"
            problems.append(f"the duplicate action run logged in {log_path} {what}: "
                            f"`lookalike undo {log_path}` puts its files back")
        return problems

    def repair(self) -> list[str]:
        """Fix what :meth:`check` reports where possible, holding the writer lock; returns what
        was done, one line each (empty: nothing to do).

        A manifest dimension other than the extractor's is set back to it; the
        row count, rows and keypoints are repaired as by :meth:`IndexStore.repair`
        (files it forgets are indexed again by the next :meth:`add`); a search
        structure that does not fit the vectors is rebuilt.
        """
        metric_ok = self.extractor.metric == self.store.manifest.metric
        done = self.store.repair(dim=self.extractor.dim if metric_ok else None)
        self._live, self._ann, self._bitmap = None, None, None
        problem = self._ann_problem()
        if problem:
            with self.store.writing():
                ann_mod.remove(self.path)
                rebuilt = self.update_ann(save=True)
            done.append(f"{problem}: " + ("rebuilt it" if rebuilt is not None else "removed it (search is exact)"))
        return done

    def _ann_problem(self) -> str | None:
        """Why the saved search structure does not fit (``None``: it fits, there is none, or the rows are damaged)."""
        try:
            if self.store.damage():
                return None  # reported by the store's checks; looked at again after a repair
            matrix = self.store.matrix()
        except IndexDamaged:
            return None
        return ann_mod.problem(self.path, self.store.manifest.metric, matrix, self.store.catalog.identity())

    def record_id(self, rec: FileRecord) -> int:
        """The id that search results and :meth:`live` give the file of catalog record ``rec``."""
        return rec.id

    def skipped(self) -> list[FileRecord]:
        """Files that could not be indexed, with ``reason`` and ``detail``."""
        return list(self.store.catalog.records(status="skipped"))

    def info(self) -> IndexInfo:
        counts = self.store.catalog.counts()
        size = sum(p.stat().st_size for p in self.store.directory.iterdir() if p.is_file())
        return IndexInfo(
            path=self.path,
            manifest=asdict(self.store.manifest),
            files=counts["ok"],
            skipped=counts["skipped"],
            skip_reasons=self.store.catalog.skip_counts(),
            roots=self.store.catalog.roots(),
            vector_rows=self.store.catalog.n_rows(),
            bytes_on_disk=size,
        )

    def duplicates(self, threshold: float | None = None, k: int = 10, against=None, **kw):
        """Near-duplicate groups (``list[DuplicateGroup]``); see :mod:`lookalike.duplicates`.

        ``against``: another :class:`Index`, index directory or image folder:
        only matches between the two sets are reported.
        """
        from .duplicates import find_duplicates

        return find_duplicates(self, threshold=threshold, k=k, against=against, **kw)


def default_keypoints(extractor: Extractor) -> str | None:
    """``keypoints="auto"``: SIFT for the default extractor (cnn), none for the others."""
    return "sift" if extractor.name == registry.DEFAULT else None


def _query_name(q: Query, i: int) -> str:
    return display_path(os.fspath(q)) if isinstance(q, (str, os.PathLike)) else f"<image {i}>"


def query_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The query, its three quarter turns, and five regions of it.

    Regions (the four corners and the centre, each 60% of the width and height)
    let a picture framed inside a larger one, or a picture in a picture, meet
    its original at a similar scale; they are made only when at least
    :data:`MIN_REGION_SIDE` pixels on their shorter side. Mirror images are
    not needed here: the CNN vector of a mirror image is nearly that of the
    image (an ImageNet model learns with mirrored images), and verification
    matches mirrored keypoints itself.
    """
    views = [pixels, *(np.rot90(pixels, t) for t in (1, 2, 3))]
    h, w = pixels.shape[:2]
    ch, cw = max(1, round(h * 0.6)), max(1, round(w * 0.6))
    if min(ch, cw) >= MIN_REGION_SIDE:
        for top, left in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)):
            views.append(pixels[top : top + ch, left : left + cw])
    return [np.ascontiguousarray(v) for v in views]


def _same_file(rec: FileRecord, path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size == rec.size and st.st_mtime_ns == rec.mtime_ns


def _stored_extractor(store: IndexStore, threads: int | None) -> Extractor:
    """The extractor the manifest describes; settings it cannot be built from are damage."""
    try:
        return registry.create(store.manifest.extractor, threads=threads)
    except registry.UnknownExtractor:
        raise  # maybe a plugin that is not installed here: its own message says so
    except (TypeError, ValueError, KeyError) as e:
        raise IndexDamaged(f"{store.directory / 'manifest.json'} is damaged: extractor "
                           f"{store.manifest.extractor.get('name')!r} cannot be made from its settings ({e})") from None


def _extractor_problem(manifest: Manifest, ext: Extractor) -> str | None:
    """How the manifest's vector description disagrees with its extractor (``None``: it agrees)."""
    if manifest.metric != ext.metric:
        return f"manifest.json says {manifest.metric} vectors, its extractor {ext.name} makes {ext.metric} ones"
    if manifest.dim != ext.dim:
        return f"manifest.json says the vectors have {manifest.dim} dimensions, its extractor {ext.name} makes {ext.dim}"
    return None


def _hits_from_rows(live: LiveSet, scores: np.ndarray, rows: np.ndarray, k: int, metric: str, bits: int):
    """ANN rows -> hits: each row expanded to the live files that use it, ties by path."""
    order = np.argsort(live.rows, kind="stable")
    sorted_rows = live.rows[order]
    results = []
    for q_scores, q_rows in zip(scores, rows):
        entries, entry_scores = [], []
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
