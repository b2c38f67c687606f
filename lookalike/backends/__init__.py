"""Where an index keeps its vectors: a local folder or a Milvus collection.

Both are opened through :func:`open_index` (and :func:`create_index`), chosen
by the location:

* a folder (``pics.idx``): the local backend, :class:`lookalike.Index`
  (SQLite catalog + vector file + FAISS structure);
* a Milvus URI: :class:`lookalike.backends.milvus.MilvusIndex`, the same API
  with vectors and search in a Milvus collection. ``./file.db`` is Milvus
  Lite (embedded, started from the file by ``pymilvus``), ``http://host:19530``
  a Milvus server or cluster (``token=`` for authentication).

Nothing heavy is imported here: ``pymilvus`` only when a Milvus URI is opened.
This module also holds the file-id scheme shared by the Milvus collection and
``--shard``: :func:`path_id`, a stable 63-bit id derived from a file's path,
so that processes on different machines never hand out the same id.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

__all__ = ["open_index", "create_index", "is_milvus_uri", "path_id", "parse_shard", "shard_filter"]

_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def is_milvus_uri(location: str | os.PathLike) -> bool:
    """``True`` for a Milvus server URI (``http://host:19530``) or a Milvus Lite file (``*.db``)."""
    text = os.fspath(location)
    return isinstance(text, str) and (text.startswith(_SERVER_SCHEMES) or text.endswith(".db"))


def is_server_uri(location: str | os.PathLike) -> bool:
    text = os.fspath(location)
    return isinstance(text, str) and text.startswith(_SERVER_SCHEMES)


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
            raise ValueError(f"--shard must look like I/N (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {i}/{n}: need N >= 1 and 0 <= I < N")
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


def open_index(
    location: str | os.PathLike,
    extractor: Any = None,
    *,
    create: bool = False,
    token: str | None = None,
    collection: str | None = None,
    local: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    **kw: Any,
):
    """Open the index at ``location`` (a folder or a Milvus URI); ``create=True`` makes it if new.

    ``extractor``: checked against the stored one (``ExtractorMismatch``);
    used when the index is created. ``token``, ``collection`` (default
    ``"lookalike"``), ``local`` (the folder of the local catalog) and ``shard``
    (only for choosing the default ``local`` folder) apply to Milvus only.
    Other keywords (``threads``, ``max_pixels``, ``ann``, ``storage``) go to
    :meth:`Index.open`/:meth:`Index.create`.
    """
    kw = {key: value for key, value in kw.items() if value is not None}  # unset options: defaults
    if is_milvus_uri(location):
        from .milvus import MilvusIndex

        return MilvusIndex.connect(location, extractor, create=create, token=token, collection=collection,
                                   local=local, shard=shard, **kw)
    from ..index import Index

    exists = os.path.exists(os.path.join(os.path.expanduser(os.fspath(location)), "manifest.json"))
    if create and not exists:
        return Index.create(location, extractor if extractor is not None else _default_extractor(), **kw)
    for key in ("ann", "storage", "keypoints"):  # creation settings: meaningless when opening
        kw.pop(key, None)
    return Index.open(location, extractor, **kw)


def _default_extractor() -> str:
    from ..extractors import registry

    return registry.DEFAULT


def create_index(location: str | os.PathLike, extractor: Any = None, **kw: Any):
    """Open ``location`` if it holds an index, else create it (see :func:`open_index`)."""
    return open_index(location, extractor, create=True, **kw)
