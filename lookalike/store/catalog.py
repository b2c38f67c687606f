"""``catalog.sqlite``: one row per file seen, with its identity and status.

``status`` is ``ok`` (the file has a vector at ``row`` of the vector file) or
``skipped`` (``reason`` is a :class:`lookalike.decode.SkipReason` value and
``detail`` the decoder's message). ``meta`` holds the schema version,
``n_rows``, the number of committed vector rows, and ``index_id``, a random
identity given to the index when it is made (or first opened by a writer) that
the search structure's record names (see :mod:`lookalike.ann`).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..roots import Root
from .manifest import IndexDamaged, SchemaTooNew

#: The catalog's schema version; :data:`MIGRATIONS` brings older catalogs up to it.
CATALOG_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, added_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS root_identity (
    path TEXT PRIMARY KEY, real TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
    reason TEXT,
    detail TEXT,
    row INTEGER,
    indexed_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_hash ON files (content_hash);
CREATE TABLE IF NOT EXISTS keypoints (
    row INTEGER PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    xy BLOB NOT NULL,
    descriptors BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class FileRecord:
    id: int | None
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    status: str
    reason: str | None = None
    detail: str | None = None
    row: int | None = None


_COLUMNS = "id, path, size, mtime_ns, content_hash, width, height, status, reason, detail, row"

#: A keypoints row as :meth:`lookalike.verify.Features.to_blobs` writes it: n (x, y) float32
#: pairs and n 128-byte descriptors, and the image's size.
_KEYPOINTS_SOUND = (
    "typeof(xy) = 'blob' AND typeof(descriptors) = 'blob' AND length(xy) % 8 = 0"
    " AND length(descriptors) % 128 = 0 AND length(xy) / 8 = length(descriptors) / 128"
    " AND typeof(width) = 'integer' AND typeof(height) = 'integer' AND width > 0 AND height > 0"
)
#: An ``ok`` file whose row is not a vector row number.
_NO_ROW = "(row IS NULL OR typeof(row) != 'integer' OR row < 0)"


class Catalog:
    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        if not readonly:
            try:
                self.db = sqlite3.connect(path, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                found = _stored_version(self.db, path)  # before anything is created or changed
                self.db.executescript(_SCHEMA)
                self.db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('catalog_version', ?), ('n_rows', '0'), ('index_id', ?)",
                    (str(CATALOG_VERSION if found is None else found), uuid.uuid4().hex),
                )
                _migrate(self.db, CATALOG_VERSION if found is None else found)
            except sqlite3.OperationalError as e:  # a read-only file, folder or file system
                self.db.close()
                if not os.path.exists(path) or "readonly" not in str(e) and "unable to open" not in str(e):
                    raise
                self.readonly = True
        if self.readonly:
            self.db = _connect_readonly(path)
            _stored_version(self.db, path)  # a newer catalog is refused; an older one is read as it is
        self.db.execute("PRAGMA busy_timeout=10000")

    def close(self) -> None:
        self.db.close()

    # -- reads -------------------------------------------------------------
    def n_rows(self) -> int:
        """The number of committed vector rows; :class:`IndexDamaged` if ``meta`` holds no such number."""
        n = self.stored_n_rows()
        if n is None:
            directory = os.path.dirname(self.path)
            raise IndexDamaged(f"{self.path} is damaged: {self.n_rows_problem()}; "
                               f"`lookalike check --repair {directory}` repairs it")
        return n

    def stored_n_rows(self) -> int | None:
        """``n_rows`` as stored, or ``None`` when it is missing or not a whole number >= 0."""
        row = self.db.execute("SELECT value FROM meta WHERE key='n_rows'").fetchone()
        try:
            n = int(row[0]) if row is not None and isinstance(row[0], (str, int)) else None
        except ValueError:
            return None
        return n if n is not None and n >= 0 else None

    def n_rows_problem(self) -> str | None:
        """What is wrong with the stored ``n_rows`` (``None``: nothing)."""
        if self.stored_n_rows() is not None:
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key='n_rows'").fetchone()
        return f"its vector row count (n_rows) is {'missing' if row is None else repr(row[0])}, not a number of rows"

    def identity(self) -> str | None:
        """The index's random identity (``None`` in a read-only catalog made before identities)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='index_id'").fetchone()
        return str(row[0]) if row else None

    def rows_in_use(self) -> tuple[int, int]:
        """``(rows, unnumbered)``: 1 + the largest vector row an ``ok`` file or a keypoints entry
        uses (0 when none), and the number of ``ok`` files without a valid row number."""
        used, unnumbered = self.db.execute(
            f"SELECT max(CASE WHEN {_NO_ROW} THEN -1 ELSE row END), sum({_NO_ROW})"
            " FROM files WHERE status='ok'"
        ).fetchone()
        (keypoints,) = self.db.execute("SELECT max(row) FROM keypoints").fetchone()
        rows = max(-1 if used is None else used, -1 if keypoints is None else keypoints) + 1
        return rows, unnumbered or 0

    def paths_without_rows(self, n_rows: int) -> list[str]:
        """``ok`` files whose vector row is not one of the first ``n_rows``."""
        q = f"SELECT path FROM files WHERE status='ok' AND ({_NO_ROW} OR row >= ?) ORDER BY path"
        return [p for (p,) in self.db.execute(q, (n_rows,))]

    def bad_keypoint_rows(self) -> list[int]:
        """Vector rows whose stored keypoints are not what :meth:`keypoints` can decode."""
        return [r for (r,) in self.db.execute(f"SELECT row FROM keypoints WHERE NOT ({_KEYPOINTS_SOUND}) ORDER BY row")]

    def paths_at_rows(self, rows: Iterable[int]) -> list[str]:
        rows = sorted({int(r) for r in rows})
        out = []
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            q = f"SELECT path FROM files WHERE row IN ({','.join('?' * len(part))})"
            out += [p for (p,) in self.db.execute(q, part)]
        return sorted(out)

    def version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='catalog_version'").fetchone()[0])

    def get(self, path: str) -> FileRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE path=?", (path,)).fetchone()
        return FileRecord(*row) if row else None

    def records(self, *, under: str | None = None, status: str | None = None) -> Iterator[FileRecord]:
        sql, args = f"SELECT {_COLUMNS} FROM files WHERE 1=1", []
        if under is not None:
            sql += " AND (path = ? OR substr(path, 1, ?) = ?)"
            prefix = under.rstrip("/") + "/"
            args += [under, len(prefix), prefix]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        for row in self.db.execute(sql + " ORDER BY path", args):
            yield FileRecord(*row)

    # -- meta entries other parts keep in the catalog (e.g. the Milvus backend's link) --
    def meta(self, *keys: str) -> dict[str, str]:
        """The ``meta`` values stored under ``keys`` (missing keys are left out)."""
        q = f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(keys))})"
        return dict(self.db.execute(q, keys).fetchall()) if keys else {}

    def set_meta(self, values: dict[str, str | None]) -> None:
        """Store (``None``: remove) ``meta`` values, in one transaction."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM meta WHERE key=?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def change_key(self) -> tuple[int, int]:
        """Changes whenever this or another connection has committed since it was last read."""
        return self.db.execute("PRAGMA data_version").fetchone()[0], self.db.total_changes

    def live(self) -> tuple[list[int], list[str], list[int]]:
        """ids, paths and vector rows of every ``ok`` file, in one consistent read."""
        ids, paths, rows = [], [], []
        for i, p, r in self.db.execute("SELECT id, path, row FROM files WHERE status='ok' ORDER BY path"):
            ids.append(i)
            paths.append(p)
            rows.append(r)
        return ids, paths, rows

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "skipped": 0}
        for status, n in self.db.execute("SELECT status, count(*) FROM files GROUP BY status"):
            out[status] = n
        return out

    def skip_counts(self) -> dict[str, int]:
        q = "SELECT reason, count(*) FROM files WHERE status='skipped' GROUP BY reason ORDER BY reason"
        return dict(self.db.execute(q).fetchall())

    def roots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def root_records(self) -> list[Root]:
        """Every root with the real path and identity recorded when it was last indexed
        (``real`` is None for roots an older lookalike recorded)."""
        try:
            known = {p: (r, d, i) for p, r, d, i in self.db.execute("SELECT path, real, dev, ino FROM root_identity")}
        except sqlite3.OperationalError:  # a read-only catalog made before identities were recorded
            known = {}
        return [Root(p, *known.get(p, (None, None, None))) for p in self.roots()]

    def keypoints(self, rows: Iterable[int]) -> dict[int, tuple[int, int, bytes, bytes]]:
        """Stored local features by vector row: ``row -> (width, height, xy, descriptors)``.

        Damaged entries (see :meth:`bad_keypoint_rows`) are left out: such a file has no keypoints.
        """
        rows = sorted({int(r) for r in rows})
        out = {}
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            q = (f"SELECT row, width, height, xy, descriptors FROM keypoints"
                 f" WHERE row IN ({','.join('?' * len(part))}) AND {_KEYPOINTS_SOUND}")
            for r, w, h, xy, d in self.db.execute(q, part):
                out[r] = (w, h, xy, d)
        return out

    def n_keypoint_rows(self) -> int:
        return self.db.execute("SELECT count(*) FROM keypoints").fetchone()[0]

    def by_hash(self, content_hash: str) -> list[FileRecord]:
        q = f"SELECT {_COLUMNS} FROM files WHERE content_hash=? AND status='ok' ORDER BY id"
        return [FileRecord(*r) for r in self.db.execute(q, (content_hash,))]

    # -- writes (each call is one transaction) -------------------------------
    def commit(
        self,
        *,
        upserts: Iterable[FileRecord] = (),
        renames: Iterable[tuple[str, FileRecord]] = (),
        deletes: Iterable[str] = (),
        n_rows: int | None = None,
        root: str | Root | None = None,
        keypoints: Iterable[tuple[int, int, int, bytes, bytes]] = (),
    ) -> None:
        """Apply a batch atomically: renamed, new or changed files, removed paths, row count,
        and the local features ``(row, width, height, xy, descriptors)`` of new vector rows.

        A rename ``(old_path, record)`` moves the entry at ``old_path`` to
        ``record.path`` keeping its id and vector row.
        """
        now = time.time_ns()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for old, r in renames:
                db.execute("DELETE FROM files WHERE path=?", (r.path,))
                db.execute(
                    "UPDATE files SET path=?, size=?, mtime_ns=?, indexed_ns=? WHERE path=?",
                    (r.path, r.size, r.mtime_ns, now, old),
                )
            for r in upserts:
                db.execute(
                    "INSERT INTO files (path, size, mtime_ns, content_hash, width, height, status,"
                    " reason, detail, row, indexed_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns,"
                    " content_hash=excluded.content_hash, width=excluded.width, height=excluded.height,"
                    " status=excluded.status, reason=excluded.reason, detail=excluded.detail,"
                    " row=excluded.row, indexed_ns=excluded.indexed_ns",
                    (r.path, r.size, r.mtime_ns, r.content_hash, r.width, r.height, r.status,
                     r.reason, r.detail, r.row, now),
                )
            for p in deletes:
                db.execute("DELETE FROM files WHERE path=?", (p,))
            db.executemany("INSERT OR REPLACE INTO keypoints VALUES (?,?,?,?,?)", keypoints)
            if n_rows is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('n_rows', ?)", (str(int(n_rows)),))
            if root is not None:
                path = root.path if isinstance(root, Root) else root
                db.execute("INSERT OR IGNORE INTO roots VALUES (?, ?)", (path, now))
                if isinstance(root, Root) and root.known:
                    db.execute("INSERT OR REPLACE INTO root_identity VALUES (?, ?, ?, ?)",
                               (path, root.real, root.dev, root.ino))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite has already rolled back after e.g. "database or disk is full"
                db.execute("ROLLBACK")
            raise

    def forget(
        self, *, paths: Iterable[str] = (), keypoint_rows: Iterable[int] = (), n_rows: int | None = None
    ) -> None:
        """Repair in one transaction: drop files' entries (the next run indexes them as new
        files), drop keypoints entries, and set ``n_rows``."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM files WHERE path=?", ((p,) for p in paths))
            db.executemany("DELETE FROM keypoints WHERE row=?", ((int(r),) for r in keypoint_rows))
            if n_rows is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('n_rows', ?)", (str(int(n_rows)),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _stored_version(db: sqlite3.Connection, path: str) -> int | None:
    """The catalog's schema version (``None`` for a new, empty file); a version newer than
    :data:`CATALOG_VERSION` raises :class:`SchemaTooNew`, a value that is no version
    :class:`IndexDamaged`."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key='catalog_version'").fetchone()
    except sqlite3.OperationalError:  # no meta table yet: a new catalog
        return None
    if row is None:
        return None
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        raise IndexDamaged(f"{path} is damaged: its catalog_version is {row[0]!r}") from None
    if version > CATALOG_VERSION:
        raise SchemaTooNew(f"{path} has catalog version {version}; this lookalike reads up to "
                           f"{CATALOG_VERSION}: upgrade lookalike")
    return version


def _to_2(db: sqlite3.Connection) -> None:
    """Version 2 records each root's real path and identity (table ``root_identity``, made by
    the schema script); roots indexed before have none until they are indexed again."""


#: ``version -> step`` bringing a catalog of that version to the next one, in one transaction each.
MIGRATIONS = {1: _to_2}


def _migrate(db: sqlite3.Connection, version: int) -> None:
    while version < CATALOG_VERSION:
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](db)
            version += 1
            db.execute("UPDATE meta SET value=? WHERE key='catalog_version'", (str(version),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _connect_readonly(path: str) -> sqlite3.Connection:
    """Read-only connection; in a read-only folder, where SQLite cannot make the
    WAL index (``-shm``), as an immutable file if no write-ahead log is pending."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM meta").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise sqlite3.OperationalError(
            f"cannot read {path}: its folder is read-only and it has an unfinished write-ahead log ({wal})"
        )
    return sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None)
