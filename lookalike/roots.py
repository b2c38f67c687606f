"""The indexed folders ("roots") and safe access to the files below them.

A root is recorded when it is indexed: the path as given (made absolute, the
prefix of every catalog path below it) together with its *real* path and its
identity (device and inode) at that moment. Everything that reads or changes a
user's file by its catalog path (the HTTP server, duplicate actions, undo)
checks it against these records *when it acts*, not against what the root
path resolves to now: a root replaced by a symlink to another folder, or a
folder swapped for another one, no longer counts as the root.

:func:`open_parent` walks from the recorded root to a file's folder one
component at a time without following symlinks, checking the root's identity
on the open descriptor, so a folder replaced by a symlink mid-run cannot
redirect an action outside the roots. Callers then act on names relative to
that folder descriptor (``dir_fd=``).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Sequence

from . import fsops

from .errors import LookalikeError



class RootError(LookalikeError, OSError):
    """A path is not (or no longer) safely below one of the index's roots."""


@dataclass(frozen=True)
class Root:
    path: str  # as indexed (absolute, symlinks not resolved): the prefix of catalog paths
    real: str | None = None  # os.path.realpath at index time (None: recorded by an older lookalike)
    dev: int | None = None
    ino: int | None = None

    @property
    def known(self) -> bool:
        return self.real is not None

    @property
    def base(self) -> str:
        """The path real paths below this root start with (the recorded real path when known)."""
        return self.real if self.real is not None else self.path


def identify(path: str) -> Root:
    """The record of ``path`` (an absolute folder or file) as it is now."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return Root(path, real, st.st_dev, st.st_ino)


def is_below(path: str, base: str) -> bool:
    """``path`` is ``base`` or inside it (plain string test on normalised absolute paths)."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def root_of(path: str, roots: Sequence[Root]) -> Root | None:
    """The innermost root whose indexed path contains ``path`` (a catalog path)."""
    if os.path.normpath(path) != path or not os.path.isabs(path):
        return None
    best = None
    for r in roots:
        if is_below(path, r.path) and (best is None or len(r.path) > len(best.path)):
            best = r
    return best


def still_there(root: Root) -> bool:
    """The root's recorded real path is still the same folder (or file), not a symlink."""
    if root.real is None:  # not known (recorded by an older lookalike)
        return True
    try:
        st = os.lstat(root.real)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (root.dev, root.ino)


def real_is_inside(real: str, roots: Sequence[Root]) -> bool:
    """``real`` (a resolved path, e.g. of an open descriptor) lies under a root that is still
    the folder it was when indexed."""
    return any(is_below(real, r.base) and still_there(r) for r in roots)


def open_parent(path: str, roots: Sequence[Root]) -> tuple[int, str, Root]:
    """``(folder_fd, name, root)`` for the catalog path ``path``: an open descriptor of the
    folder holding it, reached from the recorded root without following any symlink.

    Raises :class:`RootError` when ``path`` is outside every root, when the root is no
    longer the folder that was indexed, or when a folder on the way is a symlink or gone.
    The caller closes ``folder_fd``.
    """
    root = root_of(path, roots)
    if root is None:
        raise RootError("outside the index's roots")
    if root.real is None:  # not known (recorded by an older lookalike)
        raise RootError(f"its root {root.path} was indexed by an older lookalike; "
                        "run `lookalike index` on it again to record it")
    rel = os.path.relpath(path, root.path)
    parts = [] if rel == "." else rel.split(os.sep)
    try:
        st = os.lstat(root.real)
    except OSError as e:
        raise RootError(f"its root {root.path} is gone ({e.strerror})") from None
    if (st.st_dev, st.st_ino) != (root.dev, root.ino):
        raise RootError(f"its root {root.path} is no longer the folder that was indexed; "
                        "run `lookalike index` on it again if that is intended")
    if stat.S_ISDIR(st.st_mode):
        top = root.real
    else:  # a single indexed file is its own root
        if parts:
            raise RootError("outside the index's roots")
        top, parts = os.path.dirname(root.real), [os.path.basename(root.real)]
    if not parts:
        raise RootError("is a root folder, not a file")
    fd = os.open(top, fsops.DIR_FLAGS)
    try:
        if stat.S_ISDIR(st.st_mode):
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (root.dev, root.ino):
                raise RootError(f"its root {root.path} changed while it was opened")
        else:  # the file itself is the root: it must still be the recorded file, seen from this folder
            try:
                fst = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except OSError as e:
                raise RootError(f"its root {root.path} is gone ({e.strerror})") from None
            if (fst.st_dev, fst.st_ino) != (root.dev, root.ino):
                raise RootError(f"its root {root.path} changed while it was opened")
    except BaseException:
        os.close(fd)
        raise
    try:
        fd = fsops.descend(fd, parts[:-1])
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a symlink
            raise RootError("a folder on its way is a symlink or not a folder") from None
        raise RootError(f"cannot open its folder ({e.strerror})") from None
    return fd, parts[-1], root


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def fd_real_path(fd: int, fallback: str) -> str:
    """The real path of an open file (Linux: /proc), else ``realpath(fallback)``."""
    return _fd_path(fd) or os.path.realpath(fallback)
