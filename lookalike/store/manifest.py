"""``manifest.json``: what an index directory holds and how it was made.

The manifest is read as untrusted input: every field is checked for type and
value, and the index's own files have fixed names inside the index folder
(:data:`VECTORS_NAME`, :data:`CATALOG_NAME`, :data:`ANN_NAME`, ``NAME.npy``),
so a manifest can never point a writer at a file elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeGuard

from ..errors import LookalikeError
from ..sources import CONTENT_HASHES, LEGACY_CONTENT_HASH

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
VECTORS_NAME = "vectors.bin"
CATALOG_NAME = "catalog.sqlite"
ANN_NAME = "ann.faiss"
#: Largest manifest read (a real one is about 1 KB).
MANIFEST_MAX_BYTES = 1 << 20

METRICS = ("cosine", "hamming")
DTYPES = {"cosine": ("float16", "float32"), "hamming": ("uint8",)}
ANN_KINDS = ("auto", "exact", "hnsw", "ivfpq")
STATE_ROLE = "extractor state"
ANN_ROLE = "ann"
_STATE_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}\.npy")


class IndexStoreError(LookalikeError):
    """Base class for problems with an index directory."""


class NotAnIndex(IndexStoreError):
    pass


class ExtractorMismatch(IndexStoreError):
    pass


class SchemaTooNew(IndexStoreError):
    pass


class IndexDamaged(IndexStoreError):
    """The index's files are damaged or disagree with each other; the message says what."""


@dataclass
class Manifest:
    extractor: dict[str, Any]  # the extractor's spec
    dim: int
    dtype: str
    metric: str
    schema_version: int = SCHEMA_VERSION
    lookalike_version: str = ""
    vectors: str = VECTORS_NAME  # always this name (older versions let it vary)
    catalog: str = CATALOG_NAME  # likewise
    files: dict[str, str] = field(default_factory=dict)  # extra files, name -> role
    ann: str = "auto"  # approximate search: auto, exact, hnsw or ivfpq (see lookalike.ann)
    local: dict[str, Any] | None = None  # keypoints stored for verification (see lookalike.verify)
    #: the files' content hash (lookalike.sources.CONTENT_HASHES); absent in older indexes: BLAKE2b
    content_hash: str = LEGACY_CONTENT_HASH

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def is_state_file(name: str) -> bool:
    """``NAME.npy``: a plain file name, as :meth:`IndexStore.save_state` writes them."""
    return isinstance(name, str) and _STATE_FILE.fullmatch(name) is not None


def write_new(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Make the file ``path`` afresh (a link left there is removed, never followed), fill it
    through ``write(f)`` and fsync it; on any error it is removed and the error raised."""
    path = os.fspath(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        remove_quietly(path)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``write(f)`` so that readers see the old or the new one, never half.

    Written to ``path + ".tmp"`` by :func:`write_new`, then renamed over
    ``path`` (a link there is replaced, not followed). Nothing is left behind on an error.
    """
    tmp = os.fspath(path) + ".tmp"
    write_new(tmp, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_small_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``ValueError`` says why not.

    Opened without following a symbolic link and without blocking on a FIFO,
    so a manifest that is a link to ``/dev/zero`` or a pipe cannot hang a reader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("it is a symbolic link, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("it is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"it has {st.st_size} bytes, more than the {limit} expected at most")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ValueError(f"it has more than the {limit} bytes expected at most")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> None:
    """Write atomically: a reader sees the old or the new file, never half of one."""
    text = manifest.to_json().encode("utf-8")
    atomic_write(Path(directory) / MANIFEST_NAME, lambda f: f.write(text))


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """The manifest of an index directory, every field checked (:class:`IndexDamaged` says which)."""
    path = Path(directory) / MANIFEST_NAME
    if not os.path.lexists(path):
        raise NotAnIndex(f"{directory} is not a lookalike index (no {MANIFEST_NAME})")

    def damaged(why: str) -> IndexDamaged:
        return IndexDamaged(f"{path} is damaged: {why}")

    try:
        data = json.loads(read_small_file(path, MANIFEST_MAX_BYTES).decode("utf-8"))
    except ValueError as e:  # includes JSON and UTF-8 errors
        raise damaged(str(e)) from None
    except RecursionError:
        raise damaged("its JSON is nested too deeply") from None
    except OSError as e:
        raise NotAnIndex(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise damaged(f"it holds a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version")
    if not _is_int(version) or version < 1:
        raise damaged(f"schema_version must be a positive integer, not {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{directory} has index schema version {version}; this lookalike reads "
            f"up to {SCHEMA_VERSION}: upgrade lookalike"
        )
    missing = [k for k in ("extractor", "dim", "dtype", "metric") if k not in data]
    if missing:
        raise damaged(f"it lacks {', '.join(missing)}")
    unknown = sorted(k for k in data if k not in Manifest.__dataclass_fields__)
    if unknown:  # written by a newer lookalike: dropping them on the next write would lose them
        raise SchemaTooNew(
            f"{directory} was written by a newer lookalike (manifest.json has fields this one does not "
            f"know: {', '.join(unknown)}): upgrade lookalike"
        )
    manifest = Manifest(**data)
    why = manifest_problem(manifest)
    if why:
        raise damaged(why)
    return manifest


def manifest_problem(m: Manifest) -> str | None:
    """What is wrong with the fields of ``m`` (``None``: nothing)."""
    spec = m.extractor
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        return f"extractor must be an object with a \"name\", not {_short(spec)}"
    if m.metric not in METRICS:
        return f"metric must be one of {', '.join(METRICS)}, not {_short(m.metric)}"
    if not _is_int(m.dim) or m.dim <= 0:
        return f"dim must be a positive integer, not {_short(m.dim)}"
    if m.dtype not in DTYPES[m.metric]:
        return f"dtype of {m.metric} vectors must be {' or '.join(DTYPES[m.metric])}, not {_short(m.dtype)}"
    if m.metric == "hamming" and m.dim % 8:
        return f"dim of bit vectors must be a multiple of 8, not {m.dim}"
    if m.vectors != VECTORS_NAME:
        return f"vectors must be {VECTORS_NAME!r}, not {_short(m.vectors)}"
    if m.catalog != CATALOG_NAME:
        return f"catalog must be {CATALOG_NAME!r}, not {_short(m.catalog)}"
    if m.ann not in ANN_KINDS:
        return f"ann must be one of {', '.join(ANN_KINDS)}, not {_short(m.ann)}"
    if m.content_hash not in CONTENT_HASHES:
        return f"content_hash must be one of {', '.join(CONTENT_HASHES)}, not {_short(m.content_hash)}"
    if not isinstance(m.lookalike_version, str):
        return f"lookalike_version must be a string, not {_short(m.lookalike_version)}"
    if not isinstance(m.files, dict):
        return f"files must be an object, not {_short(m.files)}"
    for name, role in m.files.items():
        if not (name == ANN_NAME and role == ANN_ROLE or is_state_file(name) and role == STATE_ROLE):
            return f"files lists {_short(name)} ({_short(role)}), not a file an index holds"
    if m.local is not None:
        from ..verify import settings  # the keypoint settings' own check

        try:
            if not isinstance(m.local, dict):
                return f"local must be keypoint settings, not {_short(m.local)}"
            settings(m.local)
        except (ValueError, TypeError, KeyError) as e:
            return f"local: {e}"
    return None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def spec_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable list of keys whose values differ between two specs."""
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        if stored.get(key) != wanted.get(key):
            diffs.append(f"{key}: index has {stored.get(key)!r}, asked for {wanted.get(key)!r}")
    return diffs


def check_extractor(manifest: Manifest, wanted: dict[str, Any], directory: str) -> None:
    diffs = spec_differences(manifest.extractor, wanted)
    if diffs:
        raise ExtractorMismatch(
            f"index {directory} was built with a different extractor:\n  " + "\n  ".join(diffs)
        )
