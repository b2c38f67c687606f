"""File ids and shards: which of N indexers indexes a file, and the id it has everywhere.

:func:`path_id` is a stable 63-bit id derived from a file's path, the same on
every machine and in every process, so that shards (``--shard I/N``) and the
Milvus collection's primary key need no coordination to keep ids apart.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from .errors import UsageError


def path_id(path: str) -> int:
    """A stable id in ``[0, 2**63)`` for a file path (as the catalog stores it).

    The first 8 bytes of the path's BLAKE2b digest with the top bit cleared:
    the same on every machine and in every process, so shards need no
    coordination to keep ids apart. Two of a billion paths collide with
    probability about 5%; of a million, about 5e-8.
    """
    digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` stays ``None``."""
    if text is None:
        return None
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i_text, n_text = str(text).split("/")
            i, n = int(i_text), int(n_text)
        except ValueError:
            raise UsageError(f"--shard must look like I/N (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {i}/{n}: need N >= 1 and 0 <= I < N")
    return int(i), int(n)


def shard_filter(shard: tuple[int, int] | None) -> Callable[[str], bool] | None:
    """A predicate on catalog paths that keeps the files of shard ``(I, N)``: ``path_id % N == I``.

    Every file belongs to exactly one shard, whoever computes it, so N indexers
    given the same folders index disjoint parts of them and together all of it.
    """
    if shard is None or shard[1] == 1:
        return None
    i, n = shard
    return lambda path: path_id(path) % n == i
