"""The Python API: create or open an index, add folders, search."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from PIL import Image

from . import ann as ann_mod, decode, indexer, query as pipeline
from .errors import UsageError
from .extractors import Extractor, registry
from .query import MIN_REGION_SIDE, VERIFY_CANDIDATES, NoKeypoints, QueryError, query_views  # noqa: F401 (API)
from .search import COPY_CANDIDATES, LiveSet, SearchBackend, SearchResult, VectorSearch, copies_first, with_copy_scores
from .shards import shard_filter
from .sources import DEFAULT_CONTENT_HASH, display_path
from .store import FileRecord, IndexDamaged, IndexStore, Manifest
from .verify import Match, settings as keypoint_settings
from .version import __version__

if TYPE_CHECKING:
    from .duplicates import DuplicateGroup

#: Notes (a search structure rebuilt, ...) go to this logger; the CLI prints them as "note: ...".
log = logging.getLogger("lookalike")

Query = str | os.PathLike | np.ndarray | Image.Image

#: float16 vectors up to this size (as float32) are held in memory for fast exact search;
#: larger collections stay memory-mapped and are searched through the ANN structure.
DENSE_LIMIT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class QueryResult:
    """Hits for one query of a batch; ``error`` set (and ``hits`` empty) if it failed."""

    query: str
    hits: list[SearchResult]
    error: str | None = None  # a SkipReason value
    detail: str | None = None


def default_index_dir(folder: str | os.PathLike) -> str:
    """Where `lookalike duplicates FOLDER` keeps the index of ``folder`` when no
    ``--index`` is given: ``$LOOKALIKE_CACHE`` (default ``$XDG_CACHE_HOME/lookalike``
    or ``~/.cache/lookalike``) ``/indexes/<folder name>-<hash of its absolute path>``."""
    import hashlib

    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    cache = os.environ.get("LOOKALIKE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lookalike")
    digest = hashlib.blake2b(os.fsencode(path), digest_size=6).hexdigest()
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(path) or "root")[:40]
    return os.path.join(cache, "indexes", f"{name}-{digest}")


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
    copy_threshold: float | None = None  # hits' copy_score from here up are copies (None: no copy score)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Index:
    """A persistent image index in one directory.

    >>> index = Index.create("pics.idx", extractor="cnn")   # doctest: +SKIP
    >>> index.add("~/Pictures")                               # doctest: +SKIP
    >>> index.search("query.jpg", k=5)[0].path                # doctest: +SKIP
    """

    def __init__(self, store: IndexStore, extractor: Extractor, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
                 backend: SearchBackend | None = None):
        self.store = store
        self.extractor = extractor
        self.max_pixels = max_pixels
        #: where the vectors are searched: this folder (FAISS or exact) or a Milvus collection
        self.backend = backend if backend is not None else ann_mod.FolderSearch()
        self._live: LiveSet | None = None
        self._live_key: tuple | None = None

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        extractor: str | dict | Extractor | None = None,
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
        a JSON spec string or dict with settings, or an :class:`Extractor`;
        default (``None`` or ``"default"``): :func:`~lookalike.extractors.registry.default_spec`,
        SSCD copies first then the CNN where the ``sscd`` extra is installed, else ``cnn``.

        ``keypoints``: local features stored for ``search(..., verify=True)``:
        ``"sift"`` (or a dict of :data:`lookalike.verify.DEFAULTS` settings),
        ``None`` for none, ``"auto"`` (default): SIFT with the ``cnn`` extractor
        (the default configuration), none with the others.
        """
        ext = registry.create(extractor if extractor is not None else registry.default_spec(), threads=threads)
        store = IndexStore.create(os.path.expanduser(os.fspath(path)), new_manifest(ext, ann, storage, keypoints))
        take_state(store, ext)
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
        return cls.create(path, extractor, **kw)

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.backend.close()

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
        folder = os.path.expanduser(os.fspath(folder))
        self.backend.before_add(self, shard)
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
        self.backend.set_kind(self, kind)

    def ann_kind(self) -> str:
        """The structure searches use now (``exact``, ``hnsw``, ``ivfpq``, or Milvus's)."""
        return self.backend.kind(self)

    def update_ann(self, *, save: bool = False) -> ann_mod.AnnIndex | None:
        """Bring the search structure up to date with the committed vectors (for a folder,
        :func:`lookalike.ann.open_search`: the FAISS structure, ``None`` when the index
        searches exactly). ``save=True`` writes it back (the caller must be the writer,
        or hold no one's lock)."""
        return self.backend.refresh(self, save=save)

    def vector_search(self, *, exact: bool = False, every: bool = False) -> VectorSearch:
        """The search structure over the current snapshot (a
        :class:`~lookalike.search.VectorSearch`): FAISS, exact or Milvus, as the index
        uses; ``exact`` (or ``every``, for a search that wants every file, on a folder)
        gives :class:`~lookalike.search.ExactSearch`."""
        return self.backend.vector_search(self, exact=exact, every=every)

    # -- reading -------------------------------------------------------------
    def live(self) -> LiveSet:
        """The searchable vectors, refreshed whenever another process committed."""
        key = self.store.catalog.change_key()
        if self._live is None or key != self._live_key:
            ids, paths, rows, matrix = self.store.snapshot()
            if matrix.dtype == np.float16 and matrix.size * 4 <= DENSE_LIMIT_BYTES:
                # BLAS has no float16: converting per query would dominate exact search
                matrix = np.asarray(matrix, dtype=np.float32)
            file_ids = self.backend.file_ids(np.asarray(ids, np.int64), paths)
            self._live = LiveSet(file_ids, paths, np.asarray(rows, np.int64), matrix)
            self._live_key = key
        return self._live

    def _prepare(self, query: Query) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(stored_vector, None)`` for an indexed, unchanged path, else ``(None, prepared)``."""
        if not isinstance(query, (Image.Image, np.ndarray)):
            path = os.path.abspath(os.path.expanduser(os.fspath(query)))
            rec = self.store.catalog.get(display_path(path))
            if rec is not None and rec.status == "ok" and _same_file(rec, path):
                stored = np.array(self.live().matrix[rec.row])
                return (stored if self.store.manifest.metric == "hamming" else stored.astype(np.float32)), None
        pixels, name = pipeline.decode_query(query, self.max_pixels, min_side=self.extractor.min_side)
        return None, pipeline.prepare(self.extractor, pixels, name)

    def embed(self, query: Query) -> np.ndarray:
        """One query (path, PIL image or RGB array) -> its ``(width,)`` vector.

        An indexed path whose file is unchanged reuses its stored vector.
        """
        stored, prepared = self._prepare(query)
        return stored if stored is not None else self.extractor.embed_prepared([prepared])[0]

    def embed_many(self, queries: Sequence[Query]) -> np.ndarray:
        """Several queries -> their ``(n, width)`` vectors, embedded in one batch
        (:class:`QueryError` on the first that cannot be used)."""
        pending = [self._prepare(q) for q in queries]
        fresh = [p for v, p in pending if v is None]
        embedded = iter(self.extractor.embed_prepared(fresh)) if fresh else iter(())
        width = self.store.vectors.width
        if not pending:
            return np.zeros((0, width), np.uint8 if self.store.manifest.metric == "hamming" else np.float32)
        return np.stack([v if v is not None else next(embedded) for v, _ in pending])

    def search(
        self, query: Query, k: int | None = 10, *, verify: bool | int = False, augment: bool | None = None
    ) -> list[SearchResult]:
        """The ``k`` indexed images most like ``query`` (a path, PIL image or RGB array).

        ``verify``: re-rank the best :data:`~lookalike.query.VERIFY_CANDIDATES` (or
        ``verify`` if an int) by geometric verification against the keypoints stored
        at index time; verified hits come first, by inlier count, and carry
        ``inliers``, ``region`` and ``match``. ``augment``: also search the query's
        quarter turns and five regions, keeping each file's best score (finds
        rotated and framed copies); default: on when verifying. An extractor that
        ranks copies first (the default with the sscd extra) also searches regions
        of the query with its copy descriptor unless ``augment=False`` (finds
        pictures pasted into others). The steps are those of :mod:`lookalike.query`.

        Raises :class:`QueryError` when the query image cannot be decoded.
        """
        copy_regions = self.extractor.copies_first and augment is not False
        augment = bool(verify) if augment is None else augment
        if verify or augment or copy_regions:
            return pipeline.robust_search(self, query, k, verify, augment, copy_regions)
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
        if verify or augment or (self.extractor.copies_first and augment is None):
            for i, q in enumerate(queries):
                name = pipeline.query_name(q, i)
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
            name = pipeline.query_name(q, i)
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

    # -- verification (the steps are in lookalike.query) ------------------------------
    def require_keypoints(self) -> None:
        """Raise :class:`NoKeypoints` unless this index stores keypoints (``verify`` needs them)."""
        pipeline.require_keypoints(self)

    def candidate_features(self, paths: Sequence[str]):
        """Stored keypoints of indexed files (``None`` where there are none)."""
        return pipeline.candidate_features(self, paths)

    def query_pixels(self, query: Query) -> np.ndarray:
        """The decoded RGB pixels of a query (:class:`QueryError` if it cannot be decoded)."""
        return pipeline.decode_query(query, self.max_pixels)[0]

    def verify_pair(self, query: Query, path: str) -> tuple[np.ndarray, Match]:
        """Verification of ``query`` against one indexed file: ``(query pixels, match)``."""
        return pipeline.verify_pair(self, query, path)

    def search_vectors(self, vectors: np.ndarray, k: int | None = 10, *, exact: bool = False) -> list[list[SearchResult]]:
        """Top-``k`` hits for each row of ``vectors`` (``(q, width)``, as stored).

        Uses the index's search structure (:meth:`vector_search`): FAISS when the
        index has one, exact search otherwise or when ``exact`` or ``k=None``.
        """
        ext = self.extractor
        n = k if k is None or not ext.copies_first else max(k, COPY_CANDIDATES)
        found = with_copy_scores(ext, self.live(), vectors, self.vector_search(exact=exact, every=n is None).hits(vectors, n))
        if ext.copies_first:
            threshold = ext.copy_threshold()
            found = [copies_first(hits, threshold)[:k] for hits in found]
        return found

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
        problem = self._missing_files_problem()
        if problem:
            problems.append(problem)
        from .actions import unfinished_runs

        for log_path, n in unfinished_runs(self.path):
            what = "cannot be read" if n < 0 else f"was interrupted with {n} action(s) unfinished"
            problems.append(f"the duplicate action run logged in {log_path} {what}: "
                            f"`lookalike undo {log_path}` puts its files back")
        return problems

    def missing_files(self) -> list[str]:
        """Indexed files (path order) that no longer exist on disk: moved, renamed or deleted
        since they were indexed. The next :meth:`add` of their folder forgets them."""
        return [r.path for r in self.store.catalog.records(status="ok") if not os.path.lexists(r.path)]

    def _missing_files_problem(self) -> str | None:
        missing = self.missing_files()
        if not missing:
            return None
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        return (f"{len(missing)} indexed file(s) no longer exist on disk ({shown}); "
                "`lookalike index` on their folder forgets them")

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
        self._live = None
        if isinstance(self.backend, ann_mod.FolderSearch):
            self.backend.forget()
        problem = self._ann_problem()
        if problem:
            with self.store.writing():
                ann_mod.remove(self.path)
                rebuilt = self.update_ann(save=True)
            done.append(f"{problem}: " + ("rebuilt it" if rebuilt is not None else "removed it (search is exact)"))
        return done + self.backend.repair(self)

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
        return self.backend.record_id(rec)

    def skipped(self) -> list[FileRecord]:
        """Files that could not be indexed, with ``reason`` and ``detail``."""
        return list(self.store.catalog.records(status="skipped"))

    def info(self) -> IndexInfo:
        counts = self.store.catalog.counts()
        size = sum(p.stat().st_size for p in self.store.directory.iterdir() if p.is_file())
        return IndexInfo(
            path=self.path,
            manifest={**asdict(self.store.manifest), **self.backend.describe()},
            files=counts["ok"],
            skipped=counts["skipped"],
            skip_reasons=self.store.catalog.skip_counts(),
            roots=self.store.catalog.roots(),
            vector_rows=self.store.catalog.n_rows(),
            bytes_on_disk=size,
            copy_threshold=self.copy_threshold(),
        )

    def copy_threshold(self) -> float | None:
        """The copy score from which a hit is a copy, for extractors with a calibrated
        copy score (``sscd``, the default with the sscd extra); ``None`` for the others."""
        return self.extractor.copy_threshold() if self.extractor.has_copy_score() else None

    def duplicates(self, threshold: float | None = None, k: int = 10, against=None, **kw) -> list[DuplicateGroup]:
        """Duplicate groups (``list[DuplicateGroup]``); see :mod:`lookalike.duplicates`.

        ``level``: ``"exact"``, ``"near"`` (the default, safe for actions) or
        ``"edited"`` (:mod:`lookalike.levels`). ``keep``: the keeper rule
        (``"largest"``, ``"oldest"``, ``"newest"``, ``"shortest-path"``, ``"in:FOLDER"``).
        ``against``: another :class:`Index`, index directory or image folder:
        only matches between the two sets are reported.
        """
        from .duplicates import find_duplicates

        return find_duplicates(self, threshold=threshold, k=k, against=against, **kw)


def new_manifest(ext: Extractor, ann: str = "auto", storage: str | None = None,
                 keypoints: str | dict | None = "auto") -> Manifest:
    """The manifest of a new index (local or Milvus) for ``ext``; settings checked here."""
    ann_mod.resolve(ann, 0)  # validate early
    if keypoints == "auto":
        keypoints = default_keypoints(ext)
    dtype = ext.dtype
    if ext.metric != "hamming":
        dtype = storage or "float16"
        if dtype not in ("float16", "float32"):
            raise UsageError("storage must be 'float16' or 'float32'")
    return Manifest(extractor=ext.spec(), dim=ext.dim, dtype=dtype, metric=ext.metric,
                    lookalike_version=__version__, ann=ann, local=keypoint_settings(keypoints),
                    content_hash=DEFAULT_CONTENT_HASH)


def take_state(store: IndexStore, ext: Extractor) -> None:
    """A trainable extractor takes the state stored in the index; one trained beforehand
    (and an index without state) keeps its own, which is stored."""
    if not ext.trainable:
        return
    state = store.load_state()
    if state:
        ext.load_state(state)
    elif ext.is_trained():
        with store.writing():
            store.save_state(ext.state())


def default_keypoints(extractor: Extractor) -> str | None:
    """``keypoints="auto"``: SIFT for the default extractor (cnn), none for the others."""
    return "sift" if extractor.name == registry.DEFAULT else None


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
