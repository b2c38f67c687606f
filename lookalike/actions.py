"""Actions on duplicates (move, symlink, delete) as a journal, and their undo.

Promises, each kept by one rule:

* **Nothing outside the roots.** Every file is reached from its root's
  recorded real path and identity (:mod:`lookalike.roots`) one folder at a
  time without following symlinks, at the moment of acting; symlinks and
  anything that is not a regular file are never acted on.
* **Nothing changed behind our back.** Right before acting, the file must
  still be the one that was planned (device, inode, size, modification time;
  size and time as the catalog recorded them), and so must its keeper.
  A deletion first renames the file to a private name in its own folder,
  checks that the renamed file is the planned one, and only then unlinks it.
* **Nothing overwritten.** Files go to ``DEST/<real path of the file>``, which
  keeps roots with the same name apart, and are renamed with
  ``RENAME_NOREPLACE`` or copied to a temporary name first across file
  systems (:mod:`lookalike.fsops`).
* **One run at a time.** A run holds the index's writer lock (the one
  ``lookalike index`` takes) from its first action to its last.
* **Every change journalled first.** The undo log is an append-only JSON-lines
  file: the intent of an action is written and synced before the action, its
  outcome after. Killed at any point, the log names every file that may have
  moved, and :func:`undo` looks at the files themselves to see how far each
  action got. Undo is repeatable: what is already back is left alone.
* **Only our own logs are undone.** Every line carries an HMAC (SHA-256,
  chained over the previous line) with a key kept in the index folder
  (``undo/key``, mode 0600); undo refuses a log that fails it, and checks
  every path against the roots again.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from . import fsops
from .errors import LookalikeError, UsageError
from .roots import Root, RootError, is_below, open_parent
from .sources import SKIP_MARKER  # written into move destinations: never indexed

LOG_VERSION = 2
UNDO_DIR = "undo"
KEY_NAME = "key"
MAX_LOG_BYTES = 1 << 30
OPS = ("move", "symlink", "delete")


class UndoLogError(LookalikeError, ValueError):
    """An undo log that cannot be trusted or read."""


class ActionsInterrupted(LookalikeError):
    def __init__(self, log_path: str | None, done: int):
        super().__init__(f"interrupted after {done} actions")
        self.log_path, self.done = log_path, done


def _hook(stage: str, n: int) -> None:
    """Called at each step of an action and of its undo; tests replace it (to kill the process
    at one exact point, or to change the files between the check and the act)."""


@dataclass
class Action:
    op: str  # "move", "symlink", "delete"
    path: str  # the non-keeper acted on (its catalog path)
    keeper: str
    dest: str | None = None  # where the file goes (move: destination; symlink: trash copy)
    skip: str | None = None  # why it will not be done
    ident: tuple[int, int, int, int] | None = None  # (dev, ino, size, mtime_ns) when planned
    keeper_ident: tuple[int, int, int, int] | None = None
    base: str | None = None  # the destination folder (real path) ``dest`` lies in


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    path: str | None = None  # the file, where it is back in place (ok) or was never changed


class _Refused(Exception):
    pass


# -- planning ------------------------------------------------------------------------------

def _inspect(path: str, roots: Sequence[Root], rec) -> tuple[tuple[int, int, int, int], Root]:
    """Identity of the indexed regular file ``path``, reached safely from its root;
    raises :class:`_Refused` with the reason it must not be touched."""
    try:
        fd, name, root = open_parent(path, roots)
    except RootError as e:
        raise _Refused(str(e)) from None
    try:
        st = fsops.lstat(fd, name)
        if st is None:
            raise _Refused("no longer exists")
        if stat.S_ISLNK(st.st_mode):
            raise _Refused("is a symlink (symlinks are never acted on)")
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("is not a regular file")
        if rec is None or rec.status != "ok" or rec.size != st.st_size or rec.mtime_ns != st.st_mtime_ns:
            raise _Refused("changed since indexed (size/mtime differ from the catalog); re-index first")
        return fsops.identity(st), root
    finally:
        os.close(fd)


def destination(base: str, root: Root, path: str) -> str:
    """``base/<real path of the file>``: one place per file, roots with the same name kept apart."""
    rel = os.path.relpath(path, root.path)
    real = root.base if rel == "." else os.path.join(root.base, rel)  # base: the real path (roots here are known)
    return os.path.join(base, real.lstrip(os.sep))


def plan_actions(index, groups: Iterable, op: str, dest: str | None = None) -> list[Action]:
    """What ``op`` would do to each non-keeper, with a ``skip`` reason where it must not.
    Changes nothing; :func:`apply_actions` checks everything again right before acting."""
    if op not in OPS:
        raise UsageError(f"unknown action {op!r}")
    if op in ("move", "symlink") and not dest:
        raise UsageError(f"{op} needs a destination folder")
    catalog = index.store.catalog
    roots = catalog.root_records()
    base = os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(dest)))) if dest else None
    if base is not None:
        for r in roots:
            if r.known and os.path.isdir(r.real) and is_below(r.real, base):
                raise UsageError(f"the destination {base} contains the indexed folder {r.path}; choose another")
    actions = []
    for g in groups:
        for m in g.others:
            a = Action(op, m.path, g.keeper.path, base=base)
            actions.append(a)
            if m.side != "index":
                a.skip = "not in this index (cross-set files are never touched)"
                continue
            try:
                a.ident, root = _inspect(m.path, roots, catalog.get(m.path))
            except _Refused as e:
                a.skip = str(e)
                continue
            try:
                a.keeper_ident, _ = _inspect(g.keeper.path, roots, catalog.get(g.keeper.path))
            except _Refused as e:
                a.skip = f"its keeper {g.keeper.path} {e}"
                continue
            if base is not None:
                a.dest = destination(base, root, m.path)
                if os.path.lexists(a.dest):
                    a.skip = f"destination exists (nothing is ever overwritten): {a.dest}"
    return actions


# -- the journal ---------------------------------------------------------------------------

def _key(index_dir: str, *, create: bool) -> bytes:
    folder = os.path.join(index_dir, UNDO_DIR)
    path = os.path.join(folder, KEY_NAME)
    if create:
        os.makedirs(folder, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | fsops.NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, secrets.token_hex(32).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
    try:
        fd = os.open(path, os.O_RDONLY | fsops.NOFOLLOW)
    except FileNotFoundError:
        raise UndoLogError(f"the index {index_dir} has no undo key, so it wrote no undo log") from None
    except OSError as e:
        raise UndoLogError(f"cannot read the undo key of {index_dir}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        data = os.read(fd, 256) if stat.S_ISREG(st.st_mode) else b""
    finally:
        os.close(fd)
    if len(data.strip()) < 32:
        raise UndoLogError(f"the undo key of {index_dir} is damaged")
    return data.strip()


def _mac(key: bytes, prev: str, record: dict) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, (prev + "\n" + body).encode(), hashlib.sha256).hexdigest()


class Journal:
    """An append-only, signed undo log."""

    def __init__(self, path: str, fd: int, key: bytes):
        self.path, self.fd, self.key, self.prev = path, fd, key, ""

    @classmethod
    def create(cls, index_dir: str, header: dict, path: str | None = None) -> "Journal":
        key = _key(index_dir, create=True)
        if path is None:
            folder = os.path.join(index_dir, UNDO_DIR)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = os.path.join(folder, f"undo-{stamp}-{os.getpid()}-{secrets.token_hex(3)}.jsonl")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | fsops.NOFOLLOW | os.O_APPEND, 0o600)
        except FileExistsError:
            raise UsageError(f"undo log {path} exists already; choose a new name") from None
        journal = cls(os.path.abspath(path), fd, key)
        journal.write({"lookalike_undo_log": LOG_VERSION, **header})
        return journal

    def write(self, record: dict, *, sync: bool = True) -> None:
        mac = _mac(self.key, self.prev, record)
        line = json.dumps({**record, "mac": mac}, sort_keys=True, ensure_ascii=True) + "\n"
        data = memoryview(line.encode())
        while data:
            data = data[os.write(self.fd, data):]
        if sync:
            os.fsync(self.fd)
        self.prev = mac

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def read_log(log_path: str) -> tuple[dict, list[dict]]:
    """``(header, actions)`` of a log this lookalike wrote; each action merges its intent with
    its outcome (``state``: ``intent`` when no outcome was written). Raises :class:`UndoLogError`."""
    try:
        with open(log_path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UndoLogError(f"{log_path} is not a regular file")
            raw = f.read(MAX_LOG_BYTES + 1)
    except OSError as e:
        raise UndoLogError(f"cannot read {log_path}: {e.strerror}") from None
    if len(raw) > MAX_LOG_BYTES:
        raise UndoLogError(f"{log_path} is too large to be an undo log")
    not_ours = f"{log_path} is not an undo log written by lookalike"
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # a last line cut short by a crash: its action is re-derived from the files
    records = []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line.decode("utf-8"))
        except ValueError:
            if n == 1 and raw.lstrip()[:1] == b"{":
                _old_format(raw, log_path)
            raise UndoLogError(f"{not_ours} (line {n} is not JSON)") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("mac"), str):
            raise UndoLogError(f"{not_ours} (line {n} is not one of its records)")
        records.append(rec)
    if not records or records[0].get("lookalike_undo_log") != LOG_VERSION:
        raise UndoLogError(f"{not_ours} (no header)")
    header = records[0]
    index_dir = header.get("index")
    if not isinstance(index_dir, str) or not os.path.isabs(index_dir):
        raise UndoLogError(f"{not_ours} (no index named)")
    key = _key(index_dir, create=False)
    prev = ""
    for n, rec in enumerate(records, 1):
        body = {k: v for k, v in rec.items() if k != "mac"}
        if not hmac.compare_digest(_mac(key, prev, body), rec["mac"]):
            raise UndoLogError(f"{log_path} was not written by lookalike for the index {index_dir} "
                               f"(line {n} fails its signature); nothing was undone")
        prev = rec["mac"]
    actions: dict[int, dict] = {}
    header = {**header, "_last_mac": prev, "_undone": False}
    for rec in records[1:]:
        num = rec.get("n")
        if not isinstance(num, int):
            raise UndoLogError(f"{not_ours} (a record without a number)")
        if rec.get("state") == "undone":  # a later undo put everything back
            header["_undone"] = True
        elif rec.get("state") == "intent":
            actions[num] = dict(rec)
        elif num in actions:
            actions[num]["state"] = rec.get("state")
            if "error" in rec:
                actions[num]["error"] = rec["error"]
    return header, [actions[n] for n in sorted(actions)]


def unfinished_runs(index_dir: str) -> list[tuple[str, int]]:
    """``(log, count)`` for each undo log in ``INDEX/undo`` with actions whose outcome was
    never written (a run killed mid-action); unreadable logs count as unfinished too."""
    folder = os.path.join(index_dir, UNDO_DIR)
    out = []
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl"))
    except OSError:
        return []
    for name in names:
        path = os.path.join(folder, name)
        try:
            header, actions = read_log(path)
            open_ones = 0 if header["_undone"] else sum(1 for a in actions if a.get("state") == "intent")
        except UndoLogError:
            open_ones = -1
        if open_ones:
            out.append((path, open_ones))
    return out


def _old_format(raw: bytes, log_path: str) -> None:
    try:
        data = json.loads(raw)
    except ValueError:
        return
    if isinstance(data, dict) and data.get("version") == 1 and "actions" in data:
        raise UndoLogError(
            f"{log_path} is an unsigned undo log of an older lookalike, which undo no longer trusts; "
            "to restore by hand, move each entry's 'dest' back to its 'path'")


# -- acting --------------------------------------------------------------------------------

def _stage_name(name: str) -> str:
    return f".{name}.lookalike-delete"


def apply_actions(index, actions: Iterable[Action], log_path: str | None = None) -> tuple[str | None, list[dict]]:
    """Carry out the planned (not skipped) actions under the index's writer lock, journalled.

    Returns ``(undo log path, entries)``: one entry per action tried, with ``error`` set
    where it was refused or failed (the file is then untouched). ``None`` and no entries
    when there is nothing to do. Raises :class:`~lookalike.store.IndexLocked` while another
    process indexes or acts on the same index, :class:`ActionsInterrupted` on Ctrl-C.
    """
    todo = [a for a in actions if not a.skip]
    if not todo:
        return None, []
    ops = {a.op for a in todo}
    bases = {a.base for a in todo}
    if len(ops) != 1 or len(bases) != 1:
        raise UsageError("one run does one kind of action into one destination")
    op, base = ops.pop(), bases.pop()
    store = index.store
    index_dir = os.path.realpath(str(store.directory))
    entries: list[dict] = []
    with store.writing():
        roots = store.catalog.root_records()
        journal = Journal.create(index_dir, {"index": index_dir, "op": op, "dest": base, "pid": os.getpid(),
                                             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                 log_path)  # first: a log that cannot be written stops the run before any change
        if base is not None:
            try:
                os.makedirs(base, exist_ok=True)
                _mark_skip(base)
            except BaseException:
                journal.close()
                raise
        try:
            for n, a in enumerate(todo):
                assert a.ident is not None  # set on every action that is not skipped
                entry = {"n": n, "state": "intent", "op": a.op, "path": a.path, "keeper": a.keeper,
                         "dest": a.dest, "ident": list(a.ident)}
                _hook("before_intent", n)
                journal.write(entry)
                _hook("after_intent", n)
                try:
                    _act(a, roots, n)
                except (_Refused, OSError) as e:
                    reason = str(e) if isinstance(e, _Refused) else _os_reason(e)
                    journal.write({"n": n, "state": "failed", "error": reason}, sync=False)
                    entries.append({**entry, "state": "failed", "error": reason})
                    continue
                journal.write({"n": n, "state": "done"}, sync=False)
                entries.append({**entry, "state": "done"})
                _hook("after_done", n)
        except KeyboardInterrupt:
            journal.close()
            _forget_done(store, entries)
            raise ActionsInterrupted(journal.path, len(entries)) from None
        journal.close()
        _forget_done(store, entries)
    return journal.path, entries


def _forget_done(store, entries: list[dict]) -> None:
    """The index forgets the files acted on, so that searches, duplicates and ``check``
    agree with the disk (``lookalike undo`` indexes them again once they are back).
    Killed before this, ``check`` reports them missing and the next indexing run of
    their folder forgets them."""
    done = [e["path"] for e in entries if e.get("state") == "done"]
    if done:
        store.commit(deletes=done)


def _os_reason(e: OSError) -> str:
    return f"{e.strerror or e}" + (" (nothing was changed)" if e.errno != errno.EXDEV else "")


def _mark_skip(base: str) -> None:
    try:
        fd = os.open(os.path.join(base, SKIP_MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL | fsops.NOFOLLOW, 0o644)
    except FileExistsError:
        return
    try:
        os.write(fd, b"lookalike keeps moved duplicates here; `lookalike index` does not look inside.\n")
    finally:
        os.close(fd)


def _check(fd: int, name: str, ident: tuple, what: str) -> None:
    st = fsops.lstat(fd, name)
    if st is None:
        raise _Refused(f"{what} vanished just before acting")
    if not stat.S_ISREG(st.st_mode) or fsops.identity(st) != tuple(ident):
        raise _Refused(f"{what} changed just before acting (it was replaced, modified or made a symlink)")


def _act(a: Action, roots: Sequence[Root], n: int) -> None:
    assert a.ident is not None and a.keeper_ident is not None  # set on every action that is not skipped
    try:
        fd, name, _ = open_parent(a.path, roots)
    except RootError as e:
        raise _Refused(str(e)) from None
    try:
        try:
            kfd, kname, _ = open_parent(a.keeper, roots)
        except RootError as e:
            raise _Refused(f"its keeper: {e}") from None
        try:
            _check(kfd, kname, a.keeper_ident, "its keeper")
        finally:
            os.close(kfd)
        _check(fd, name, a.ident, "the file")
        _hook("checked", n)
        if a.op == "delete":
            staged = _stage_name(name)
            fsops.rename_noreplace(fd, name, fd, staged)
            _hook("staged", n)
            st = fsops.lstat(fd, staged)
            if st is None or fsops.identity(st) != tuple(a.ident):
                fsops.rename_noreplace(fd, staged, fd, name)
                raise _Refused("changed while it was being deleted; left in place")
            os.unlink(staged, dir_fd=fd)
            return
        assert a.dest is not None and a.base is not None  # moves and symlinks are planned with both
        parts = os.path.relpath(a.dest, a.base).split(os.sep)
        dfd = fsops.open_dir(a.base, parts[:-1], create=True)
        try:
            _move(fd, name, dfd, parts[-1], a.ident, n)
            _hook("moved", n)
            if a.op == "symlink":
                os.symlink(a.keeper, name, dir_fd=fd)
                _hook("linked", n)
        finally:
            os.close(dfd)
    finally:
        os.close(fd)


def _move(fd: int, name: str, dfd: int, dname: str, ident: tuple, n: int) -> None:
    """Move ``name`` (the planned file ``ident``) to ``dname`` without replacing anything."""
    try:
        fsops.rename_noreplace(fd, name, dfd, dname)
    except FileExistsError:
        raise _Refused("the destination exists (nothing was overwritten)") from None
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        st = fsops.lstat(fd, name)
        if st is None or fsops.identity(st) != tuple(ident):
            raise _Refused("changed just before acting") from None
        try:
            fsops.copy_noreplace(fd, name, dfd, dname, st)
        except FileExistsError:
            raise _Refused("the destination exists (nothing was overwritten)") from None
        _hook("copied", n)
        st2 = fsops.lstat(fd, name)
        if st2 is None or fsops.identity(st2) != tuple(ident):
            raise _Refused("changed while it was being copied; the original stays, a copy is at the destination")
        os.unlink(name, dir_fd=fd)
        return
    st = fsops.lstat(dfd, dname)
    if st is None or fsops.identity(st)[:2] != tuple(ident)[:2]:  # another file slipped in between
        fsops.rename_noreplace(dfd, dname, fd, name)
        raise _Refused("changed just before acting; left in place")


# -- undo ----------------------------------------------------------------------------------

def undo(log_path: str) -> list[Outcome]:
    """Reverse a log written by :func:`apply_actions`, newest action first.

    Only signed logs of an index that still exists; every path checked against that
    index's roots now; repeatable (what is already back is reported as in place)."""
    from .store import IndexStore

    header, actions = read_log(log_path)
    index_dir, base = header["index"], header.get("dest")
    if base is not None and (not isinstance(base, str) or not os.path.isabs(base)):
        raise UndoLogError(f"{log_path}: bad destination folder in its header")
    store = IndexStore.open(index_dir, validate=False)  # undo needs only the roots and the lock
    try:
        with store.locked():
            roots = store.catalog.root_records()
            out = []
            for e in reversed(actions):
                try:
                    out.append(_undo_one(e, roots, base))
                except (_Refused, RootError) as err:
                    out.append(Outcome(False, f"skipped {e.get('path')}: {err}"))
                except OSError as err:
                    out.append(Outcome(False, f"could not restore {e.get('path')}: {err.strerror or err}; "
                                              f"it is safe at {e.get('dest')}; run `lookalike undo` again once "
                                              "that is fixed"))
            if all(o.ok for o in out) and not header["_undone"]:
                _append(log_path, index_dir, header["_last_mac"], {"n": -1, "state": "undone"})
            return out
    finally:
        store.close()


def _append(log_path: str, index_dir: str, prev: str, record: dict) -> None:
    """Add one signed record to an existing log (undo notes that it put everything back)."""
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | fsops.NOFOLLOW)
    except OSError:
        return  # a read-only log: undo worked all the same
    journal = Journal(log_path, fd, _key(index_dir, create=False))
    journal.prev = prev
    try:
        journal.write(record)
    finally:
        os.close(fd)


def _fields(e: dict) -> tuple[str, str, str, str | None, tuple]:
    op, path, keeper, dest, ident = e.get("op"), e.get("path"), e.get("keeper"), e.get("dest"), e.get("ident")
    if (op not in OPS or not isinstance(path, str) or not isinstance(keeper, str)
            or not (dest is None or isinstance(dest, str))
            or not (isinstance(ident, list) and len(ident) == 4 and all(isinstance(x, int) for x in ident))):
        raise _Refused("its log entry is malformed")
    return op, path, keeper, dest, tuple(ident)


def _undo_one(e: dict, roots: Sequence[Root], base: str | None) -> Outcome:
    op, path, keeper, dest, ident = _fields(e)
    n = e.get("n", -1)
    if e.get("state") == "failed":
        return Outcome(True, f"not done, nothing to undo: {path}")
    fd, name, _ = open_parent(path, roots)
    try:
        here = fsops.lstat(fd, name)
        if op == "delete":
            staged = _stage_name(name)
            if fsops.exists(fd, staged) and here is None:  # killed between staging and unlinking
                fsops.rename_noreplace(fd, staged, fd, name)
                return Outcome(True, f"restored {path}", path)
            if here is not None and stat.S_ISREG(here.st_mode) and fsops.identity(here) == ident:
                return Outcome(True, f"in place (never deleted): {path}", path)
            return Outcome(False, f"cannot undo a deletion: {path}")
        if base is None or dest is None or not is_below(dest, base) or os.path.normpath(dest) != dest:
            raise _Refused("its destination lies outside the run's destination folder")
        parts = os.path.relpath(dest, base).split(os.sep)
        try:
            dfd = fsops.open_dir(base, parts[:-1])
        except OSError:
            dfd = None
        try:
            dname = parts[-1]
            there = fsops.lstat(dfd, dname) if dfd is not None else None
            dest_ok = there is not None and stat.S_ISREG(there.st_mode) and fsops.identity(there)[2:] == ident[2:]
            if fsops.exists(fd, fsops.part_name(name)):  # an interrupted copy back of ours
                os.unlink(fsops.part_name(name), dir_fd=fd)
            if here is not None:
                if op == "symlink" and stat.S_ISLNK(here.st_mode) and os.readlink(name, dir_fd=fd) == keeper:
                    if not dest_ok:
                        return Outcome(False, f"skipped {path}: the original is not at {dest}; the symlink stays")
                    os.unlink(name, dir_fd=fd)
                    _hook("undo_unlinked", n)
                elif stat.S_ISREG(here.st_mode) and fsops.identity(here)[2:] == ident[2:]:
                    if dest_ok and dfd is not None and there is not None and _same_content(fd, name, dfd, dname, here, there):
                        os.unlink(dname, dir_fd=dfd)  # a leftover second name or copy of the same file
                    return Outcome(True, f"in place: {path}", path)
                else:
                    return Outcome(False, f"skipped {path}: it exists again; the original stays at {dest}")
            if not dest_ok:
                what = "is gone" if there is None else "is not the file that was moved there"
                return Outcome(False, f"skipped {path}: {dest} {what}")
            assert dfd is not None and there is not None  # dest_ok says so
            try:
                fsops.rename_noreplace(dfd, dname, fd, name)
            except OSError as err:
                if err.errno != errno.EXDEV:
                    raise
                fsops.copy_noreplace(dfd, dname, fd, name, there)
                _hook("undo_copied", n)
                os.unlink(dname, dir_fd=dfd)
            return Outcome(True, f"restored {path}", path)
        finally:
            if dfd is not None:
                os.close(dfd)
    finally:
        os.close(fd)


def _same_content(fd: int, name: str, dfd: int, dname: str, a: os.stat_result, b: os.stat_result) -> bool:
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if a.st_size != b.st_size:
        return False
    with open(os.open(name, os.O_RDONLY | fsops.NOFOLLOW, dir_fd=fd), "rb") as x, \
            open(os.open(dname, os.O_RDONLY | fsops.NOFOLLOW, dir_fd=dfd), "rb") as y:
        while True:
            p, q = x.read(1 << 20), y.read(1 << 20)
            if p != q:
                return False
            if not p:
                return True
