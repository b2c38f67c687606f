"""Store stage: an index directory = manifest + SQLite catalog + vector file.

Layout of an index directory::

    manifest.json     schema version, extractor spec, dim, dtype, metric
    catalog.sqlite    files (path, size, mtime, content hash, status, row), roots, meta
    vectors.bin       raw (n_rows, width) array of the manifest's dtype
    lock              taken (flock) by the one process allowed to write
    NAME.npy          learned extractor state (listed in the manifest)
    ann.faiss         the search structure, ann.json its record (see lookalike.ann)

The names are fixed and the files must be regular files. Before anything is
written, the manifest's dimension, the catalog's row count, the rows its files
and keypoints use and the size of the vector file are checked against each
other (:meth:`IndexStore.damage`): a writer never truncates rows in use.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .catalog import Catalog, FileRecord
from ..errors import UsageError
from .manifest import (
    CATALOG_NAME,
    STATE_ROLE,
    VECTORS_NAME,
    ExtractorMismatch,
    IndexDamaged,
    IndexStoreError,
    Manifest,
    NotAnIndex,
    SchemaTooNew,
    atomic_write,
    check_extractor,
    is_state_file,
    manifest_problem,
    read_manifest,
    write_manifest,
)
from .vectors import VectorFile

__all__ = [
    "IndexStore", "Manifest", "FileRecord", "IndexStoreError", "NotAnIndex",
    "ExtractorMismatch", "SchemaTooNew", "IndexLocked", "IndexReadOnly", "IndexDamaged",
]


class IndexLocked(IndexStoreError):
    pass


class IndexReadOnly(IndexStoreError):
    pass


class IndexStore:
    """An open index directory. Reading is always allowed; writing needs :meth:`writing`."""

    def __init__(self, directory: str | os.PathLike, manifest: Manifest):
        self.directory = Path(directory)
        self.manifest = manifest
        for name in (CATALOG_NAME, CATALOG_NAME + "-wal", CATALOG_NAME + "-shm", VECTORS_NAME, "lock"):
            self._require_regular(name)  # SQLite and the lock would follow a link out of the folder
        self.catalog = Catalog(str(self.directory / CATALOG_NAME))
        self.vectors = VectorFile(str(self.directory / VECTORS_NAME), self._width(manifest), manifest.dtype)
        self._lock_fd: int | None = None

    def _require_regular(self, name: str) -> None:
        """Refuse an own file that is a symbolic link, a device or a folder (a missing one is fine)."""
        try:
            mode = os.lstat(self.directory / name).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise IndexDamaged(f"{self.directory / name} is {kind}; an index's own files must be regular files in it")

    @staticmethod
    def _width(m: Manifest) -> int:
        return m.dim // 8 if m.metric == "hamming" else m.dim

    @classmethod
    def create(cls, directory: str | os.PathLike, manifest: Manifest) -> "IndexStore":
        problem = manifest_problem(manifest)
        if problem:
            raise UsageError(f"cannot make an index with this manifest: {problem}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(directory / "manifest.json"):
            raise IndexStoreError(f"{directory} already holds an index; open it instead")
        own = {CATALOG_NAME, CATALOG_NAME + "-wal", CATALOG_NAME + "-shm",
               VECTORS_NAME, "manifest.json.tmp", "lock"}
        if any(p.name not in own for p in directory.iterdir()):
            raise IndexStoreError(f"{directory} is not empty; choose a new or empty folder for the index")
        # Only our own files and no manifest: a creation that was interrupted. Start over.
        for name in own - {"lock"}:
            (directory / name).unlink(missing_ok=True)
        store = cls(directory, manifest)  # creates catalog
        store.vectors.truncate(0)
        write_manifest(directory, manifest)  # last: its presence marks a complete index
        return store

    @classmethod
    def open(
        cls, directory: str | os.PathLike, extractor_spec: dict[str, Any] | None = None, *, validate: bool = True
    ) -> "IndexStore":
        """Open an index directory; :class:`IndexDamaged` if its files disagree (see :meth:`damage`).

        ``validate=False`` opens a damaged index anyway, for :meth:`check` and :meth:`repair`.
        """
        manifest = read_manifest(directory)
        if extractor_spec is not None:
            check_extractor(manifest, extractor_spec, str(directory))
        store = cls(directory, manifest)
        if validate:
            try:
                store.require_sound()
            except BaseException:
                store.close()
                raise
        return store

    def close(self) -> None:
        self.release()
        self.catalog.close()

    # -- writer lock -------------------------------------------------------
    def acquire(self) -> None:
        """Become the only writer; raises :class:`IndexLocked` if another process is, and
        :class:`IndexDamaged` (before anything is written) if the index is damaged."""
        if self._lock_fd is not None:
            return
        self._lock()
        try:
            self.require_sound()
            # drop bytes a killed writer appended but never committed
            self.vectors.truncate(self.catalog.n_rows())
        except BaseException:
            self.release()
            raise

    def _lock(self) -> None:
        path = self.directory / "lock"
        try:
            if self.catalog.readonly:
                raise PermissionError(errno.EACCES, "the catalog cannot be written")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise IndexReadOnly(f"the index {self.directory} is read-only ({e.strerror}): cannot add to it") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexLocked(
                    f"another lookalike process (pid {holder}) is writing to {self.directory}; "
                    "wait for it to finish"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    @contextmanager
    def writing(self) -> Iterator["IndexStore"]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    @contextmanager
    def locked(self) -> Iterator["IndexStore"]:
        """Hold the writer lock without touching the index's files (``undo`` of duplicate
        actions: it changes users' files, not the index, and must work on a damaged one)."""
        if self._lock_fd is not None:
            yield self
            return
        self._lock()
        try:
            yield self
        finally:
            self.release()

    # -- consistency -----------------------------------------------------------
    def damage(self) -> list[str]:
        """What makes the manifest, the catalog and the vector file disagree (empty: nothing).

        Checked: ``n_rows`` is a row count, the vector file holds that many rows
        of the manifest's width, and no indexed file or keypoints entry uses a
        row past them. Read in one catalog transaction, the file size after it
        (rows are appended to the file before their commit), so a writer
        committing meanwhile is never taken for damage. :meth:`repair` fixes each.
        """
        db, problems = self.catalog.db, []
        db.execute("BEGIN")
        try:
            n_rows = self.catalog.stored_n_rows()
            used, unnumbered = self.catalog.rows_in_use()
        finally:
            db.execute("COMMIT")
        size = self.vectors.size() or 0
        if n_rows is None:
            return [f"catalog.sqlite: {self.catalog.n_rows_problem()}"]
        if size < n_rows * self.vectors.row_bytes:
            problems.append(self.vectors.shortfall(size, n_rows))
        if used > n_rows:
            past = len(self.catalog.paths_without_rows(n_rows)) - unnumbered
            what = f"{past} indexed files use" if past else "keypoints are stored for"
            problems.append(f"{what} vector rows up to {used - 1}, past the {n_rows} committed "
                            "ones (n_rows in catalog.sqlite)")
        if unnumbered:
            problems.append(f"{unnumbered} indexed files have no vector row")
        return problems

    def require_sound(self) -> None:
        """Raise :class:`IndexDamaged` naming the first of :meth:`damage`'s problems."""
        problems = self.damage()
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise IndexDamaged(f"the index {self.directory} is damaged: {problems[0]}{more}; "
                               f"`lookalike check --repair {self.directory}` repairs it")

    def check(self) -> list[str]:
        """Integrity problems (empty list = consistent): catalog, vector rows, file size, keypoints."""
        problems = []
        db = self.catalog.db
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"catalog.sqlite: {result}")
        problems += self.damage()
        odd = db.execute(
            "SELECT count(*) FROM files WHERE status='skipped' AND (reason IS NULL OR row IS NOT NULL)"
        ).fetchone()[0]
        if odd:
            problems.append(f"{odd} skipped files without a reason or with a vector")
        bad = self.catalog.bad_keypoint_rows()
        if bad:
            problems.append(f"{len(bad)} keypoints entries are damaged (vector rows {_some(bad)}); "
                            "`search --verify` treats their files as having no keypoints")
        return problems

    def repair(self, dim: int | None = None) -> list[str]:
        """Fix what :meth:`check` finds where possible, under the writer lock; returns what was done.

        ``dim``: the extractor's dimension, put back into a manifest that says
        otherwise. A row count below the rows in use is raised when the vector
        file holds those rows; files whose rows it lacks, and files with damaged
        keypoints, are forgotten, so the next ``lookalike index`` embeds them again.
        """
        done: list[str] = []
        self._lock()
        try:
            if dim is not None and dim != self.manifest.dim:
                done.append(f"manifest.json: dim {self.manifest.dim} -> {dim} (the extractor's)")
                self.manifest.dim = dim
                write_manifest(self.directory, self.manifest)
                self.vectors = VectorFile(self.vectors.path, self._width(self.manifest), self.manifest.dtype)
            done += self._repair_rows()
        finally:
            self.release()
        return done

    def _repair_rows(self) -> list[str]:
        catalog, done = self.catalog, []
        stored = catalog.stored_n_rows()
        held = (self.vectors.size() or 0) // self.vectors.row_bytes  # whole rows in the file
        used, _ = catalog.rows_in_use()
        n_rows = max(stored or 0, used)
        bad_keypoints = catalog.bad_keypoint_rows()
        forget = set(catalog.paths_without_rows(min(n_rows, held)))
        forget |= set(catalog.paths_at_rows(bad_keypoints))
        drop = set(bad_keypoints)
        if n_rows > held:
            drop |= {r for (r,) in catalog.db.execute("SELECT row FROM keypoints WHERE row >= ?", (held,))}
            n_rows = held
        if n_rows != stored:
            where = "the rows in use" if n_rows == used else "the whole rows vectors.bin holds"
            done.append(f"n_rows: {stored if stored is not None else 'invalid'} -> {n_rows} ({where})")
        if forget:
            n = len(forget)
            done.append(f"forgot {n} file{'s' * (n != 1)} whose vector rows or keypoints were missing or "
                        f"damaged (e.g. {min(forget)}); `lookalike index` indexes them again")
        if drop:
            done.append(f"removed {len(drop)} damaged or unusable keypoints entr{'y' if len(drop) == 1 else 'ies'}")
        if done:
            catalog.forget(paths=sorted(forget), keypoint_rows=sorted(drop), n_rows=n_rows)
        return done

    # -- the manifest: only the store writes it -----------------------------------
    def note_file(self, name: str, role: str) -> None:
        """List one of the index's own files (e.g. ``ann.faiss``) in the manifest, once.
        The caller holds the writer lock."""
        if self.manifest.files.get(name) != role:
            self.manifest.files[name] = role
            write_manifest(self.directory, self.manifest)

    def set_ann(self, kind: str) -> None:
        """Record the search structure the index uses (``auto``, ``exact``, ``hnsw``, ``ivfpq``)."""
        if kind != self.manifest.ann:
            with self.writing():
                self.manifest.ann = kind
                write_manifest(self.directory, self.manifest)

    # -- learned extractor state ------------------------------------------------
    STATE_ROLE = STATE_ROLE

    def save_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Store arrays as ``NAME.npy`` (atomically), then list them in the manifest."""
        for name, array in arrays.items():
            if not is_state_file(f"{name}.npy"):
                raise UsageError(f"extractor state needs a plain file name, not {name!r}")
            data = np.ascontiguousarray(array)
            atomic_write(self.directory / f"{name}.npy", lambda f: np.save(f, data, allow_pickle=False))
            self.manifest.files[f"{name}.npy"] = self.STATE_ROLE
        write_manifest(self.directory, self.manifest)

    def load_state(self) -> dict[str, np.ndarray]:
        out = {}
        for name, role in self.manifest.files.items():
            if role == self.STATE_ROLE:
                self._require_regular(name)
                out[Path(name).stem] = np.load(self.directory / name, allow_pickle=False)
        return out

    # -- data ----------------------------------------------------------------
    def snapshot(self) -> tuple[list[int], list[str], list[int], np.ndarray]:
        """ids, paths and vector rows of every indexed file, with the vector matrix, read
        in one catalog transaction (rows are appended before their commit, so the matrix
        read here covers every row the files use)."""
        db = self.catalog.db
        db.execute("BEGIN")
        try:
            ids, paths, rows = self.catalog.live()
            matrix = self.matrix()
        finally:
            db.execute("COMMIT")
        return ids, paths, rows, matrix

    def matrix(self) -> np.ndarray:
        """Memory map of every committed vector row (live or not)."""
        return self.vectors.read(self.catalog.n_rows())

    def commit(self, *, vectors: np.ndarray | None = None, records=(), local=None, **kw) -> None:
        """Append ``vectors`` (rows referenced by ``records``' ``row``) and commit all at once.

        ``records`` with ``row=None`` and ``status='ok'`` are numbered in order
        onto the appended rows. ``local``: one :class:`lookalike.verify.Features`
        (or ``None``) per vector, stored with it in the same transaction.
        """
        if self._lock_fd is None:
            raise IndexStoreError("commit needs the writer lock (use store.writing())")
        n_rows = self.catalog.n_rows()
        records = list(records)
        if vectors is not None and len(vectors):
            self.vectors.append(n_rows, vectors)
            fresh = iter(range(n_rows, n_rows + len(vectors)))
            records = [
                r if (r.status != "ok" or r.row is not None) else _with_row(r, next(fresh))
                for r in records
            ]
            if local is not None:
                kw["keypoints"] = [
                    (n_rows + i, f.width, f.height, *f.to_blobs()) for i, f in enumerate(local) if f is not None
                ]
            n_rows += len(vectors)
        self.catalog.commit(upserts=records, n_rows=n_rows, **kw)


def _some(rows: list[int], n: int = 5) -> str:
    return ", ".join(map(str, rows[:n])) + (", ..." if len(rows) > n else "")


def _with_row(r: FileRecord, row: int) -> FileRecord:
    from dataclasses import replace

    return replace(r, row=row)
