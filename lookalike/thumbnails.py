"""Thumbnails: an image decoded at reduced size and fitted in a ``size x size`` box.

One helper for the three places that show small images: the HTTP thumbnail
endpoint (:func:`jpeg`, JPEG bytes), the HTML duplicates report
(:func:`data_uri`) and contact sheets (:func:`square`, a padded PIL image).
A source is a file path or the file's bytes (the server reads a file itself,
on a descriptor it has checked, and passes the bytes).
"""

from __future__ import annotations

import base64
import io
import os

from PIL import Image, ImageOps

from . import decode

#: Cell behind a thumbnail that does not fill its square, and the cell of an unreadable file.
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (200, 200, 200)

Source = str | os.PathLike | bytes


def decode_small(source: Source, size: int, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
                 raw: bool = False) -> Image.Image:
    """``source`` decoded to an RGB image no smaller than needed for a ``size`` px thumbnail
    (a JPEG at a reduced DCT scale, its shorter side still at least ``size``; see
    :func:`lookalike.decode.decode_bytes`; ``raw``: bytes of a camera RAW file). Raises
    :class:`lookalike.decode.DecodeError`."""
    if isinstance(source, bytes):
        decoded = decode.decode_bytes(source, min_side=size, max_pixels=max_pixels, raw=raw)
    else:
        decoded = decode.decode_file(source, min_side=size, max_pixels=max_pixels)
    return Image.fromarray(decoded.pixels)


def thumbnail(source: Source, size: int, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
              raw: bool = False) -> Image.Image:
    """``source`` shrunk (bicubic, never enlarged) to fit in ``size x size``, aspect ratio kept.
    Raises :class:`lookalike.decode.DecodeError`."""
    img = decode_small(source, size, max_pixels, raw)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    return img


def jpeg(source: Source, size: int, quality: int = 85, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
         raw: bool = False) -> bytes:
    """The :func:`thumbnail` of ``source`` as JPEG bytes (``raw``: bytes of a camera RAW file).
    Raises :class:`lookalike.decode.DecodeError`."""
    return _jpeg_bytes(thumbnail(source, size, max_pixels, raw), quality)


def data_uri(path: str | os.PathLike, size: int = 160, quality: int = 70) -> str | None:
    """The :func:`thumbnail` of the file at ``path`` as a ``data:image/jpeg;base64,...`` URI,
    or ``None`` when it cannot be read or decoded."""
    try:
        img = thumbnail(path, size)
    except (decode.DecodeError, OSError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(_jpeg_bytes(img, quality)).decode("ascii")


def square(path: str | os.PathLike, size: int) -> Image.Image:
    """A ``size x size`` RGB cell for a contact sheet: the image scaled (up or down) to fit,
    centred on :data:`BACKGROUND`; a :data:`PLACEHOLDER` square when it cannot be decoded."""
    try:
        img = decode_small(path, size)
    except decode.DecodeError:
        img = Image.new("RGB", (size, size), PLACEHOLDER)
    return ImageOps.pad(img, (size, size), color=BACKGROUND)


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
