"""Generate the bad-file corpus in ``tests/data/bad/``.

Run from the repository root with::

    python tests/data/bad/make_bad_files.py

Only numpy and Pillow are used; all content is synthetic (gradients and a
seeded RNG), so the bytes are the same on every run with the same Pillow and
codec versions. Existing files of the same names are overwritten.

Each file's name says what it is; :data:`EXPECTED` says what indexing must do
with it: ``"ok"`` (indexed) or the skip reason recorded in the catalog. The
reliability tests read ``EXPECTED`` from here, so the table and the files
cannot drift apart.

Files that cannot live in git are made by the tests at run time instead
(``tests/test_reliability.py``): an unreadable file (chmod 000), a file that
vanishes between listing and reading, a directory named ``folder.jpg``, a
symlink loop and a file name that is not valid UTF-8.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent
SEED = 4321

#: file name -> "ok" (must be indexed) or the SkipReason value it must get.
EXPECTED: dict[str, str] = {
    # valid, if odd: all of these must be indexed
    "png_named.jpg": "ok",  # a PNG with a .jpg name
    "jpeg_named.png": "ok",  # a JPEG with a .png name
    "one_by_one.png": "ok",  # 1x1
    "strip_1x100000.png": "ok",  # 1 wide, 100000 high
    "strip_100000x1.png": "ok",  # 100000 wide, 1 high
    "gray16.png": "ok",  # 16-bit greyscale
    "cmyk.jpg": "ok",  # CMYK JPEG
    "palette_transparent.png": "ok",  # palette with a transparent index
    "animated.gif": "ok",  # 3 frames; the first is used
    "exif_orientation_9.jpg": "ok",  # EXIF orientation 9 (invalid: ignored)
    "exif_orientation_65535.jpg": "ok",  # EXIF orientation 65535
    "exif_garbage.jpg": "ok",  # an APP1 "Exif" block of random bytes
    "exif_truncated_ifd.jpg": "ok",  # EXIF whose IFD points past its end
    # broken: each must be skipped with this reason
    "empty.jpg": "empty",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "truncated.webp": "truncated",
    "truncated.gif": "truncated",
    "text.jpg": "not_an_image",
    "document.jpg": "not_an_image",  # a minimal PDF
    "random.png": "not_an_image",
    "bomb.png": "too_large",  # 100000 x 100000 declared, 100-odd bytes
    "bomb.gif": "too_large",  # 65535 x 65535 declared
    "bomb.jpg": "too_large",  # 65500 x 65500 declared in the SOF header
    "bomb.webp": "too_large",  # 16383 x 16383 declared (VP8L header): the WebP maximum, 268 M pixels
    # bombs under the pixel limit: Pillow would zero-fill the missing rows and
    # allocate gigabytes; the data cannot fill the declared size, so they are
    # refused before decoding
    "bomb_1x140M.png": "truncated",  # 1 x 140 000 000 declared, 69 bytes
    "bomb_fill.jpg": "truncated",  # 10000 x 10000 declared on a 1.6 KB baseline JPEG
}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _pattern(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([255 * xx / max(width - 1, 1), 255 * yy / max(height - 1, 1),
                    np.full_like(xx, 96.0)], axis=-1)
    img += rng.normal(0, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose (CRC-correct) header declares ``width x height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def gif_bomb(width: int, height: int) -> bytes:
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame + b"\x3b"


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF0/SOF2 header edited to declare ``width x height``."""
    i = 2
    while i < len(jpeg) - 9:
        if jpeg[i] != 0xFF:
            raise ValueError("not at a JPEG marker")
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]
        i += 2 + length
    raise ValueError("no SOF marker")


def webp_lossless_with_size(webp: bytes, width: int, height: int) -> bytes:
    """A lossless (VP8L) WebP with its header edited to declare ``width x height``."""
    pos = webp.index(b"VP8L")
    start = pos + 8 + 1  # chunk header, then the 0x2f signature byte
    bits = int.from_bytes(webp[start : start + 4], "little")
    bits = (bits & ~0xFFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    return webp[:start] + bits.to_bytes(4, "little") + webp[start + 4 :]


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` right after SOI."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def exif_orientation(value: int) -> bytes:
    """A minimal big-endian TIFF/EXIF block with one Orientation (0x0112) entry."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, value, 0) + struct.pack(">I", 0)
    return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd


def build() -> dict[str, bytes]:
    rng = np.random.default_rng(SEED)
    base = _pattern(64, 48, rng)
    jpg = _encode(base, "JPEG", quality=90)
    png = _encode(base, "PNG")
    files: dict[str, bytes] = {}

    files["png_named.jpg"] = png
    files["jpeg_named.png"] = jpg
    files["one_by_one.png"] = _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    ramp = (np.arange(100_000) % 256).astype(np.uint8)
    files["strip_1x100000.png"] = _encode(Image.fromarray(ramp[:, None]), "PNG")
    files["strip_100000x1.png"] = _encode(Image.fromarray(ramp[None, :]), "PNG")
    yy, xx = np.mgrid[0:48, 0:64]
    files["gray16.png"] = _encode(Image.fromarray(((xx + yy) * 595).astype(np.uint16)), "PNG")
    files["cmyk.jpg"] = _encode(base.convert("CMYK"), "JPEG", quality=90)
    pal = Image.frombytes("P", (64, 48), ((xx // 16 + yy // 16) % 4).astype(np.uint8).tobytes())
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 160, 0, 0, 0, 255])
    files["palette_transparent.png"] = _encode(pal, "PNG", transparency=0)
    frames = [Image.new("RGB", (32, 32), c).convert("P") for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    files["animated.gif"] = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    files["exif_orientation_9.jpg"] = jpeg_with_app1(jpg, exif_orientation(9))
    files["exif_orientation_65535.jpg"] = jpeg_with_app1(jpg, exif_orientation(65535))
    files["exif_garbage.jpg"] = jpeg_with_app1(jpg, b"Exif\x00\x00" + rng.integers(0, 256, 200, np.uint8).tobytes())
    # an IFD claiming 500 entries in a 30-byte block
    files["exif_truncated_ifd.jpg"] = jpeg_with_app1(
        jpg, b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x01\xf4" + b"\x01\x12\x00\x03" * 4
    )

    files["empty.jpg"] = b""
    big = _pattern(96, 96, rng)
    for name, fmt, kw in (("jpg", "JPEG", {"quality": 90}), ("png", "PNG", {}),
                          ("webp", "WEBP", {"quality": 80}), ("gif", "GIF", {})):
        data = _encode(big, fmt, **kw)
        files[f"truncated.{name}"] = data[: len(data) // 2]
    files["text.jpg"] = b"This is a plain text file with a .jpg name.\n"
    files["document.jpg"] = (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
    files["random.png"] = rng.integers(0, 256, 700, np.uint8).tobytes()
    files["bomb.png"] = png_bomb(100_000, 100_000)
    files["bomb.gif"] = gif_bomb(65535, 65535)
    files["bomb.jpg"] = jpeg_with_size(jpg, 65500, 65500)
    files["bomb.webp"] = webp_lossless_with_size(_encode(Image.new("RGB", (8, 8), (9, 9, 9)), "WEBP", lossless=True),
                                                 16383, 16383)
    files["bomb_1x140M.png"] = png_bomb(1, 140_000_000)
    files["bomb_fill.jpg"] = jpeg_with_size(jpg, 10000, 10000)
    assert set(files) == set(EXPECTED), set(files) ^ set(EXPECTED)
    return files


def main() -> None:
    for name, data in build().items():
        (OUT / name).write_bytes(data)


if __name__ == "__main__":
    main()
