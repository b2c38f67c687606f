"""The Milvus backend: the :class:`~lookalike.Index` API with vectors and search in Milvus.

One collection per index. Entities are files (copies of a file are separate
entities with the same vector)::

    id            INT64 primary key: path_id(path), a stable 63-bit hash of the path
    vector        FLOAT_VECTOR(dim), or BINARY_VECTOR(bits) for hash extractors
    path          VARCHAR   the file, as the local catalog and search results show it
    content_hash  VARCHAR   the file's content hash (as in the catalog: BLAKE3, or an older index's BLAKE2b)
    size, mtime_ns INT64; width, height INT32

so that a deployment with nothing but the collection can answer searches.
The extractor spec, metric, dimension and vector encoding are collection
properties (``lookalike.*``), checked on opening like a local manifest.

Beside the collection a local index folder (catalog + this writer's vectors)
tracks which files were indexed: it makes indexing incremental and resumable
exactly as for a local index. Every batch is written to Milvus *first*
(deletes, then one upsert), then committed to the catalog in one SQLite
transaction. A crash in between leaves entities the catalog does not know;
the rerun embeds those files again and upserts them over the same ids
(idempotent), and re-applies deletes.

:func:`connect_index` gives a plain :class:`~lookalike.Index` made of two
implementations of the interfaces a folder index uses: :class:`MilvusStore`
(the store: the local catalog, writing the collection first) and
:class:`MilvusBackend` (the :class:`~lookalike.search.SearchBackend`: search
through :class:`MilvusSearch`, a :class:`~lookalike.search.VectorSearch` like
exact and FAISS search; path ids; the collection's own index type). Search,
``search_many``, ``neighbours``, ``duplicates``, ``info`` and ``check`` are
``Index``'s own.

Index types (``ann`` at creation): ``auto``/``hnsw`` -> HNSW (M 16, efConstruction
200, ef 256 at search), ``ivfpq`` -> IVF_FLAT (nlist 1024, nprobe 64), ``exact``
-> FLAT, all with metric COSINE for float vectors. Hash extractors store
their packed bits in a BINARY_VECTOR with metric HAMMING (BIN_IVF_FLAT, or
BIN_FLAT for ``exact``); where the server has no binary vectors (Milvus Lite
3), the bits are stored as +-1 floats under COSINE (encoding ``signs``), whose
cosine is exactly ``1 - 2 * hamming / bits``, so scores and distances are the same.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterator, cast
from urllib.parse import urlparse

import numpy as np

from .. import decode
from ..version import __version__
from ..extractors import Extractor, registry
from ..index import Index, new_manifest, take_state
from ..search import SearchBackend, SearchResult, VectorSearch
from ..store import FileRecord, IndexStore, IndexStoreError, Manifest, NotAnIndex
from ..store.manifest import check_extractor
from . import is_server_uri, path_id
from ..errors import UsageError

MISSING_EXTRA = ("Milvus support needs the 'milvus' extra: pip install 'lookalike[milvus]' "
                 "(from a checkout: pip install -e '.[milvus]')")
DEFAULT_COLLECTION = "lookalike"
PROPERTY = "lookalike."  # prefix of our collection properties
#: Milvus's largest top-k per search.
MAX_LIMIT = 16384
PATH_MAX = 4096

log = logging.getLogger("lookalike")  # notes for the user: the CLI prints them as "note: ..."


class MilvusUnavailable(IndexStoreError, ImportError):
    """``pymilvus``/``milvus-lite`` are not installed."""


class MilvusError(IndexStoreError):
    """Milvus refused or failed an operation (connection, schema, write)."""


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise MilvusUnavailable(MISSING_EXTRA) from None
    return pymilvus


@contextmanager
def _milvus_errors(what: str) -> Iterator[None]:
    """Milvus's own exceptions -> :class:`MilvusError` (an ``IndexStoreError``) naming ``what``."""
    pymilvus = _pymilvus()
    try:
        yield
    except pymilvus.exceptions.MilvusException as e:
        raise MilvusError(f"Milvus: {what}: {getattr(e, 'message', None) or e}") from e


def _drop_logs_of_raised_errors(record: logging.LogRecord) -> bool:
    """pymilvus logs what went wrong in a call, with a traceback, just before it raises
    (every warning and error of its call decorators; "Connection recovery failed" when the
    server goes away): the error reaches the user as one MilvusError line (and Milvus
    Lite is expected to refuse one call), so these records are noise."""
    if record.name == "pymilvus.decorators" and record.levelno >= logging.WARNING:
        return False
    return not str(record.msg).startswith("Connection recovery failed")


def _quiet_pymilvus() -> None:
    """pymilvus installs a console handler of its own when imported: filter it (and the
    logger it is on, for applications that log pymilvus elsewhere)."""
    logger = logging.getLogger("pymilvus")
    for target in (logger, logging.getLogger("pymilvus.decorators"), *logger.handlers):
        if _drop_logs_of_raised_errors not in target.filters:
            target.addFilter(_drop_logs_of_raised_errors)


def connect(uri: str, token: str | None = None):
    """A ``MilvusClient`` for ``uri``; a ``.db`` path starts Milvus Lite on that file."""
    pymilvus = _pymilvus()
    _quiet_pymilvus()
    if not is_server_uri(uri):
        uri = os.path.abspath(os.path.expanduser(uri))
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        try:
            import milvus_lite  # noqa: F401  (pymilvus starts it; say clearly when it is missing)
        except ImportError:
            raise MilvusUnavailable(MISSING_EXTRA + " (milvus-lite runs ./file.db URIs)") from None
    kw = {"token": token} if token else {}
    if is_server_uri(uri):
        with _milvus_errors(f"cannot connect to {uri}"):
            return pymilvus.MilvusClient(uri=uri, **kw)
    with _LITE_LOCK:  # milvus-lite starts one server per file; two threads at once would race for it
        with _milvus_errors(f"cannot open Milvus Lite file {uri}"):
            client = pymilvus.MilvusClient(uri=uri, **kw)
        _LITE_USERS[uri] = _LITE_USERS.get(uri, 0) + 1
    return client


#: Milvus Lite runs inside this process and locks its file while it runs: count the
#: open clients per file, and stop it when the last closes, so another process can open it.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def disconnect(client, uri: str) -> None:
    client.close()
    if is_server_uri(uri):
        return
    with _LITE_LOCK:
        _LITE_USERS[uri] = _LITE_USERS.get(uri, 1) - 1
        last = _LITE_USERS[uri] <= 0
        if last:
            del _LITE_USERS[uri]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)


def default_local_dir(uri: str, collection: str, shard: tuple[int, int] | None = None) -> str:
    """Where the local catalog of a Milvus index lives unless ``--index DIR`` says.

    Milvus Lite ``x.db``: ``x.db.lookalike/COLLECTION`` beside the file; a server:
    ``~/.lookalike/milvus/HOST-PORT/COLLECTION``; ``.shard-I-of-N`` appended for a shard.
    """
    if is_server_uri(uri):
        parsed = urlparse(uri)
        host = f"{parsed.hostname or 'localhost'}-{parsed.port or 19530}"
        base = os.path.join(os.path.expanduser("~/.lookalike/milvus"), host)
    else:
        base = os.path.abspath(os.path.expanduser(uri)) + ".lookalike"
    name = collection if shard is None or shard[1] == 1 else f"{collection}.shard-{shard[0]}-of-{shard[1]}"
    return os.path.join(base, name)


#: Seconds a command waits for a server to load a collection into memory (after a
#: restart a server loads its collections again: 25-30 s for a few small ones).
LOAD_TIMEOUT = 300.0
#: seconds to wait instead of :data:`LOAD_TIMEOUT` (a big collection on a slow server)
LOAD_TIMEOUT_ENV = "LOOKALIKE_MILVUS_LOAD_TIMEOUT"


def load_timeout() -> float:
    """How long a search waits for the server to load a collection: ``$LOOKALIKE_MILVUS_LOAD_TIMEOUT``
    seconds, else :data:`LOAD_TIMEOUT`."""
    text = os.environ.get(LOAD_TIMEOUT_ENV, "").strip()
    if not text:
        return LOAD_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"{LOAD_TIMEOUT_ENV} must be a number of seconds above 0, not {text!r}")
    return seconds


def _load(client, uri: str, name: str) -> None:
    """Make collection ``name`` searchable (a collection is, only once loaded); say so when
    the server has to load it first, and give up, in one line, after :func:`load_timeout`."""
    timeout = load_timeout()
    state = str(client.get_load_state(name).get("state", "")) if is_server_uri(uri) else "Loaded"  # Lite: at once
    if not state.endswith("Loaded"):
        log.warning("Milvus at %s is loading collection %r into memory (after a restart this takes a while; "
                    "waiting up to %g s)", uri, name, timeout)
    import grpc  # pymilvus's transport; a wait that runs out is gRPC's DEADLINE_EXCEEDED

    try:
        client.load_collection(name, timeout=timeout)  # idempotent when loaded
    except (_pymilvus().exceptions.MilvusException, grpc.RpcError) as e:
        ran_out = isinstance(e, grpc.RpcError) and getattr(e, "code", lambda: None)() == \
            grpc.StatusCode.DEADLINE_EXCEEDED
        if ran_out or "timeout" in str(e).lower() or "deadline" in str(e).lower():
            raise MilvusError(f"Milvus at {uri} did not load collection {name!r} within {timeout:g} s "
                              f"(${LOAD_TIMEOUT_ENV} sets how long to wait); try again once the server has "
                              "settled") from None
        raise


# -- the collection ---------------------------------------------------------------------
class Collection:
    """One Milvus collection holding an index's vectors; all Milvus calls go through here.

    ``encoding``: ``float`` (FLOAT_VECTOR, COSINE), ``binary`` (packed bits in a
    BINARY_VECTOR, HAMMING) or ``signs`` (bits as +-1 floats, COSINE).
    """

    #: entities per upsert call: bounds one gRPC message (1000 x 1280 float32 = 5 MB)
    write_batch = 1000
    #: HNSW candidate list at search time (higher: better recall, slower)
    ef = 256
    nprobe = 64

    def __init__(self, client, uri: str, name: str, properties: dict[str, str], index_type: str):
        self.client, self.uri, self.name = client, uri, name
        self.properties = properties
        self.spec = json.loads(properties[PROPERTY + "extractor"])
        self.metric = properties[PROPERTY + "metric"]
        self.dim = int(properties[PROPERTY + "dim"])
        self.encoding = properties[PROPERTY + "encoding"]
        self.index_type = index_type
        self._searched = False

    @property
    def milvus_metric(self) -> str:
        return "HAMMING" if self.encoding == "binary" else "COSINE"

    # -- lifecycle ------------------------------------------------------------------
    @classmethod
    def open(cls, client, uri: str, name: str) -> "Collection | None":
        """The existing collection ``name`` (``None`` if there is none); checks it is ours."""
        with _milvus_errors(f"cannot read collection {name!r}"):
            if not client.has_collection(name):
                return None
            desc = client.describe_collection(name)
            props = {k: str(v) for k, v in (desc.get("properties") or {}).items()}
            index_type = "?"
            for index_name in client.list_indexes(name):
                index_type = client.describe_index(name, index_name).get("index_type", "?")
            _load(client, uri, name)
        if PROPERTY + "extractor" not in props:
            raise NotAnIndex(f"Milvus collection {name!r} at {uri} was not made by lookalike "
                             f"(no {PROPERTY}extractor property)")
        return cls(client, uri, name, props, index_type)

    @classmethod
    def create(cls, client, uri: str, name: str, manifest: Manifest, ann: str) -> "Collection":
        pymilvus = _pymilvus()
        DataType = pymilvus.DataType
        bits = manifest.metric == "hamming"
        encodings = ["binary", "signs"] if bits else ["float"]
        last: Exception | None = None
        for encoding in encodings:  # Milvus Lite 3 has no BINARY_VECTOR: fall back to signs
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                          description=f"lookalike index: {json.dumps(manifest.extractor, sort_keys=True)}")
            schema.add_field("id", DataType.INT64, is_primary=True)
            if encoding == "binary":
                schema.add_field("vector", DataType.BINARY_VECTOR, dim=manifest.dim)
            else:
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=manifest.dim)
            schema.add_field("path", DataType.VARCHAR, max_length=PATH_MAX)
            schema.add_field("content_hash", DataType.VARCHAR, max_length=128)
            schema.add_field("size", DataType.INT64)
            schema.add_field("mtime_ns", DataType.INT64)
            schema.add_field("width", DataType.INT32)
            schema.add_field("height", DataType.INT32)
            index_type, metric, params = _index_choice(encoding, ann)
            index_params = client.prepare_index_params()
            index_params.add_index(field_name="vector", index_type=index_type, metric_type=metric, params=params)
            properties = {
                PROPERTY + "extractor": json.dumps(manifest.extractor, sort_keys=True),
                PROPERTY + "metric": manifest.metric,
                PROPERTY + "dim": str(manifest.dim),
                PROPERTY + "dtype": manifest.dtype,
                PROPERTY + "encoding": encoding,
                PROPERTY + "ann": ann,
                PROPERTY + "keypoints": json.dumps(manifest.local, sort_keys=True),
                PROPERTY + "uuid": uuid.uuid4().hex,
                PROPERTY + "version": __version__,
            }
            try:
                client.create_collection(name, schema=schema, index_params=index_params,
                                         consistency_level="Strong", properties=properties)
            except pymilvus.exceptions.MilvusException as e:
                last = e
                if encoding == "binary" and "BinaryVector" in str(e):
                    continue
                # writers started at once on a new collection (``--shard i/n``) race to make
                # it: the one that lost opens the winner's (its extractor is checked after)
                theirs = cls.open(client, uri, name)
                if theirs is not None:
                    return theirs
                raise MilvusError(f"Milvus: cannot create collection {name!r} at {uri}: {e}") from e
            return cls(client, uri, name, properties, index_type)
        raise MilvusError(f"Milvus: cannot create collection {name!r} at {uri}: {last}")

    def close(self) -> None:
        disconnect(self.client, self.uri)

    # -- vectors as Milvus takes them -------------------------------------------------
    def encode(self, vectors: np.ndarray) -> list:
        """``(n, width)`` vectors as stored locally -> what the ``vector`` field takes."""
        if self.encoding == "binary":
            return [bytes(row) for row in np.ascontiguousarray(vectors, np.uint8)]
        if self.encoding == "signs":
            signs = np.unpackbits(np.asarray(vectors, np.uint8), axis=1).astype(np.float32) * 2 - 1
            return list(signs[:, : self.dim])
        return list(np.asarray(vectors, np.float32))

    def score(self, distance: float) -> tuple[float, int | None]:
        """Milvus's distance -> ``(score, hamming_bits)`` as the local search reports them."""
        if self.encoding == "binary":
            d = int(round(distance))
            return 1.0 - d / self.dim, d
        cos = min(1.0, max(-1.0, float(distance)))
        if self.encoding == "signs":
            d = int(round((1.0 - cos) * self.dim / 2))
            return 1.0 - d / self.dim, d
        return cos, None

    # -- writes -----------------------------------------------------------------------
    def upsert(self, rows: list[dict]) -> None:
        for start in range(0, len(rows), self.write_batch):
            with _milvus_errors(f"upsert into {self.name!r}"):
                self.client.upsert(self.name, rows[start : start + self.write_batch])

    def delete(self, ids: list[int]) -> None:
        for start in range(0, len(ids), 16384):
            with _milvus_errors(f"delete from {self.name!r}"):
                self.client.delete(self.name, ids=ids[start : start + 16384])

    def flush(self) -> None:
        with _milvus_errors(f"flush {self.name!r}"):
            self.client.flush(self.name)

    # -- reads ------------------------------------------------------------------------
    def count(self) -> int:
        with _milvus_errors(f"count {self.name!r}"):
            res = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def get(self, ids: list[int], fields: list[str]) -> list[dict]:
        out = []
        for start in range(0, len(ids), 1000):
            with _milvus_errors(f"get from {self.name!r}"):
                out.extend(self.client.get(self.name, ids=ids[start : start + 1000], output_fields=fields))
        return out

    def search(self, vectors: np.ndarray, limit: int) -> list[list[dict]]:
        params: dict[str, Any] = {}
        if self.index_type == "HNSW":
            params = {"ef": max(self.ef, limit)}
        elif "IVF" in self.index_type:
            params = {"nprobe": self.nprobe}
        # Strong consistency waits for the server's next time tick (about 200 ms on Milvus
        # 2.3) on every search. The first search of this process is Strong, so it sees
        # every write made before it (another process's `lookalike index`); later ones are
        # Session: this process's own writes at once, other writers' within moments.
        level = "Session" if self._searched else "Strong"
        with _milvus_errors(f"search {self.name!r}"):
            found = self.client.search(
                self.name, data=self.encode(vectors), limit=limit, anns_field="vector",
                output_fields=["path"], search_params={"metric_type": self.milvus_metric, "params": params},
                consistency_level=level,
            )
        self._searched = True
        return found


def _index_choice(encoding: str, ann: str) -> tuple[str, str, dict]:
    """``(index_type, metric, build params)`` for a vector encoding and an ``ann`` setting."""
    if encoding == "binary":
        if ann == "exact":
            return "BIN_FLAT", "HAMMING", {}
        return "BIN_IVF_FLAT", "HAMMING", {"nlist": 1024}
    if ann == "exact":
        return "FLAT", "COSINE", {}
    if ann == "ivfpq":
        return "IVF_FLAT", "COSINE", {"nlist": 1024}
    return "HNSW", "COSINE", {"M": 16, "efConstruction": 200}


# -- the local side -----------------------------------------------------------------------
class MilvusStore(IndexStore):
    """The local index folder of a Milvus index; :meth:`commit` writes the collection first."""

    collection: Collection

    def commit(self, *, vectors: np.ndarray | None = None, records=(), renames=(), deletes=(), **kw) -> None:
        if self._lock_fd is None:
            raise IndexStoreError("commit needs the writer lock (use store.writing())")
        records, renames, deletes = list(records), list(renames), list(deletes)
        n_rows = self.catalog.n_rows()
        fresh = np.asarray(vectors, self.vectors.dtype) if vectors is not None and len(vectors) else None
        matrix = self.matrix()
        numbering = iter(range(n_rows, n_rows + (len(fresh) if fresh is not None else 0)))

        def vector_of(row: int) -> np.ndarray:
            # rows from n_rows on are numbered only when fresh vectors came
            return cast(np.ndarray, fresh)[row - n_rows] if row >= n_rows else np.asarray(matrix[row])

        upserts: list[tuple[FileRecord, np.ndarray]] = []
        gone: list[str] = list(deletes)
        for r in records:
            if r.status == "ok":  # numbered as IndexStore.commit will number them
                upserts.append((r, vector_of(r.row if r.row is not None else next(numbering))))
            else:
                old = self.catalog.get(r.path)
                if old is not None and old.status == "ok":
                    gone.append(r.path)
        for old_path, r in renames:
            gone.append(old_path)
            upserts.append((r, vector_of(r.row)))
        if gone:
            self.collection.delete([path_id(p) for p in gone])
        if upserts:
            encoded = self.collection.encode(np.stack([v for _, v in upserts]))
            self._pending([r.path for r, _ in upserts])
            self.collection.upsert([_entity(r, v) for (r, _), v in zip(upserts, encoded)])
        super().commit(vectors=vectors, records=records, renames=renames, deletes=deletes, **kw)
        if upserts:
            self._pending(None)

    # A batch's paths are noted in the catalog before its upsert and cleared after its commit.
    # If the process dies in between, the next writer deletes the entities of noted paths that
    # the catalog does not list: files that were deleted before the rerun leave no orphans.
    _PENDING = "milvus_pending"

    def _pending(self, paths: list[str] | None) -> None:
        self.catalog.set_meta({self._PENDING: None if paths is None else json.dumps(paths)})

    def acquire(self) -> None:
        held = self._lock_fd is not None
        super().acquire()
        if held:
            return
        pending = self.catalog.meta(self._PENDING).get(self._PENDING)
        if pending is not None:
            unknown = [p for p in json.loads(pending) if (r := self.catalog.get(p)) is None or r.status != "ok"]
            if unknown:
                self.collection.delete([path_id(p) for p in unknown])
            self._pending(None)

    def resend_missing(self) -> int:
        """Upsert the catalog's files that the collection lacks (entities deleted, or the
        collection dropped and made again, behind lookalike's back) from the vectors kept in
        this folder; returns how many were sent. Files whose vector row is not here are
        forgotten, so that indexing their folder embeds them again. Needs the writer lock.

        When the collection holds exactly as many entities as the catalog lists files, they
        are taken to be these (a single writer); otherwise every id is looked up.
        """
        live = list(self.catalog.records(status="ok"))
        if not live or self.collection.count() == len(live):
            return 0
        found = {e["id"] for e in self.collection.get([path_id(r.path) for r in live], ["id"])}
        missing = [r for r in live if path_id(r.path) not in found]
        matrix = self.matrix()
        sendable = [r for r in missing if r.row is not None and 0 <= r.row < len(matrix)]
        for start in range(0, len(sendable), self.collection.write_batch):
            chunk = sendable[start : start + self.collection.write_batch]
            encoded = self.collection.encode(np.stack([np.asarray(matrix[r.row]) for r in chunk]))
            self.collection.upsert([_entity(r, v) for r, v in zip(chunk, encoded)])
        lost = [r.path for r in missing if r.row is None or not 0 <= r.row < len(matrix)]
        if lost:
            self.commit(deletes=lost)
        return len(sendable)

    def check(self) -> list[str]:
        """The folder's own checks, then: is every indexed file in the collection, under its path?"""
        problems = super().check()
        live = list(self.catalog.records(status="ok"))
        found = {e["id"]: e["path"] for e in self.collection.get([path_id(r.path) for r in live], ["path"])}
        missing = [r.path for r in live if path_id(r.path) not in found]
        clashes = [r.path for r in live if found.get(path_id(r.path), r.path) != r.path]
        if missing:
            problems.append(f"{len(missing)} indexed files are missing from Milvus collection "
                            f"{self.collection.name!r} (e.g. {missing[0]}); run `lookalike index` again "
                            "to send them")
        if clashes:
            problems.append(f"{len(clashes)} files share their Milvus id with another path (e.g. {clashes[0]})")
        return problems


def _entity(r: FileRecord, vector) -> dict:
    if len(r.path.encode("utf-8", "surrogatepass")) > PATH_MAX:
        raise MilvusError(f"path longer than {PATH_MAX} bytes cannot be stored in Milvus: {r.path[:80]}...")
    return {
        "id": path_id(r.path), "vector": vector, "path": r.path, "content_hash": r.content_hash or "",
        "size": int(r.size), "mtime_ns": int(r.mtime_ns), "width": int(r.width or 0), "height": int(r.height or 0),
    }


class MilvusSearch(VectorSearch):
    """Top-k search in a Milvus collection (the :class:`~lookalike.search.VectorSearch`
    interface); ids are path ids, and hits may be files of other shards' catalogs."""

    def __init__(self, collection: Collection, when_empty=None):
        self.collection = collection
        self.when_empty = when_empty  # called when nothing is found at all (an emptied collection?)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"milvus {self.collection.index_type} ({self.collection.milvus_metric})"

    def hits(self, queries: np.ndarray, k: int | None) -> list[list[SearchResult]]:
        vectors = np.atleast_2d(np.asarray(queries))
        if k is None:
            k = self.collection.count()
        # a margin, so that files tied with the k-th are all there for the tie-break by path
        limit = min(MAX_LIMIT, max(2 * k, k + 32))
        if k <= 0 or not len(vectors):
            return [[] for _ in vectors]
        found = self.collection.search(vectors, limit)
        if not any(found) and self.when_empty is not None:
            self.when_empty()
        results = []
        for hits in found:
            scored = []
            for h in hits:
                score, bits = self.collection.score(h["distance"])
                scored.append((-score, h["entity"]["path"], int(h["id"]), bits))
            scored.sort()  # best first, ties by path as in the local search
            results.append([SearchResult(rank, path, -neg, i, bits)
                            for rank, (neg, path, i, bits) in enumerate(scored[:k], 1)])
        return results

    def save(self, *args, **kwargs) -> None:
        """Seal what was written, so that it is searched through the index."""
        self.collection.flush()


# -- the index ----------------------------------------------------------------------------
class MilvusBackend(SearchBackend):
    """The search side of an index whose vectors live in a Milvus collection (the
    :class:`~lookalike.search.SearchBackend` interface): :class:`MilvusSearch` over
    the collection, path ids as file ids, the collection's own index type, and
    re-sending what the collection lost before indexing or when repairing.

    >>> ix = connect_index("pics.db", "phash", create=True)   # doctest: +SKIP
    >>> ix.add("photos/"); ix.search("q.jpg", k=5)      # doctest: +SKIP

    File ids (``SearchResult.id``, ``live().ids``) are :func:`~lookalike.backends.path_id`
    of the path, the collection's primary key, not the local catalog's row ids.
    """

    name = "milvus"

    def __init__(self, collection: Collection):
        self.collection = collection
        self._ids: tuple[list[str], np.ndarray] | None = None  # (paths, their path ids) of the last snapshot

    @property
    def uri(self) -> str:
        return self.collection.uri

    def kind(self, index) -> str:
        return f"milvus {self.collection.index_type} ({self.collection.milvus_metric})"

    def set_kind(self, index, kind: str) -> None:
        raise UsageError(f"the Milvus index type ({self.collection.index_type}) is chosen when the collection "
                         "is created (`--ann` at the first `lookalike index`)")

    def refresh(self, index, *, save: bool = False):
        """Milvus maintains its index itself; ``save=True`` (after :meth:`Index.add`) flushes the
        collection, sealing what was written so that it is searched through the index (on
        Milvus Lite, 10x faster than the growing segment)."""
        if save:
            self.collection.flush()
        return None

    def vector_search(self, index, *, exact: bool = False, every: bool = False) -> VectorSearch:
        """:class:`MilvusSearch` over the collection; ``exact=True`` searches the local
        catalog's vectors exactly instead (the reference; only the files this process's
        catalog indexed)."""
        if exact:
            return super().vector_search(index, exact=True)
        return MilvusSearch(self.collection, lambda: _refuse_if_emptied(index.store, self.collection))

    def file_ids(self, ids: np.ndarray, paths: list[str]) -> np.ndarray:
        if self._ids is None or self._ids[0] is not paths:
            self._ids = (paths, np.fromiter((path_id(p) for p in paths), np.int64, len(paths)))
        return self._ids[1]

    def record_id(self, rec: FileRecord) -> int:
        return path_id(rec.path)

    def before_add(self, index, shard: tuple[int, int] | None) -> None:
        """Refuse shards of a trainable extractor; first repair what the collection lost."""
        if shard is not None and shard[1] > 1 and index.extractor.trainable:
            raise UsageError(f"--shard cannot be used with the trainable extractor {index.extractor.name!r}: "
                             "each shard would learn its own vocabulary")
        with index.store.writing():
            index.store.resend_missing()

    def repair(self, index) -> list[str]:
        """The files the collection lost are sent again (:meth:`MilvusStore.resend_missing`)."""
        with index.store.writing():
            sent = index.store.resend_missing()
        return [f"sent {sent} indexed files that Milvus collection {self.collection.name!r} lacked again"] \
            if sent else []

    def describe(self) -> dict:
        return {"milvus": {
            "uri": self.collection.uri, "collection": self.collection.name, "entities": self.collection.count(),
            "index_type": self.collection.index_type, "metric": self.collection.milvus_metric,
            "encoding": self.collection.encoding,
        }}

    def close(self) -> None:
        self.collection.close()


def _refuse_if_emptied(store: IndexStore, collection: Collection) -> None:
    """An empty collection while the local catalog lists files lost its data: say so
    (raises :class:`MilvusError`) rather than answer no hits."""
    listed = store.catalog.counts()["ok"]
    if listed and collection.count() == 0:
        raise MilvusError(
            f"Milvus collection {collection.name!r} at {collection.uri} is empty, but its local "
            f"catalog {store.directory} lists {listed} files: it lost its data; run `lookalike index` "
            "on the indexed folders again to send them")


def connect_index(
    uri: str | os.PathLike,
    extractor: str | dict | Extractor | None = None,
    *,
    create: bool = False,
    token: str | None = None,
    collection: str | None = None,
    local: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    threads: int | None = None,
    max_pixels: int = decode.DEFAULT_MAX_PIXELS,
    ann: str = "auto",
    storage: str | None = None,
    keypoints: str | dict | None = "auto",
) -> Index:
    """Open (``create=True``: or create) the index in collection ``collection`` at ``uri``.

    ``uri``: ``./file.db`` (Milvus Lite) or ``http://host:19530``; ``token``:
    ``"user:password"`` or an API key. ``local``: the folder of the local
    catalog (default: :func:`default_local_dir`). ``extractor`` must match
    the collection's (:class:`~lookalike.ExtractorMismatch` says what differs).
    """
    uri = os.fspath(uri)
    if not is_server_uri(uri):
        uri = os.path.abspath(os.path.expanduser(uri))
    name = collection or DEFAULT_COLLECTION
    wanted = registry.create(extractor, threads=threads) if extractor is not None else None
    directory = os.path.abspath(os.path.expanduser(os.fspath(local))) if local else \
        default_local_dir(uri, name, shard)
    client = connect(uri, token)
    store: MilvusStore | None = None
    try:
        coll = Collection.open(client, uri, name)
        made = coll is None
        if coll is None:
            kept = os.path.exists(os.path.join(directory, "manifest.json"))
            if not create and kept:
                raise NotAnIndex(f"Milvus at {uri} has no collection {name!r} any more (its local catalog "
                                 f"{directory} remains): run `lookalike index` on the indexed folders again "
                                 "to make it again and send them")
            if not create:
                raise NotAnIndex(f"Milvus at {uri} has no collection {name!r} (create it with `lookalike index`)")
            if kept:
                # the local catalog outlived its collection (dropped behind lookalike's back):
                # make it again as the catalog knows it; the next add re-sends every file
                store = cast(MilvusStore, MilvusStore.open(directory, wanted.spec() if wanted is not None else None))
                refusal = _link_refusal(store, uri, name, None, made=True)
                if refusal:
                    raise IndexStoreError(refusal)
                manifest = store.manifest
            else:
                manifest = new_manifest(wanted or registry.create(registry.default_spec(), threads=threads), ann, storage,
                                     keypoints)
            coll = Collection.create(client, uri, name, manifest, manifest.ann)
        where = f"Milvus collection {name!r} at {uri}"
        stored = Manifest(extractor=coll.spec, dim=coll.dim, metric=coll.metric,
                          dtype=coll.properties.get(PROPERTY + "dtype", "float16"),
                          lookalike_version=coll.properties.get(PROPERTY + "version", ""),
                          ann=coll.properties.get(PROPERTY + "ann", "auto"),
                          local=json.loads(coll.properties.get(PROPERTY + "keypoints", "null")))
        if wanted is not None:
            check_extractor(stored, wanted.spec(), where)
        store = _local_store(directory, stored, coll, made, store)
    except BaseException:
        if store is not None:
            store.close()
        disconnect(client, uri)
        raise
    ext = wanted if wanted is not None else registry.create(coll.spec, threads=threads)
    take_state(store, ext)
    return Index(store, ext, max_pixels, backend=MilvusBackend(coll))


def _local_store(directory: str, stored: Manifest, coll: Collection, made: bool = False,
                 store: MilvusStore | None = None) -> MilvusStore:
    """Open or create the local folder for ``coll`` (unless ``store`` is it, open); refuse one
    that belongs to another collection. ``made``: ``coll`` was created just now."""
    if store is None:
        if os.path.exists(os.path.join(directory, "manifest.json")):
            store = cast(MilvusStore, MilvusStore.open(directory, stored.extractor))
        else:
            store = cast(MilvusStore, MilvusStore.create(directory, stored))
    store.collection = coll
    uid = coll.properties.get(PROPERTY + "uuid", "")
    refusal = _link_refusal(store, coll.uri, coll.name, uid, made)
    if refusal:
        store.close()
        raise IndexStoreError(refusal)
    link = {_LINK: uid, _WHERE: json.dumps([coll.uri, coll.name])}  # tie the catalog to this collection
    if not store.catalog.readonly and store.catalog.meta(*link) != link:
        store.catalog.set_meta(dict(link))
    return store


_LINK, _WHERE = "milvus_collection", "milvus_location"  # catalog meta: the collection's uuid, [uri, name]


def _link_refusal(store: IndexStore, uri: str, name: str, uid: str | None, made: bool) -> str | None:
    """Why the local catalog of ``store`` must not be tied to collection ``name`` at ``uri``
    (uuid ``uid``; ``None``: not made yet), or ``None``. A catalog tied to a collection of the
    same name and place that is gone may be tied to the one ``made`` again in its stead."""
    meta = store.catalog.meta(_LINK, _WHERE)
    if _LINK not in meta:
        if store.catalog.counts()["ok"]:
            return (f"{store.directory} holds a local index that is not linked to Milvus collection "
                    f"{name!r}; give another --index DIR for its catalog")
        return None
    if meta[_LINK] == uid or made and meta.get(_WHERE) == json.dumps([uri, name]):
        return None
    return (f"the local catalog {store.directory} belongs to another Milvus collection (or one since dropped and "
            f"made again) than {name!r} at {uri}; give another --index DIR or remove it")
