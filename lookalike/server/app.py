"""The HTTP API and web page over one index directory (FastAPI on uvicorn).

:func:`create_app` builds the ASGI app; :func:`run` binds a socket and serves
it (``lookalike serve``). Everything under ``/api`` answers JSON, errors
included, always in the shape ``{"error": {"code": "...", "message": "..."}}``.

Concurrency. Searches and file reads run on a small pool of worker threads.
Each worker thread opens the index once for itself (a SQLite connection
belongs to the thread that made it) and calls :meth:`Index.live` on every
request, which re-reads ids, paths and vector rows in one transaction whenever
another process has committed. So a request always sees one consistent
snapshot, also while ``lookalike index`` is updating the same index.

Security. Files are only ever found by their catalog id, never by a path the
client sends; only files of the live index are served, and only when the
file, symlinks resolved, lies under one of the index's roots as recorded
when it was indexed (a root since replaced by a symlink or another folder
serves nothing until ``lookalike index`` records it again). Request
bodies are limited (``max_upload``), decoded images by their declared pixel
count (``max_pixels``). With a ``token``, every request except the static page
shell (``/``, ``/static/*``: code, no data) needs ``Authorization: Bearer
TOKEN``. No CORS headers unless ``cors_origins`` is given.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import decode, roots, thumbnails
from ..version import __version__
from ..errors import NotTrained
from ..backends import is_server_uri, open_index
from ..index import VERIFY_CANDIDATES, Index, NoKeypoints, QueryError
from ..store import IndexStoreError
from ..sources import is_raw_name
from ..errors import LookalikeError, UsageError

log = logging.getLogger("lookalike.server")

STATIC = FsPath(__file__).resolve().parent / "static"

DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  #: bytes of one uploaded image
MAX_K = 1000  #: most hits one search returns
MAX_CANDIDATES = 500  #: most candidates one verified search re-ranks
MAX_ID = 2**63 - 1  #: SQLite's largest integer id
DEFAULT_THUMB = 256
#: Multipart framing allowed on top of ``max_upload`` before a body is refused.
MULTIPART_SLACK = 64 * 1024
#: Files up to this size are read into memory when served; larger ones are streamed.
READ_WHOLE = 16 * 1024 * 1024
#: Paths that need no token: the page shell, which holds no data of the index.
OPEN_PATHS = ("/", "/duplicates", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]


# -- errors --------------------------------------------------------------------
class ApiError(Exception):
    """An expected failure, answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 413: "upload_too_large",
    415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
}


def _decode_error(e: decode.DecodeError) -> ApiError:
    """An upload that cannot be decoded: 413 over the pixel limit, else 422; code = the reason."""
    status = 413 if e.reason is decode.SkipReason.TOO_LARGE else 422
    message = {
        "empty": "the uploaded file is empty",
        "not_an_image": "the uploaded file is not an image lookalike can read",
        "truncated": "the uploaded image is truncated",
        "too_large": "the uploaded image has too many pixels",
    }.get(e.reason.value, "the uploaded image could not be decoded")
    return ApiError(status, e.reason.value, f"{message} ({e.detail})" if e.detail else message)


# -- response models (they make the OpenAPI schema) ------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, not_an_image, upload_too_large")
    message: str = Field(description="human-readable explanation")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Hit(BaseModel):
    rank: int = Field(description="1 = most similar")
    id: int = Field(description="catalog id of the indexed file")
    path: str = Field(description="the file's path as indexed")
    score: float = Field(description="similarity: cosine in [-1, 1], or 1 - Hamming distance / bits")
    distance: int | None = Field(None, description="Hamming distance in bits (hash extractors only)")
    copy_score: float | None = Field(
        None, description="calibrated copy score (extractors trained for copy detection, e.g. sscd and the default "
        "with the sscd extra): a copy from the index's copy_threshold (GET /info) up; null otherwise")
    inliers: int | None = Field(
        None, description="with verify: keypoints matched under one geometric model (0 = no geometric match); "
        "null when this hit was not verified (no verify, or ranked below the candidates)")
    region: list[list[float]] | None = Field(
        None, description="with verify: the query's outline (4 [x, y] corners) projected into this hit's "
        "pixel coordinates (its full, upright size); null without a geometric model")


class QueryInfo(BaseModel):
    kind: Literal["upload", "id"]
    id: int | None = None
    path: str | None = None
    filename: str | None = None
    width: int | None = None
    height: int | None = None


class SearchResponse(BaseModel):
    query: QueryInfo
    k: int
    hits: list[Hit]
    took_ms: float
    verified: bool = Field(
        False, description="geometric verification ran (verify=true): verified hits come first, by inliers")
    candidates: int | None = Field(None, description="with verify: how many of the best candidates were re-ranked")


class FileInfo(BaseModel):
    id: int
    path: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    content_hash: str | None


class InfoResponse(BaseModel):
    path: str
    manifest: dict[str, Any]
    files: int
    skipped: int
    skip_reasons: dict[str, int]
    roots: list[str]
    vector_rows: int
    bytes_on_disk: int
    copy_threshold: float | None = Field(None, description="hits' copy_score from here up are copies; "
                                         "null when the extractor has no calibrated copy score")
    server: dict[str, Any]


class StatsResponse(BaseModel):
    files: int
    skipped: int
    skip_reasons: dict[str, int]
    vector_rows: int
    bytes_on_disk: int
    uptime_s: float
    requests: int
    searches: int
    search_errors: int
    search_ms_mean: float | None


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    files: int


class DupMember(BaseModel):
    path: str = Field(description="the file's path as indexed")
    id: int | None = Field(description="catalog id")
    score: float = Field(description="similarity to the group's keeper (1 for the keeper)")
    width: int | None
    height: int | None
    size: int | None = Field(description="bytes")
    mtime_ns: int | None
    side: str = Field(description="'index'")


class DupGroup(BaseModel):
    keeper: str = Field(description="path of the suggested keeper (by the keeper rule `keep`)")
    level: str = Field(description="the level that made the group: exact, near or edited")
    members: list[DupMember] = Field(description="keeper first, then the others by score")


class DuplicatesResponse(BaseModel):
    level: str
    keep: str
    threshold: float | None = Field(description="minimum pair score (null at level exact)")
    k: int
    groups: list[DupGroup]
    duplicates: int = Field(description="members that are not keepers")
    duplicate_bytes: int = Field(description="their bytes: what moving them frees")
    took_ms: float


class TrashRequest(BaseModel):
    ids: list[int] = Field(description="catalog ids of the files to move to the index's trash folder", min_length=1,
                           max_length=10000)
    level: Literal["exact", "near", "edited"] = Field("near", description="the level the files were picked at")
    threshold: float | None = Field(None, ge=-1, le=1, description="as for GET /api/duplicates")
    k: int = Field(10, ge=1, le=100)
    keep: str = Field("largest", description="the keeper rule")


class ActionEntry(BaseModel):
    path: str
    dest: str | None = None
    error: str | None = Field(None, description="why it was not done (the file is untouched)")


class TrashResponse(BaseModel):
    moved: list[ActionEntry]
    not_done: list[ActionEntry]
    undo_log: str | None = Field(description="name of the undo log (POST /api/undo), null when nothing was done")
    took_ms: float


class UndoRequest(BaseModel):
    log: str = Field(description="an undo log name from POST /api/duplicates/trash", max_length=200)


class UndoResponse(BaseModel):
    restored: list[str]
    problems: list[str]
    indexed_again: int


FileId = Annotated[int, Path(ge=1, le=MAX_ID, description="catalog id of an indexed file (from a search hit)")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of hits")]
Verify = Annotated[bool, Query(
    description="copy detection: re-rank the best candidates by matching keypoints (geometric verification); "
    "hits then carry inliers and region. Needs an index built with keypoints (lookalike index --keypoints sift)")]
Candidates = Annotated[int, Query(ge=1, le=MAX_CANDIDATES, description="candidates re-ranked by verify")]
ThumbSize = Annotated[int, Query(ge=16, le=1024, description="longest side in pixels")]

_ERRORS: dict[int | str, dict[str, Any]] = {"4XX": {"model": ErrorBody, "description": "error (JSON: {\"error\": {\"code\", \"message\"}})"}}
_NO_KEYPOINTS: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody, "description": "verify on an index without keypoints (no_keypoints)"}}
_IMAGE = {"schema": {"type": "string", "format": "binary"}}


# -- the index, one read-only view per worker thread --------------------------------
class _Views:
    """A thread pool whose threads each hold their own open :class:`Index`."""

    def __init__(self, index_path: str | os.PathLike, *, workers: int, threads: int, max_pixels: int, backend: dict | None = None):
        self.index_path, self.threads, self.max_pixels = index_path, threads, max_pixels
        self.backend = backend or {}  # Milvus options for lookalike.backends.open_index
        self.workers = workers
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-search")

    def index(self) -> Index:
        ix = getattr(self._local, "index", None)
        if ix is None:
            ix = open_index(self.index_path, threads=self.threads, max_pixels=self.max_pixels, **self.backend)
            self._local.index = ix
        return ix

    async def call(self, fn, *args):
        """``fn(index, *args)`` on a worker thread, with that thread's index."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self.index(), *args))

    def warm(self) -> None:
        """Open the index (and load the model) in every worker thread now, not on first use."""
        barrier = threading.Barrier(self.workers)

        def one() -> None:
            ix = self.index()
            side = ix.extractor.min_side or 64
            try:
                ix.embed(np.full((side, side, 3), 128, np.uint8))
            except Exception:  # e.g. an untrained keypoint index: searches will say so
                pass
            ix.live()
            barrier.wait(timeout=120)

        for f in [self._pool.submit(one) for _ in range(self.workers)]:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- work done on the worker threads ------------------------------------------------
def _hits(hits) -> list[dict]:
    return [
        {"rank": h.rank, "id": h.id, "path": h.path, "score": round(float(h.score), 6), "distance": h.distance,
         "copy_score": h.copy_score, "inliers": h.inliers, "region": None if h.region is None else [[x, y] for x, y in h.region]}
        for h in hits
    ]


def _need_keypoints(ix: Index) -> None:
    try:
        ix.require_keypoints()
    except NoKeypoints as e:
        raise ApiError(409, "no_keypoints", str(e)) from None


def _search(ix: Index, pixels: np.ndarray, k: int, verify: int) -> list[dict]:
    """Hits for decoded query pixels; ``verify``: candidates to re-rank geometrically (0 = plain search)."""
    try:
        return _hits(ix.search(pixels, k, verify=verify) if verify else ix.search(pixels, k))
    except QueryError as e:  # the extractor failed on this image
        raise _decode_error(decode.DecodeError(e.reason, e.detail)) from None


def _search_pixels(ix: Index, data: bytes, k: int, max_pixels: int, verify: int = 0,
                   raw: bool | None = False) -> tuple[list, int, int]:
    if verify:
        _need_keypoints(ix)
    try:  # verification matches keypoints: it needs the image at full size
        decoded = decode.decode_bytes(data, min_side=None if verify else ix.extractor.min_side, max_pixels=max_pixels,
                                      raw=raw)
    except decode.DecodeError as e:
        raise _decode_error(e) from None
    return _search(ix, decoded.pixels, k, verify), decoded.width, decoded.height


def _position(ix: Index, file_id: int):
    live = ix.live()
    pos = np.flatnonzero(live.ids == file_id)
    if not len(pos):
        raise ApiError(404, "not_found", f"no indexed file has id {file_id}")
    return live, int(pos[0])


def _search_id(ix: Index, file_id: int, k: int, max_pixels: int, verify: int = 0) -> tuple[list, str]:
    if verify:  # the file's keypoints are matched, so it is read (as for a thumbnail: under the roots only)
        _need_keypoints(ix)
        path, data = _read_indexed(ix, file_id)
        try:
            pixels = decode.decode_bytes(data, max_pixels=max_pixels, raw=is_raw_name(path)).pixels
        except decode.DecodeError as e:
            raise _undecodable(file_id, e) from None
        return _search(ix, pixels, k, verify), path
    live, pos = _position(ix, file_id)
    vector = np.asarray(live.matrix[live.rows[pos]])[None]
    if ix.store.manifest.metric != "hamming":
        vector = vector.astype(np.float32)
    # through the index, as every search: its ANN structure locally, the whole collection on Milvus
    return _hits(ix.search_vectors(vector, k)[0]), live.paths[pos]


def _open_file(ix: Index, file_id: int) -> tuple[str, int, os.stat_result]:
    """Open the indexed file with this id for reading: ``(path, fd, stat)``.

    Only files of the live index, and only if the opened file (symlinks
    resolved, checked on the open descriptor so a swapped symlink cannot
    redirect it) lies under one of the index's roots *as recorded when it
    was indexed* (:func:`lookalike.roots.real_is_inside`): a root folder since
    replaced by a symlink, or by another folder, serves nothing.
    """
    live, pos = _position(ix, file_id)
    path = live.paths[pos]
    records = ix.store.catalog.root_records()
    root = roots.root_of(path, records)
    if root is None:
        raise ApiError(403, "outside_roots", f"file {file_id} is not under the index's roots")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ApiError(404, "file_missing", f"file {file_id} no longer exists on disk") from None
    except OSError as e:
        raise ApiError(404, "file_unreadable", f"file {file_id} cannot be read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ApiError(404, "file_unreadable", f"file {file_id} is not a regular file")
        real = roots.fd_real_path(fd, path)
        if not roots.real_is_inside(real, records):
            if not roots.still_there(root) or os.path.realpath(root.path) != root.base:
                raise ApiError(403, "outside_roots",
                               f"file {file_id} is not served: its root {root.path} has changed since it was "
                               "indexed (it is no longer the same folder); run `lookalike index` on it again "
                               "to record it as it is now")
            raise ApiError(403, "outside_roots", f"file {file_id} resolves to a place outside the index's roots")
    except BaseException:
        os.close(fd)
        raise
    return path, fd, st


def _read_indexed(ix: Index, file_id: int) -> tuple[str, bytes]:
    """``(path, bytes)`` of the indexed file with this id (see :func:`_open_file`)."""
    path, fd, st = _open_file(ix, file_id)
    try:
        if st.st_size > decode.DEFAULT_MAX_FILE_BYTES:
            raise ApiError(413, "too_large", f"file {file_id} is too large to decode")
        return path, _read_fd(fd, st.st_size)
    finally:
        os.close(fd)


def _undecodable(file_id: int, e: decode.DecodeError) -> ApiError:
    return ApiError(422, e.reason.value, f"file {file_id} cannot be decoded any more: {e}")


def _read_fd(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _etag(st: os.stat_result, extra: str = "") -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}{extra}"'


class _ThumbCache:
    """A small LRU of encoded thumbnails, keyed by id, size and the file's size and mtime."""

    def __init__(self, entries: int = 512):
        self.entries = entries
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.entries:
                self._data.popitem(last=False)


def _thumbnail(ix: Index, file_id: int, size: int, max_pixels: int, cache: _ThumbCache) -> tuple[bytes, str]:
    path, fd, st = _open_file(ix, file_id)
    try:
        key = (file_id, size, st.st_size, st.st_mtime_ns)
        cached = cache.get(key)
        if cached is not None:
            return cached, _etag(st, f"-t{size}")
        if st.st_size > decode.DEFAULT_MAX_FILE_BYTES:
            raise ApiError(413, "too_large", f"file {file_id} is too large to make a thumbnail of")
        data = _read_fd(fd, st.st_size)
    finally:
        os.close(fd)
    try:
        out = thumbnails.jpeg(data, size, quality=85, max_pixels=max_pixels, raw=is_raw_name(path))
    except decode.DecodeError as e:
        raise _undecodable(file_id, e) from None
    cache.put(key, out)
    return out, _etag(st, f"-t{size}")


_MIME = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".jfif": "image/jpeg",
    ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp",
    ".dib": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".heic": "image/heic",
    ".heif": "image/heif", ".avif": "image/avif", ".ico": "image/x-icon", ".jp2": "image/jp2",
}


def _original(ix: Index, file_id: int) -> tuple[str, int, os.stat_result, bytes | None]:
    path, fd, st = _open_file(ix, file_id)
    if st.st_size > READ_WHOLE:
        return path, fd, st, None  # the caller streams it and closes fd
    try:
        return path, -1, st, _read_fd(fd, st.st_size)
    finally:
        os.close(fd)


def _stream(f, size: int):
    """Up to ``size`` bytes of the open file ``f`` in chunks; closes it (as does
    garbage collection, should the response never be sent)."""
    with f:
        left = size
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


def _file_info(ix: Index, file_id: int) -> dict:
    live, pos = _position(ix, file_id)
    rec = ix.store.catalog.get(live.paths[pos])
    if rec is None or ix.record_id(rec) != file_id:  # removed between the two reads
        raise ApiError(404, "not_found", f"no indexed file has id {file_id}")
    return {"id": file_id, "path": rec.path, "size": rec.size, "mtime_ns": rec.mtime_ns,
            "width": rec.width, "height": rec.height, "content_hash": rec.content_hash}


# -- ASGI guard: host, token, body size, security headers ---------------------------------
class _Guard:
    """Pure ASGI middleware in front of everything (below CORS, if enabled)."""

    def __init__(self, app, *, token: str | None, allowed_hosts: set[str] | None, body_limit: int, stats: dict):
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = allowed_hosts
        self.body_limit = body_limit
        self.drain_limit = 4 * body_limit + (1 << 20)
        self.stats = stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.stats["requests"] += 1

        async def send_secure(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")) not in self.allowed_hosts:
            return await error_response(400, "invalid_host", "this server only answers requests for its own host name")(
                scope, receive, send_secure)
        path = scope.get("path", "")
        if self.token is not None and not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)):
            scheme, _, value = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token):
                return await error_response(
                    401, "unauthorized", "this server needs a token: send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": "Bearer"},
                )(scope, receive, send_secure)

        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await error_response(400, "bad_request", "invalid Content-Length")(scope, receive, send_secure)
            if int(length) > self.body_limit:
                await self._drain(receive, 0)
                return await self._too_large()(scope, receive, send_secure)

        state = {"total": 0, "over": False, "answered": False}

        async def receive_limited():
            message = await receive()
            if message["type"] == "http.request" and not state["over"]:
                state["total"] += len(message.get("body", b""))
                if state["total"] > self.body_limit:
                    state["over"] = True
                    if message.get("more_body"):
                        await self._drain(receive, state["total"])
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def send_limited(message):
            if not state["over"]:
                return await send_secure(message)
            if not state["answered"]:  # replace whatever the app answers to a cut-off body
                state["answered"] = True
                await self._too_large()(scope, receive, send_secure)

        await self.app(scope, receive_limited, send_limited)

    async def _drain(self, receive, seen: int) -> None:
        """Read and drop the rest of an over-large body (up to a bound), so the
        client gets to read the 413 instead of a connection reset."""
        while seen <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    def _too_large(self) -> JSONResponse:
        return error_response(
            413, "upload_too_large",
            f"the request body is over the limit of {self.body_limit - MULTIPART_SLACK} bytes "
            "(lookalike serve --max-upload)",
            {"Connection": "close"},
        )


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_hosts(host: str) -> set[str]:
    """Host header names accepted when serving on a loopback address (DNS-rebinding guard)."""
    return {"127.0.0.1", "localhost", "::1", host.lower()}


def check_token(token: str | None) -> str | None:
    """``token`` if it can protect the server (``None``: no token); raises ``ValueError``
    for an empty or whitespace-only one, which would otherwise turn authentication off,
    and for one with whitespace around it, which no client can send in a header."""
    if token is None:
        return None
    if not token.strip():
        raise UsageError("the token is empty (--token or LOOKALIKE_TOKEN): give a real token, "
                         "or leave both unset to serve without one")
    if token != token.strip():
        raise UsageError("the token starts or ends with whitespace, which no client can send: remove it")
    return token


# -- the app ---------------------------------------------------------------------------
def create_app(
    index_path: str | os.PathLike,
    token: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    *,
    max_pixels: int = decode.DEFAULT_MAX_PIXELS,
    cors_origins: list[str] | tuple[str, ...] = (),
    allowed_hosts: set[str] | None = None,
    workers: int | None = None,
    threads: int | None = None,
    warm: bool = True,
    backend: dict | None = None,
) -> FastAPI:
    """The ASGI app serving the API and the page for the index at ``index_path``.

    ``token``: required as ``Authorization: Bearer TOKEN`` on every request
    but the static page shell. ``max_upload``: bytes of one uploaded image
    (413 above). ``max_pixels``: decompression-bomb limit for uploads and
    thumbnails (413 above). ``cors_origins``: origins allowed cross-origin
    (none by default). ``allowed_hosts``: accepted ``Host`` header names
    (``None``: any). ``workers``: search threads (default: min(4, CPUs));
    ``threads``: inference threads per worker (default: CPUs / workers).
    The index is opened once here, so a wrong path fails now, not later.
    ``index_path`` may be a Milvus URI; ``backend``: its options (``token``,
    ``collection``, ``local``; see :func:`lookalike.backends.open_index`).
    """
    token = check_token(token)
    backend = backend or {}
    if not is_server_uri(index_path):
        index_path = os.path.abspath(os.path.expanduser(os.fspath(index_path)))
    if max_upload <= 0:
        raise UsageError("max_upload must be positive")
    with open_index(index_path, **backend) as probe:  # raises NotAnIndex etc. with a clear message
        extractor_name = probe.store.manifest.extractor.get("name", "?")
    cpus = os.cpu_count() or 1
    workers = workers or min(4, cpus)
    threads = threads or max(1, cpus // workers)
    views = _Views(index_path, workers=workers, threads=threads, max_pixels=max_pixels, backend=backend)
    thumbs = _ThumbCache()
    stats = {"requests": 0, "searches": 0, "search_errors": 0, "search_seconds": 0.0, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm:
            await asyncio.get_running_loop().run_in_executor(None, views.warm)
        yield
        views.close()

    app = FastAPI(
        title="lookalike",
        version=__version__,
        description=(
            "Search an image index by example. Errors are JSON: "
            '`{"error": {"code": "...", "message": "..."}}`. '
            "When the server has a token, send `Authorization: Bearer <token>`."
        ),
        docs_url=None,  # the Swagger/ReDoc pages load their code from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.views = views
    app.state.stats = stats

    # -- errors ----------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path}"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error (details are in the server's log)")

    async def searched(coro):
        start = time.perf_counter()
        try:
            result = await coro
        except NotTrained as e:
            stats["search_errors"] += 1
            raise ApiError(409, "index_not_trained", str(e)) from None
        except IndexStoreError as e:  # e.g. a Milvus collection that lost its data or cannot be reached
            stats["search_errors"] += 1
            raise ApiError(503, "index_unavailable", str(e)) from None
        except ApiError:
            stats["search_errors"] += 1
            raise
        elapsed = time.perf_counter() - start
        stats["searches"] += 1
        stats["search_seconds"] += elapsed
        return result, round(elapsed * 1000, 3)

    # -- API ---------------------------------------------------------------------------

    @app.get("/api/health", response_model=Health, responses=_ERRORS, tags=["index"])
    async def health():
        """The server is up and the index can be read."""
        files = await views.call(lambda ix: len(ix.live().ids))
        return {"status": "ok", "version": __version__, "files": files}

    @app.get("/api/info", response_model=InfoResponse, responses=_ERRORS, tags=["index"])
    async def info():
        """The index: manifest (extractor, vector size, metric), counts, roots, size on disk."""
        data = (await views.call(lambda ix: ix.info())).to_dict()
        data["server"] = {"version": __version__, "max_upload": max_upload, "max_pixels": max_pixels,
                          "max_k": MAX_K, "token_required": token is not None}
        return data

    @app.get("/api/stats", response_model=StatsResponse, responses=_ERRORS, tags=["index"])
    async def stats_():
        """Counts of the index and of this server's requests and searches."""
        data = (await views.call(lambda ix: ix.info())).to_dict()
        n = stats["searches"]
        return {
            "files": data["files"], "skipped": data["skipped"], "skip_reasons": data["skip_reasons"],
            "vector_rows": data["vector_rows"], "bytes_on_disk": data["bytes_on_disk"],
            "uptime_s": round(time.time() - stats["started"], 3), "requests": stats["requests"],
            "searches": n, "search_errors": stats["search_errors"],
            "search_ms_mean": round(stats["search_seconds"] / n * 1000, 3) if n else None,
        }

    @app.post(
        "/api/search", response_model=SearchResponse, tags=["search"],
        responses={**_ERRORS, 413: {"model": ErrorBody, "description": "upload over --max-upload, or more pixels than --max-pixels"},
                   **_NO_KEYPOINTS,
                   422: {"model": ErrorBody, "description": "not an image, truncated, empty, or a missing 'image' field"}},
    )
    async def search_upload(
        image: UploadFile = File(..., description="the query image (any format lookalike can index)"),
        k: K = 10,
        verify: Verify = False,
        candidates: Candidates = VERIFY_CANDIDATES,
    ):
        """Search with an uploaded image (multipart/form-data, field `image`); `verify=true`: copy detection."""
        data = await image.read(max_upload + 1)
        if len(data) > max_upload:
            raise ApiError(413, "upload_too_large", f"the image is over the limit of {max_upload} bytes (lookalike serve --max-upload)")
        checked = candidates if verify else 0
        name = os.path.basename(image.filename or "") or None
        raw = True if name and is_raw_name(name) else None  # else tried as RAW if nothing else reads it
        (hits, width, height), took = await searched(views.call(_search_pixels, data, k, max_pixels, checked, raw))
        return {"query": {"kind": "upload", "filename": name, "width": width, "height": height},
                "k": k, "hits": hits, "took_ms": took, "verified": verify, "candidates": checked or None}

    @app.get(
        "/api/search/{file_id}", response_model=SearchResponse, tags=["search"],
        responses={**_ERRORS, **_NO_KEYPOINTS},
    )
    async def search_id(file_id: FileId, k: K = 10, verify: Verify = False, candidates: Candidates = VERIFY_CANDIDATES):
        """Search with an indexed file: its stored vector; with `verify=true`, its pixels (the file is read),
        re-ranked by matching keypoints. It is its own first hit."""
        checked = candidates if verify else 0
        (hits, path), took = await searched(views.call(_search_id, file_id, k, max_pixels, checked))
        return {"query": {"kind": "id", "id": file_id, "path": path}, "k": k, "hits": hits, "took_ms": took,
                "verified": verify, "candidates": checked or None}

    @app.get("/api/files/{file_id}", response_model=FileInfo, responses=_ERRORS, tags=["files"])
    async def file_info(file_id: FileId):
        """What the catalog knows about one indexed file."""
        return await views.call(_file_info, file_id)

    @app.get(
        "/api/files/{file_id}/thumbnail", response_class=Response, tags=["files"],
        responses={200: {"content": {"image/jpeg": _IMAGE}, "description": "JPEG thumbnail"}, 304: {"description": "not modified"}, **_ERRORS},
    )
    async def thumbnail(request: Request, file_id: FileId,
                        size: ThumbSize = DEFAULT_THUMB):
        """A JPEG thumbnail of an indexed file (longest side `size`)."""
        data, etag = await views.call(_thumbnail, file_id, size, max_pixels, thumbs)
        headers = {"ETag": etag, "Cache-Control": "private, max-age=60"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get(
        "/api/files/{file_id}/original", response_class=Response, tags=["files"],
        responses={200: {"content": {"image/*": _IMAGE, "application/octet-stream": _IMAGE}, "description": "the file's bytes"},
                   304: {"description": "not modified"}, **_ERRORS},
    )
    async def original(request: Request, file_id: FileId):
        """The indexed file itself, byte for byte."""
        path, fd, st, data = await views.call(_original, file_id)
        f = os.fdopen(fd, "rb") if data is None else None  # closed when streamed or collected
        etag = _etag(st)
        name = os.path.basename(path)
        headers = {
            "ETag": etag, "Cache-Control": "private, max-age=60",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name, safe='')}",
            "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
        }
        media = _MIME.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
        if request.headers.get("if-none-match") == etag:
            if f is not None:
                f.close()
            return Response(status_code=304, headers=headers)
        if data is not None:
            return Response(data, media_type=media, headers=headers)
        from starlette.responses import StreamingResponse

        headers["Content-Length"] = str(st.st_size)
        return StreamingResponse(_stream(f, st.st_size), media_type=media, headers=headers)

    @app.get("/api/duplicates", response_model=DuplicatesResponse, tags=["duplicates"], responses=_ERRORS)
    async def duplicates(
        threshold: Annotated[float | None, Query(ge=-1, le=1, description="minimum score (default: the level's)")] = None,
        k: Annotated[int, Query(ge=1, le=100, description="neighbours considered per image")] = 10,
        level: Annotated[Literal["exact", "near", "edited"], Query(
            description="exact: the same bytes; near (default): re-encoded or resized, never cropped, mirrored or "
            "rotated; edited: also crops, mirrors, rotations, overlays")] = "near",
        keep: Annotated[str, Query(description="keeper rule: largest, oldest, newest, shortest-path or in:FOLDER")]
        = "largest",
    ):
        """Groups of duplicate images, each with a suggested keeper (see `lookalike duplicates`)."""
        from ..duplicates import check_keep_rule, level_threshold, totals

        try:
            check_keep_rule(keep)
        except UsageError as e:
            raise ApiError(422, "bad_request", str(e)) from None

        def find(ix: Index):
            thr = None if level == "exact" else threshold if threshold is not None else level_threshold(ix, level)
            groups = ix.duplicates(threshold=thr, k=k, level=level, keep=keep)
            return thr, groups

        t0 = time.perf_counter()
        thr, groups = await views.call(find)
        return {"level": level, "keep": keep, "threshold": thr, "k": k, "groups": [g.to_dict() for g in groups],
                **{n: v for n, v in totals(groups).items() if n != "groups"},
                "took_ms": round((time.perf_counter() - t0) * 1000, 3)}

    def same_origin(request: Request) -> None:
        """Actions only from this server's own page: a browser sends Origin with a POST, and
        a page of another site must not move files (with no token, anyone could)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            from urllib.parse import urlsplit

            if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
                raise ApiError(403, "forbidden", "actions are accepted only from this server's own page")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the request as application/json")

    def acting_index():
        return open_index(index_path, max_pixels=max_pixels, **backend)

    @app.post("/api/duplicates/trash", response_model=TrashResponse, tags=["duplicates"],
              responses={**_ERRORS, 409: {"model": ErrorBody, "description": "a file is no longer a duplicate"}})
    async def trash(request: Request, body: TrashRequest):
        """Move the picked members of duplicate groups to the index's trash folder (INDEX/trash), under the
        same rules as `lookalike duplicates --move-to`: only files under the index's roots, each re-checked
        right before it moves, never every member of a group, journalled in an undo log."""
        from ..actions import ActionsInterrupted
        from ..duplicates import NotADuplicate, check_keep_rule, move_selected

        same_origin(request)

        def act():
            with acting_index() as ix:
                check_keep_rule(body.keep)
                trash_dir = os.path.join(ix.path, "trash")
                return move_selected(ix, body.ids, trash_dir, level=body.level, threshold=body.threshold,
                                     k=body.k, keep=body.keep)

        t0 = time.perf_counter()
        try:
            log, entries, skipped = await asyncio.get_running_loop().run_in_executor(None, act)
        except NotADuplicate as e:
            raise ApiError(409, "not_a_duplicate", str(e)) from None
        except UsageError as e:
            raise ApiError(422, "bad_request", str(e)) from None
        except ActionsInterrupted as e:
            raise ApiError(503, "interrupted", str(e)) from None
        except LookalikeError as e:  # e.g. another process indexes or acts on the index right now
            raise ApiError(409, "conflict", str(e)) from None
        moved = [{"path": e["path"], "dest": e.get("dest")} for e in entries if e.get("state") == "done"]
        not_done = [{"path": e["path"], "error": e.get("error")} for e in entries if e.get("state") != "done"]
        not_done += [{"path": a.path, "error": a.skip} for a in skipped]
        return {"moved": moved, "not_done": not_done, "undo_log": os.path.basename(log) if log else None,
                "took_ms": round((time.perf_counter() - t0) * 1000, 3)}

    @app.post("/api/undo", response_model=UndoResponse, tags=["duplicates"], responses=_ERRORS)
    async def undo(request: Request, body: UndoRequest):
        """Put back what one POST /api/duplicates/trash moved (by its undo log's name), and index it again."""
        from ..actions import undo as undo_log
        from ..duplicates import index_again

        same_origin(request)
        if not re.fullmatch(r"undo-[A-Za-z0-9._-]+\.jsonl", body.log):
            raise ApiError(422, "bad_request", "not an undo log name")

        def act():
            with acting_index() as ix:
                path = os.path.join(ix.path, "undo", body.log)
                if not os.path.isfile(path):
                    raise ApiError(404, "not_found", f"no undo log {body.log} in this index")
                outcomes = undo_log(path)
                back = sorted({o.path for o in outcomes if o.ok and o.path})
                return outcomes, back, index_again(ix, back)

        try:
            outcomes, back, again = await asyncio.get_running_loop().run_in_executor(None, act)
        except LookalikeError as e:  # a damaged or forged log, a busy index
            raise ApiError(409, "conflict", str(e)) from None
        return {"restored": back, "problems": [o.message for o in outcomes if not o.ok], "indexed_again": len(again)}

    # -- the page -------------------------------------------------------------------------
    @app.get("/duplicates", include_in_schema=False)
    async def duplicates_view():
        # The page is one document with two views; this is its bookmarkable duplicates view.
        # Relative, so it also works behind a proxy that serves the app under a prefix.
        return RedirectResponse("./#duplicates", status_code=307, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- OpenAPI: say how the token is sent -----------------------------------------------
    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        if token is not None:
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
        schema["info"]["x-index"] = {"extractor": extractor_name}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema

    # -- middleware (the last added runs first) ----------------------------------------------
    app.add_middleware(_Guard, token=token, allowed_hosts=allowed_hosts,
                       body_limit=max_upload + MULTIPART_SLACK, stats=stats)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


# -- serving ---------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.I)


def parse_size(text: str | int) -> int:
    """``"20MB"``, ``"512k"``, ``"1GiB"`` or a plain number of bytes -> bytes (K = 1024)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"not a size: {text!r} (use bytes or a K/M/G suffix, e.g. 20MB)")
    unit = (m.group(2) or "b").lower()[0]
    value = int(float(m.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])
    if value <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return value


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on connections of
    # such sockets, and without it every answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(
    index_path: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    max_pixels: int = decode.DEFAULT_MAX_PIXELS,
    cors_origins: tuple[str, ...] = (),
    access_log: bool = True,
    echo=None,
    backend: dict | None = None,
) -> None:
    """Serve the index until interrupted; says the URL on ``echo`` first."""
    import uvicorn

    echo = echo or (lambda line: print(line, flush=True))
    local = is_loopback(host)
    app = create_app(index_path, token=token, max_upload=max_upload, max_pixels=max_pixels,
                     cors_origins=cors_origins, allowed_hosts=loopback_hosts(host) if local else None,
                     backend=backend)
    sock = bind(host, port)
    real_host, real_port = sock.getsockname()[:2]
    shown = f"[{real_host}]" if ":" in real_host else real_host
    url = f"http://{shown}:{real_port}/"
    echo(f"lookalike: serving {index_path} on {url} (API: {url}api, schema: {url}openapi.json); Ctrl-C stops")
    if token:
        echo(f"lookalike: a token is required; open the page once as {url}#token=<your token>")
    elif not local:
        echo(f"lookalike: warning: listening on {host} without --token: anyone who can reach this "
             "port can search the index and download its images")
    config = uvicorn.Config(app, log_level="info", access_log=access_log, server_header=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
