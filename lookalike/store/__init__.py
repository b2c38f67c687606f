"""Store stage: an index directory = manifest + SQLite catalog + vector file.

Layout of an index directory::

    manifest.json     schema version, extractor spec, dim, dtype, metric
    catalog.sqlite    files (path, size, mtime, content hash, status, row), roots, meta
    vectors.bin       raw (n_rows, width) array of the manifest's dtype
    lock              taken (flock) by the one process allowed to write
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .catalog import Catalog, FileRecord
from .manifest import (
    ExtractorMismatch,
    IndexStoreError,
    Manifest,
    NotAnIndex,
    SchemaTooNew,
    check_extractor,
    read_manifest,
    write_manifest,
)
from .vectors import VectorFile

__all__ = [
    "IndexStore", "Manifest", "FileRecord", "IndexStoreError", "NotAnIndex",
    "ExtractorMismatch", "SchemaTooNew", "IndexLocked", "IndexReadOnly",
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
        self.catalog = Catalog(str(self.directory / manifest.catalog))
        self.vectors = VectorFile(
            str(self.directory / manifest.vectors), self._width(manifest), manifest.dtype
        )
        self._lock_fd: int | None = None

    @staticmethod
    def _width(m: Manifest) -> int:
        return m.dim // 8 if m.metric == "hamming" else m.dim

    @classmethod
    def create(cls, directory: str | os.PathLike, manifest: Manifest) -> "IndexStore":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "manifest.json").exists():
            raise IndexStoreError(f"{directory} already holds an index; open it instead")
        own = {manifest.catalog, manifest.catalog + "-wal", manifest.catalog + "-shm",
               manifest.vectors, "manifest.json.tmp", "lock"}
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
    def open(cls, directory: str | os.PathLike, extractor_spec: dict[str, Any] | None = None) -> "IndexStore":
        manifest = read_manifest(directory)
        if extractor_spec is not None:
            check_extractor(manifest, extractor_spec, str(directory))
        return cls(directory, manifest)

    def close(self) -> None:
        self.release()
        self.catalog.close()

    # -- writer lock -------------------------------------------------------
    def acquire(self) -> None:
        """Become the only writer; raises :class:`IndexLocked` if another process is."""
        if self._lock_fd is not None:
            return
        path = self.directory / "lock"
        try:
            if self.catalog.readonly:
                raise PermissionError(errno.EACCES, "the catalog cannot be written")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
        # drop bytes a killed writer appended but never committed
        self.vectors.truncate(self.catalog.n_rows())

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

    def check(self) -> list[str]:
        """Integrity problems (empty list = consistent): catalog, vector rows, file size."""
        problems = []
        db = self.catalog.db
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"catalog.sqlite: {result}")
        n_rows = self.catalog.n_rows()
        size = os.path.getsize(self.vectors.path) if os.path.exists(self.vectors.path) else 0
        if size < n_rows * self.vectors.row_bytes:
            problems.append(f"vector file has {size} bytes, {n_rows} committed rows need {n_rows * self.vectors.row_bytes}")
        bad = db.execute(
            "SELECT count(*) FROM files WHERE status='ok' AND (row IS NULL OR row < 0 OR row >= ?)", (n_rows,)
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} indexed files point at missing vector rows")
        odd = db.execute(
            "SELECT count(*) FROM files WHERE status='skipped' AND (reason IS NULL OR row IS NOT NULL)"
        ).fetchone()[0]
        if odd:
            problems.append(f"{odd} skipped files without a reason or with a vector")
        return problems

    # -- learned extractor state ------------------------------------------------
    STATE_ROLE = "extractor state"

    def save_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Store arrays as ``NAME.npy`` (atomically), then list them in the manifest."""
        for name, array in arrays.items():
            tmp = self.directory / f"{name}.npy.tmp"
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / f"{name}.npy")
            self.manifest.files[f"{name}.npy"] = self.STATE_ROLE
        write_manifest(self.directory, self.manifest)

    def load_state(self) -> dict[str, np.ndarray]:
        return {
            Path(name).stem: np.load(self.directory / name, allow_pickle=False)
            for name, role in self.manifest.files.items()
            if role == self.STATE_ROLE
        }

    # -- data ----------------------------------------------------------------
    def matrix(self) -> np.ndarray:
        """Memory map of every committed vector row (live or not)."""
        return self.vectors.read(self.catalog.n_rows())

    def commit(self, *, vectors: np.ndarray | None = None, records=(), local=None, **kw) -> None:
        """Append ``vectors`` (rows referenced by ``records``' ``row``) and commit all at once.

        ``records`` with ``row=None`` and ``status='ok'`` are numbered in order
        onto the appended rows. ``local``: one :class:`lookalike.local.Features`
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


def _with_row(r: FileRecord, row: int) -> FileRecord:
    from dataclasses import replace

    return replace(r, row=row)
