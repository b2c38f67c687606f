"""Vectors as one raw row-major file, opened with memory mapping.

Rows are only ever appended. The number of valid rows is not taken from the
file size but from the catalog (committed in the same transaction as the rows'
catalog entries), so bytes written by a process killed before its commit are
simply ignored and overwritten by the next writer.

The file is the index's own: it must be a regular file, and it is never
opened for writing through a symbolic link.
"""

from __future__ import annotations

import errno
import os
import stat

import numpy as np

from .manifest import IndexDamaged


class VectorFile:
    def __init__(self, path: str, dim: int, dtype: str):
        self.path = path
        self.width = int(dim)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.width * self.dtype.itemsize

    def size(self) -> int | None:
        """Bytes in the file (``None`` when there is none); :class:`IndexDamaged` if it is not a regular file."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise IndexDamaged(f"{self.path} is {kind}; an index's vector file must be a regular file in it")
        return st.st_size

    def read(self, n_rows: int) -> np.ndarray:
        """Read-only ``(n_rows, width)`` memory map of the committed rows."""
        if n_rows == 0:
            return np.zeros((0, self.width), self.dtype)
        size = self.size() or 0
        if size < n_rows * self.row_bytes:
            raise IndexDamaged(
                f"the index {os.path.dirname(self.path)} is damaged: {self.shortfall(size, n_rows)}; "
                f"`lookalike check --repair {os.path.dirname(self.path)}` repairs it"
            )
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(n_rows, self.width))

    def shortfall(self, size: int, n_rows: int) -> str:
        return f"vector file has {size} bytes, {n_rows} committed rows need {n_rows * self.row_bytes}"

    def _open_for_writing(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)

    def append(self, n_rows: int, rows: np.ndarray) -> int:
        """Write ``rows`` after the first ``n_rows`` committed rows; durable on return.

        Returns the row number of the first written row (= ``n_rows``).
        """
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected (n, {self.width}) rows, got {rows.shape}")
        fd = self._open_for_writing()
        try:
            data, offset = memoryview(rows.tobytes()), n_rows * self.row_bytes
            while data:  # pwrite may write less than asked (disk full): go on until it raises
                written = os.pwrite(fd, data, offset)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
                data, offset = data[written:], offset + written
            os.fsync(fd)
        finally:
            os.close(fd)
        return n_rows

    def truncate(self, n_rows: int) -> None:
        """Drop bytes past the committed rows (left over by an interrupted writer); create the file if missing."""
        if n_rows < 0:
            raise ValueError(f"cannot keep {n_rows} rows")
        self.size()  # refuses a link or a device before anything is opened
        fd = self._open_for_writing()
        try:
            if os.fstat(fd).st_size > n_rows * self.row_bytes:
                os.ftruncate(fd, n_rows * self.row_bytes)
        finally:
            os.close(fd)
