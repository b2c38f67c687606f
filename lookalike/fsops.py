"""File operations that never overwrite and act on folder descriptors.

Everything here works on names relative to an open folder (``dir_fd``), so a
folder swapped for a symlink after it was opened cannot redirect the call.
:func:`rename_noreplace` is ``renameat2(RENAME_NOREPLACE)`` (Linux), with
``link`` + ``unlink`` where a file system lacks it; :func:`copy_noreplace`
copies across file systems into a temporary name and only then gives the copy
its final name, so a half-written file never sits at a real path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_RENAME_NOREPLACE = 1
PART_SUFFIX = ".lookalike-part"

_renameat2: Any  # libc's renameat2, or None where there is none
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = _libc.renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc / not Linux
    _renameat2 = None


def rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """Rename ``src`` to ``dst``; ``FileExistsError`` if ``dst`` exists (never overwrites).
    ``OSError(EXDEV)`` when the two folders are on different file systems."""
    if _renameat2 is not None:
        if _renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    # no RENAME_NOREPLACE here: a hard link fails if dst exists, then drop the old name
    try:
        os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.EXDEV, errno.ENOENT):
            raise
        # no hard links either (some FUSE / FAT): checked rename, under the caller's lock
        if exists(dst_dir, dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        return
    os.unlink(src, dir_fd=src_dir)


def exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def part_name(name: str) -> str:
    return f".{name}{PART_SUFFIX}"


def copy_noreplace(src_dir: int, src: str, dst_dir: int, dst: str, expect: os.stat_result) -> os.stat_result:
    """Copy the regular file ``src`` (which must still be the file ``expect`` describes:
    device, inode, size, mtime) to ``dst`` in another folder, keeping mode and times.

    The bytes go to a temporary name (``.dst.lookalike-part``) first, are synced,
    then renamed to ``dst`` without replacing anything; on any error the temporary
    file is removed and ``dst`` never exists half-written. Returns the copy's stat.
    """
    sfd = os.open(src, os.O_RDONLY | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=src_dir)
    try:
        st = os.fstat(sfd)
        if not stat.S_ISREG(st.st_mode) or not same_file(st, expect):
            raise OSError(errno.ESTALE, "the file changed just before it was copied", src)
        part = part_name(dst)
        try:
            os.unlink(part, dir_fd=dst_dir)  # left by an earlier, interrupted copy of ours
        except FileNotFoundError:
            pass
        dfd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                      0o600, dir_fd=dst_dir)
        try:
            try:
                _copy_bytes(sfd, dfd, st.st_size)
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fsync(dfd)
                out = os.fstat(dfd)
            finally:
                os.close(dfd)
            rename_noreplace(dst_dir, part, dst_dir, dst)
        except BaseException:
            try:
                os.unlink(part, dir_fd=dst_dir)
            except OSError:
                pass
            raise
        fsync_dir(dst_dir)
        return out
    finally:
        os.close(sfd)


def _copy_bytes(sfd: int, dfd: int, size: int) -> None:
    done = 0
    while True:
        try:
            n = os.sendfile(dfd, sfd, done, 1 << 24)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS) and done == 0:
                break  # no sendfile between these files: plain reads
            raise
        if n == 0:
            return
        done += n
    while True:
        chunk = os.read(sfd, 1 << 20)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(dfd, view):]


def same_file(st: os.stat_result, expect: os.stat_result | tuple) -> bool:
    """Same device, inode, size and modification time."""
    want = identity(expect) if isinstance(expect, os.stat_result) else tuple(expect)
    return identity(st) == want


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def descend(fd: int, parts: list[str], *, create: bool = False) -> int:
    """From the open folder ``fd`` down through ``parts`` without following any symlink
    (one raises ``ELOOP``/``ENOTDIR``); ``create`` makes missing folders. ``fd`` is
    consumed: on return it is closed (the result is open), on an error too."""
    try:
        for name in parts:
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            nfd = os.open(name, DIR_FLAGS | NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(base: str, parts: list[str], *, create: bool = False) -> int:
    """Open ``base/parts...`` (``base`` an absolute folder) without following symlinks below
    ``base``; ``create`` makes missing folders. The caller closes the descriptor."""
    return descend(os.open(base, DIR_FLAGS), parts, create=create)


def fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
