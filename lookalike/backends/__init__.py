"""Where an index keeps its vectors: a local folder or a Milvus collection.

Both are opened through :func:`open_index` (and :func:`create_index`), chosen
by the location:

* a folder (``pics.idx``): the local backend, :class:`lookalike.Index`
  (SQLite catalog + vector file + FAISS structure);
* a Milvus URI: :func:`lookalike.backends.milvus.connect_index`, the same API
  with vectors and search in a Milvus collection. ``./file.db`` is Milvus
  Lite (embedded, started from the file by ``pymilvus``), ``http://host:19530``
  a Milvus server or cluster (``token=`` for authentication).

Nothing heavy is imported here: ``pymilvus`` only when a Milvus URI is opened.
The file-id scheme shared by the Milvus collection and ``--shard``
(:func:`path_id`, :func:`shard_filter`) lives in :mod:`lookalike.shards` and is
re-exported here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..shards import parse_shard, path_id, shard_filter  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from ..index import Index

__all__ = ["open_index", "create_index", "is_milvus_uri", "path_id", "parse_shard", "shard_filter"]

_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def is_milvus_uri(location: str | os.PathLike) -> bool:
    """``True`` for a Milvus server URI (``http://host:19530``) or a Milvus Lite file (``*.db``)."""
    text = os.fspath(location)
    return isinstance(text, str) and (text.startswith(_SERVER_SCHEMES) or text.endswith(".db"))


def is_server_uri(location: str | os.PathLike) -> bool:
    text = os.fspath(location)
    return isinstance(text, str) and text.startswith(_SERVER_SCHEMES)


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
) -> Index:
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
        from .milvus import connect_index

        return connect_index(location, extractor, create=create, token=token, collection=collection,
                             local=local, shard=shard, **kw)
    from ..index import Index

    exists = os.path.exists(os.path.join(os.path.expanduser(os.fspath(location)), "manifest.json"))
    if create and not exists:
        return Index.create(location, extractor if extractor is not None else _default_extractor(), **kw)
    keypoints = kw.get("keypoints")
    for key in ("ann", "storage", "keypoints"):  # creation settings: meaningless when opening
        kw.pop(key, None)
    index = Index.open(location, extractor, **kw)
    has = bool(index.store.manifest.local)
    if keypoints in ("sift", "none") and has != (keypoints == "sift"):
        index.close()
        from ..errors import UsageError

        made = "with" if has else "without"
        raise UsageError(f"this index was made {made} keypoints, and keypoints are chosen when an index is made: "
                         f"for an index {'without' if has else 'with'} them, make a new one "
                         f"(lookalike index FOLDER --index NEW_DIR --keypoints {keypoints})")
    return index


def _default_extractor() -> dict:
    from ..extractors import registry

    return registry.default_spec()


def create_index(location: str | os.PathLike, extractor: Any = None, **kw: Any) -> Index:
    """Open ``location`` if it holds an index, else create it (see :func:`open_index`)."""
    return open_index(location, extractor, create=True, **kw)
