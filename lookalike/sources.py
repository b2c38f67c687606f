"""Sources stage: find image files under a folder and identify them.

A file is identified by its absolute path (as walked, symlinks not resolved),
size, modification time in nanoseconds and, when needed, a content hash.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Iterator

#: File name extensions (lower case) that are treated as images.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib",
        ".tif", ".tiff", ".heic", ".heif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm",
        ".tga", ".jp2", ".ico", ".jxl",
    }
)
#: Camera RAW files (decoded through rawpy, the ``raw`` extra).
RAW_EXTENSIONS = frozenset(
    {
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
        ".pef", ".srw", ".rwl", ".3fr", ".erf", ".kdc", ".mrw", ".x3f", ".iiq", ".mos",
    }
)
IMAGE_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS


def is_raw_name(name: str) -> bool:
    """A camera RAW file name (by its extension)."""
    return os.path.splitext(name)[1].lower() in RAW_EXTENSIONS


#: A folder holding a file of this name is not walked (e.g. where duplicates were moved to).
SKIP_MARKER = ".lookalike-skip"
#: A folder holding all of these is a lookalike index (its trash holds originals): not walked.
INDEX_FILES = frozenset({"manifest.json", "catalog.sqlite"})


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute; may contain surrogate escapes for non-UTF-8 names
    size: int  # bytes
    mtime_ns: int


def display_path(path: str) -> str:
    """A printable, UTF-8-safe form of ``path`` (invalid bytes as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_image_name(name: str) -> bool:
    """A name with an image extension, or with none at all (the decoder then sniffs the
    content: a file that is no image is skipped, with the reason, not silently ignored)."""
    ext = os.path.splitext(name)[1]
    return ext.lower() in IMAGE_EXTENSIONS or not ext


#: Content hashes an index may use, by the name its manifest gives: BLAKE3 (fast, and
#: cryptographic, so that no crafted file can pass for another one) for new indexes;
#: BLAKE2b for indexes made before the manifest named one, which keep it (their files are
#: neither re-read nor re-embedded).
CONTENT_HASHES = ("blake3-128", "blake2b-128")
DEFAULT_CONTENT_HASH = "blake3-128"
LEGACY_CONTENT_HASH = "blake2b-128"


def content_hash(data: bytes, algorithm: str = DEFAULT_CONTENT_HASH) -> str:
    """Hex 128-bit digest of the file's bytes by ``algorithm`` (one of :data:`CONTENT_HASHES`:
    the index's own, ``store.manifest.content_hash``)."""
    if algorithm == "blake3-128":
        from blake3 import blake3

        return blake3(data).hexdigest(16)
    if algorithm == "blake2b-128":
        return hashlib.blake2b(data, digest_size=16).hexdigest()
    raise ValueError(f"unknown content hash {algorithm!r}; known: {', '.join(CONTENT_HASHES)}")


def walk(
    root: str | os.PathLike,
    *,
    include_hidden: bool = False,
    follow_symlinks: bool = True,
) -> Iterator[FileEntry]:
    """Yield every image file under ``root`` (recursively), sorted per folder.

    ``root`` may also be a single file. Symlinked folders are followed once:
    a folder already visited (same device and inode) is not entered again,
    so symlink loops end. Hidden files and folders (name starting with ``.``)
    are skipped unless ``include_hidden``. Folders that cannot be listed are
    passed over silently; files that cannot be stat'ed are yielded with size
    and mtime 0 so that the decode stage records why they failed.

    Two kinds of folder below ``root`` are never entered, hidden or not: a
    lookalike index (a folder holding both ``manifest.json`` and
    ``catalog.sqlite``; its ``trash`` keeps the originals that ``duplicates
    --symlink`` replaced) and a folder holding a file named ``.lookalike-skip``
    (:data:`SKIP_MARKER`; lookalike writes it into folders it moves duplicates
    to, and anyone may create one to keep a folder out of an index). ``root``
    itself is walked whatever it holds: it was named on purpose.
    """
    root = os.path.abspath(os.fspath(root))
    try:
        st = os.stat(root)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield FileEntry(root, st.st_size, st.st_mtime_ns)
        return
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            fst = os.stat(folder)
        except OSError:
            continue
        key = (fst.st_dev, fst.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        if folder != root and _not_walked({e.name for e in entries}):
            continue
        subfolders = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
            except OSError:
                continue
            if is_dir:
                subfolders.append(entry.path)
                continue
            if not is_image_name(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=True):
                    continue
                est = entry.stat(follow_symlinks=True)
                yield FileEntry(entry.path, est.st_size, est.st_mtime_ns)
            except OSError:
                # broken symlink or a file that vanished: let decode say why
                if entry.is_symlink():
                    continue
                yield FileEntry(entry.path, 0, 0)
        stack.extend(reversed(subfolders))


def _not_walked(names: set[str]) -> bool:
    """A folder listing these names is kept out of every walk (see :func:`walk`)."""
    return SKIP_MARKER in names or INDEX_FILES <= names
