"""Vectors as one raw row-major file, opened with memory mapping.

Rows are only ever appended. The number of valid rows is not taken from the
file size but from the catalog (committed in the same transaction as the rows'
catalog entries), so bytes written by a process killed before its commit are
simply ignored and overwritten by the next writer.
"""

from __future__ import annotations

import errno
import os

import numpy as np


class VectorFile:
    def __init__(self, path: str, dim: int, dtype: str):
        self.path = path
        self.width = int(dim)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.width * self.dtype.itemsize

    def read(self, n_rows: int) -> np.ndarray:
        """Read-only ``(n_rows, width)`` memory map of the committed rows."""
        if n_rows == 0:
            return np.zeros((0, self.width), self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(n_rows, self.width))

    def append(self, n_rows: int, rows: np.ndarray) -> int:
        """Write ``rows`` after the first ``n_rows`` committed rows; durable on return.

        Returns the row number of the first written row (= ``n_rows``).
        """
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected (n, {self.width}) rows, got {rows.shape}")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
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
        """Drop bytes past the committed rows (left over by an interrupted writer)."""
        try:
            if os.path.getsize(self.path) > n_rows * self.row_bytes:
                os.truncate(self.path, n_rows * self.row_bytes)
        except FileNotFoundError:
            open(self.path, "ab").close()
