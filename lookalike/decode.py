"""Decode stage: file bytes -> RGB pixels, or a typed reason why not.

Every way an image file can be bad ends in a :class:`DecodeError` whose
``reason`` is a :class:`SkipReason`; nothing else escapes from :func:`decode_file`
or :func:`decode_bytes`. Decoded images are ``(H, W, 3) uint8`` arrays in RGB
order with EXIF orientation applied and any transparency composited on white.
"""

from __future__ import annotations

import enum
import io
import math
import os
import re
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from .errors import LookalikeError
from .sources import is_raw_name

#: Default pixel limit (width x height, as declared in the file header).
#: Larger images are refused as likely decompression bombs; raise it with
#: ``max_pixels=`` (Python) or ``--max-pixels`` (CLI).
DEFAULT_MAX_PIXELS = 150_000_000

#: Files larger than this many bytes are not read at all.
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


class SkipReason(str, enum.Enum):
    """Why a file was not indexed. Stored in the catalog by value."""

    EMPTY = "empty"  # zero bytes
    NOT_AN_IMAGE = "not_an_image"  # no decoder recognises the bytes
    TRUNCATED = "truncated"  # the file ends before the image data does
    TOO_LARGE = "too_large"  # pixel count or file size over the limit (bomb guard)
    UNREADABLE = "unreadable"  # permission denied or another OS read error
    VANISHED = "vanished"  # the file disappeared between listing and reading
    BAD_PATH = "bad_path"  # file name is not valid UTF-8
    DECODE_ERROR = "decode_error"  # the decoder failed for another reason


class DecodeError(LookalikeError):
    """A file could not be turned into pixels; ``reason`` says why."""

    def __init__(self, reason: SkipReason, detail: str = ""):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    """Pixels plus the image's full size (before any draft reduction)."""

    pixels: np.ndarray  # (H, W, 3) uint8, RGB
    width: int  # of the full-size image, after EXIF orientation
    height: int


_plugins_registered = False
_have_jxl = False
#: What JPEG XL files start with: a bare codestream, or the ISO box container.
JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a")
JXL_EXTRA = "JPEG XL needs the 'jxl' extra: pip install 'lookalike[jxl]' (from a checkout: pip install -e '.[jxl]')"


def _register_plugins() -> None:
    """Teach Pillow HEIC/HEIF (and AVIF where Pillow lacks it), and JPEG XL with the
    ``jxl`` extra; done once, lazily."""
    global _plugins_registered, _have_jxl
    if _plugins_registered:
        return
    _plugins_registered = True
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format on import)
        _have_jxl = True
    except ImportError:
        pass
    try:
        import pillow_heif
    except ImportError:  # optional at run time: HEIC files then count as not_an_image
        return
    pillow_heif.register_heif_opener()
    from PIL import features

    if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()


def check_path(path: str | os.PathLike) -> str:
    """Return ``path`` as ``str``; refuse names that are not valid UTF-8."""
    path = os.fspath(path)
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(SkipReason.BAD_PATH, "file name is not valid UTF-8") from None
    return os.fsdecode(raw)


def read_file(path: str | os.PathLike, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """Read a whole file, mapping OS failures to :class:`DecodeError`."""
    path = check_path(path)
    try:
        # O_NONBLOCK: opening a FIFO named like an image must not wait for a writer forever
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                what = "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                raise DecodeError(SkipReason.UNREADABLE, what)
            size = st.st_size
            if size > max_file_bytes:
                raise DecodeError(
                    SkipReason.TOO_LARGE, f"{size} bytes, limit is {max_file_bytes}"
                )
            data = f.read()
    except FileNotFoundError:
        raise DecodeError(SkipReason.VANISHED, "file no longer exists") from None
    except PermissionError as e:
        raise DecodeError(SkipReason.UNREADABLE, e.strerror or "permission denied") from None
    except IsADirectoryError:
        raise DecodeError(SkipReason.UNREADABLE, "is a directory") from None
    except OSError as e:
        raise DecodeError(SkipReason.UNREADABLE, e.strerror or str(e)) from None
    if not data:
        raise DecodeError(SkipReason.EMPTY, "file is empty")
    return data


def decode_file(
    path: str | os.PathLike,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Read and decode one image file. See :func:`decode_bytes`; a camera RAW file is
    told by its name (:data:`lookalike.sources.RAW_EXTENSIONS`)."""
    return decode_bytes(read_file(path), min_side=min_side, max_pixels=max_pixels, raw=is_raw_name(os.fspath(path)))


def decode_bytes(
    data: bytes,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    raw: bool | None = False,
) -> Decoded:
    """Decode image bytes to an RGB ``(H, W, 3) uint8`` array.

    ``min_side``: the shortest side (pixels) the caller needs. JPEGs are then
    decoded at a reduced DCT scale (1/2, 1/4 or 1/8) that still keeps the
    shorter side at or above it, which is much faster for large photos.
    ``max_pixels``: declared width x height above which the file is refused.
    ``raw``: the bytes are a camera RAW file's (by its name): decoded by LibRaw
    (the ``raw`` extra), not by Pillow, which would show only the small preview
    some of them start with; ``None``: bytes with no name (an upload without a
    file name, stdin), tried as RAW where Pillow does not know them.
    """
    if not data:
        raise DecodeError(SkipReason.EMPTY, "file is empty")
    _register_plugins()
    _allow_up_to(max_pixels)
    with _decoder_errors(data, max_pixels):
        if raw:
            return _decode_raw(data, min_side, max_pixels)
        if raw is False:
            return _decode(data, min_side, max_pixels)
        try:
            return _decode(data, min_side, max_pixels)
        except Image.UnidentifiedImageError:
            # bytes with no name that Pillow does not know may be a camera RAW file: ask
            # LibRaw, where the extra is installed
            if _rawpy() is None:
                raise
            return _decode_raw(data, min_side, max_pixels, pillow_next=False)


RAW_EXTRA = "camera RAW files need the 'raw' extra: pip install 'lookalike[raw]' (from a checkout: pip install -e '.[raw]')"


def _rawpy():
    """The rawpy module, or ``None`` without the ``raw`` extra."""
    try:
        import rawpy
    except ImportError:
        return None
    return rawpy


def _decode_raw(data: bytes, min_side: int | None, max_pixels: int, pillow_next: bool = True) -> Decoded:
    """A camera RAW file demosaiced by LibRaw (rawpy): the camera's white balance, sRGB,
    8 bits, turned as the camera was held. When the caller needs no more than half the
    size, LibRaw's half-size mode (each 2x2 block of the sensor one pixel) is used: no
    demosaicing, several times faster. A file LibRaw does not know (a JPEG named .dng)
    goes to Pillow (``pillow_next``; else it is no image)."""
    rawpy = _rawpy()
    if rawpy is None:
        raise DecodeError(SkipReason.NOT_AN_IMAGE, RAW_EXTRA)
    try:
        with _native_stderr_quiet():
            raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawError as e:
        if not pillow_next:  # unnamed bytes that neither Pillow nor LibRaw can read
            raise Image.UnidentifiedImageError("not a recognised image format") from None
        if isinstance(e, rawpy.LibRawFileUnsupportedError):
            return _decode(data, min_side, max_pixels)
        raise _libraw_error(rawpy, e) from None
    with raw:
        sizes = raw.sizes
        width, height = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
        if width <= 0 or height <= 0:
            raise DecodeError(SkipReason.DECODE_ERROR, f"invalid size {width}x{height}")
        if width * height > max_pixels:
            raise DecodeError(SkipReason.TOO_LARGE, f"{width}x{height} = {width * height} pixels, limit is {max_pixels}")
        half = bool(min_side) and min(width, height) >= 2 * (min_side or 0)
        try:
            with _native_stderr_quiet():
                pixels = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=half)
        except rawpy.LibRawError as e:
            raise _libraw_error(rawpy, e) from None
    return Decoded(np.ascontiguousarray(pixels), width, height)


def _libraw_error(rawpy, e: Exception) -> DecodeError:
    if isinstance(e, rawpy.LibRawIOError):  # LibRaw's word for data that ends early
        return DecodeError(SkipReason.TRUNCATED, "LibRaw: the file ends before its image data does")
    return DecodeError(SkipReason.DECODE_ERROR, f"LibRaw: {type(e).__name__}: {e}")


#: Set in indexing worker processes: LibRaw prints its own complaints about a bad file
#: ("unknown file: Unexpected end of file") straight to file descriptor 2, beside the one
#: line lookalike gives; a worker has nothing else to say there, so they are dropped.
QUIET_NATIVE_STDERR = False


@contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    if not QUIET_NATIVE_STDERR:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def pixels_of(
    image: Image.Image | np.ndarray, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """An in-memory query (PIL image or uint8 array) -> ``(H, W, 3) uint8`` RGB pixels.

    Arrays may be ``(H, W, 3)`` RGB, ``(H, W)`` or ``(H, W, 1)`` grey, or
    ``(H, W, 4)`` RGBA (composited on white). The same guarantee as
    :func:`decode_bytes`: anything that cannot be used ends in a
    :class:`DecodeError` (a PIL image opened from broken bytes only fails
    when its pixels are loaded, which happens here).
    """
    if isinstance(image, np.ndarray):
        shape = image.shape
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and shape[2] in (1, 3, 4))):
            raise DecodeError(
                SkipReason.DECODE_ERROR,
                f"expected an (H, W, 3) uint8 RGB array (or (H, W) grey, (H, W, 4) RGBA), "
                f"got shape {shape} dtype {image.dtype}",
            )
        height, width = shape[:2]
    elif isinstance(image, Image.Image):
        width, height = image.size
    else:
        raise DecodeError(SkipReason.DECODE_ERROR, f"not an image: {type(image).__name__}")
    if width <= 0 or height <= 0:
        raise DecodeError(SkipReason.DECODE_ERROR, f"invalid size {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            SkipReason.TOO_LARGE, f"{width}x{height} = {width * height} pixels, limit is {max_pixels}"
        )
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or image.shape[2] == 1:
            return np.ascontiguousarray(np.repeat(image.reshape(height, width, 1), 3, axis=2))
        if image.shape[2] == 4:
            image = Image.fromarray(np.ascontiguousarray(image))  # RGBA
        else:
            return np.ascontiguousarray(image)
    _allow_up_to(max_pixels)
    with _decoder_errors(b"", max_pixels):
        return to_rgb(image)


@contextmanager
def _decoder_errors(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[None]:
    """Map whatever a decoder raises on hostile input to a :class:`DecodeError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        # Pillow's own guard fired first (it sits at 2x its limit); say it in our terms
        size = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"{int(size.group(1))} pixels" if size else "the declared size"
        raise DecodeError(SkipReason.TOO_LARGE, f"{declared}, limit is {max_pixels}") from None
    except Image.UnidentifiedImageError:
        if data.startswith(JXL_SIGNATURES) and not _have_jxl:
            raise DecodeError(SkipReason.NOT_AN_IMAGE, JXL_EXTRA) from None
        raise DecodeError(SkipReason.NOT_AN_IMAGE, "not a recognised image format") from None
    except MemoryError:
        raise DecodeError(SkipReason.TOO_LARGE, "out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        low = msg.lower()
        if "truncated" in low or "end of file" in low or isinstance(e, EOFError) or _ends_early(data):
            raise DecodeError(SkipReason.TRUNCATED, msg) from None
        raise DecodeError(SkipReason.DECODE_ERROR, msg) from None
    except Exception as e:  # decoders raise many types on hostile input
        raise DecodeError(SkipReason.DECODE_ERROR, f"{type(e).__name__}: {e}") from None


def _ends_early(data: bytes) -> bool:
    """True if ``data`` is a JPEG, PNG, GIF or WebP that stops before its end marker.

    Pillow says "image file is truncated" only when the cut falls inside the
    pixel data; a file cut at a segment boundary (JPEG), or any cut WebP,
    fails with another message. The container tells these apart.
    """
    if data.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in data[-64:]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-64:]
    if data.startswith((b"GIF87a", b"GIF89a")):
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    return False


def _allow_up_to(max_pixels: int) -> None:
    # Pillow's own guard raises above 2 x MAX_IMAGE_PIXELS. We apply our own
    # limit first, so only ever widen Pillow's when the caller asks for more.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and max_pixels > current:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _decode(data: bytes, min_side: int | None, max_pixels: int) -> Decoded:
    img: Image.Image = Image.open(io.BytesIO(data))
    width, height = img.size
    if width <= 0 or height <= 0:
        raise DecodeError(SkipReason.DECODE_ERROR, f"invalid size {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            SkipReason.TOO_LARGE,
            f"{width}x{height} = {width * height} pixels, limit is {max_pixels}",
        )
    _check_data_can_fill(img.format, data, width, height)
    request = None
    if min_side and img.format == "JPEG" and min(width, height) > 2 * min_side:
        scale = min_side / min(width, height)
        request = (math.ceil(width * scale), math.ceil(height * scale))
    if QUIET_NATIVE_STDERR and img.format == "JPEG" and img.mode in ("RGB", "L") and not _ends_early(data):
        pixels = _jpeg_by_opencv(data, width, height, request)
        if pixels is not None:
            orientation = _orientation(img)  # a JPEG's EXIF is read with its header
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            return Decoded(_oriented(pixels, orientation), width, height)
    if request is not None:
        img.draft("RGB", request)
    img.load()  # first frame only for animations
    orientation = _orientation(img)
    if orientation:
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block must not lose the image
            pass
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    return Decoded(to_rgb(img), width, height)


#: EXIF orientation -> the turn that shows the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _jpeg_by_opencv(data: bytes, width: int, height: int, request: tuple[int, int] | None) -> np.ndarray | None:
    """A colour or grey JPEG decoded by OpenCV (the same libjpeg-turbo as Pillow's, the same
    pixels, about a sixth faster from memory), at the DCT scale Pillow's ``draft`` would
    choose for ``request``; ``None`` where OpenCV cannot read it (Pillow then says why).
    Only where native stderr is quiet (the indexing workers): libjpeg prints its warnings
    about damaged data there itself."""
    import cv2

    factor = 1
    if request is not None:
        fits = min(width // request[0], height // request[1])
        factor = next(f for f in (8, 4, 2, 1) if fits >= f)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        with _native_stderr_quiet():
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        return None
    if bgr is None or bgr.ndim != 3 or bgr.shape[:2] != (-(-height // factor), -(-width // factor)):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    if not orientation:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(_UPRIGHT[orientation])).copy()


#: Deflate never expands more than 1032:1 (258 bytes from 2 bits).
_DEFLATE_MAX_RATIO = 1032


def _check_data_can_fill(fmt: str | None, data: bytes, width: int, height: int) -> None:
    """Refuse a PNG or Huffman JPEG whose data is too short for its declared size.

    Pillow fills the missing rows of such files (a PNG whose zlib stream ends
    early, a JPEG that reaches its end marker early) instead of failing, so
    a 69-byte PNG declaring 1 x 140 million pixels would allocate gigabytes.
    The bounds are hard limits of the formats, so no complete file is refused:
    a PNG needs at least one bit per pixel plus a filter byte per row, deflated
    at most 1032:1; a Huffman-coded JPEG needs at least one bit per 8x8 block
    of its full-resolution component, and a component has at least
    ``width * height / 256`` blocks (sampling factors are at most 4).
    """
    if fmt == "PNG":
        raw = height * (1 + (width + 7) // 8)
        compressed = _png_data_bytes(data)
        if raw > _DEFLATE_MAX_RATIO * (compressed + 64):
            raise DecodeError(
                SkipReason.TRUNCATED,
                f"declares {width}x{height} pixels but holds only {compressed} bytes of image data",
            )
    elif fmt == "JPEG" and _jpeg_is_huffman(data) and len(data) * 8 * 256 * 2 < width * height:
        raise DecodeError(
            SkipReason.TRUNCATED,
            f"declares {width}x{height} pixels but holds only {len(data)} bytes",
        )


def _png_data_bytes(data: bytes) -> int:
    """Total length of the IDAT (and APNG fdAT) chunks."""
    total, i = 0, 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind in (b"IDAT", b"fdAT"):
            total += min(length, len(data) - i - 8)
        elif kind == b"IEND":
            break
        i += 12 + length
    return total


def _jpeg_is_huffman(data: bytes) -> bool:
    """True if the first frame header is a Huffman-coded SOF0, SOF1 or SOF2."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker in (0xC0, 0xC1, 0xC2)
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        value = int(value)
    except Exception:
        return 0
    return value if 2 <= value <= 8 else 0


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> ``(H, W, 3) uint8`` RGB; alpha composited on white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.dtype != np.uint16 and arr.size and (arr.min() < 0 or arr.max() > 65535):
            arr = _stretch(arr.astype(np.float64))
        else:
            arr = (arr.astype(np.uint32) // 257).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    if mode == "F":
        arr = _stretch(np.asarray(img, dtype=np.float64))
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info
    ) or (mode in ("RGB", "L") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        img = background
    elif mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def _stretch(arr: np.ndarray) -> np.ndarray:
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    out = (np.nan_to_num(arr, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)
