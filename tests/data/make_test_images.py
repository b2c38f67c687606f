"""Generate the tiny odd and broken test images in ``tests/data/odd/``.

Run from the repository root with::

    python tests/data/make_test_images.py

Only numpy and Pillow are used. All content is synthetic (gradients, simple
shapes and a seeded RNG) so the output is the same on every run with the same
Pillow / codec versions. Existing files of the same names are overwritten;
``odd/README.md`` is left alone.

Deliberately NOT generated here (tests create them on the fly):
decompression-bomb images and unreadable / permission-denied files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "odd"
SEED = 1234


def _rgb_pattern(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Colour gradient with a filled disc, a bar and a little noise (uint8 HxWx3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255.0 * xx / max(width - 1, 1)
    g = 255.0 * yy / max(height - 1, 1)
    b = np.full_like(r, 96.0)
    img = np.stack([r, g, b], axis=-1)
    # a white disc in the upper-left area
    cy, cx, rad = height * 0.35, width * 0.3, min(width, height) * 0.22
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2] = (255, 255, 255)
    # a dark vertical bar on the right
    img[int(height * 0.2) : int(height * 0.8), int(width * 0.7) : int(width * 0.8)] = (20, 20, 20)
    img += rng.normal(0.0, 6.0, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(name: str, data: bytes) -> None:
    (OUT / name).write_bytes(data)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    # --- ordinary, valid images -------------------------------------------
    base = Image.fromarray(_rgb_pattern(64, 48, rng))  # 64 wide, 48 high
    _write("ok_rgb.jpg", _encode(base, "JPEG", quality=90))
    _write("ok_rgb.png", _encode(base, "PNG"))
    _write("ok_rgb.webp", _encode(base, "WEBP", quality=90))

    # 1x1 RGB
    _write("one_pixel.png", _encode(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG"))

    # 1 px wide, 300 px high: vertical colour ramp
    ramp = np.linspace(0, 255, 300).round().astype(np.uint8)
    tall = np.stack([ramp, 255 - ramp, np.full_like(ramp, 128)], axis=-1)[:, None, :]
    _write("tall_thin.png", _encode(Image.fromarray(tall), "PNG"))

    # 16-bit greyscale: diagonal ramp covering exactly 0..65535 (64x48)
    yy, xx = np.mgrid[0:48, 0:64]
    g16 = ((xx + yy) / (63 + 47) * 65535).round().astype(np.uint16)
    _write("gray16.png", _encode(Image.fromarray(g16), "PNG"))

    # CMYK JPEG
    _write("cmyk.jpg", _encode(base.convert("CMYK"), "JPEG", quality=90))

    # Palette image; index 0 (the 4-px outer frame) is declared transparent
    pal = np.ones((48, 64), dtype=np.uint8)
    pal[:, 32:] = 2
    pal[16:32, 24:40] = 3
    pal[:4, :] = 0
    pal[-4:, :] = 0
    pal[:, :4] = 0
    pal[:, -4:] = 0
    p_img = Image.frombytes("P", (64, 48), pal.tobytes())
    # index 0 black (transparent), 1 red, 2 green, 3 blue
    p_img.putpalette([0, 0, 0, 255, 0, 0, 0, 160, 0, 0, 0, 255])
    _write("palette_transparent.png", _encode(p_img, "PNG", transparency=0))

    # RGBA: colour pattern with alpha ramping 0 (left) -> 255 (right)
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    rgba = np.dstack([np.asarray(base), alpha])
    _write("rgba.png", _encode(Image.fromarray(rgba), "PNG"))

    # LA: grey version of the pattern with alpha ramping 0 (top) -> 255 (bottom)
    grey = np.asarray(base.convert("L"))
    alpha_v = np.tile(np.linspace(0, 255, 48).round().astype(np.uint8)[:, None], (1, 64))
    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha_v)])
    _write("la.png", _encode(la, "PNG"))

    # Bilevel (mode "1"): black disc on white, 64x48
    disc = ((xx - 32) ** 2 + (yy - 24) ** 2) > 16**2  # True = white
    bilevel = Image.fromarray((disc * 255).astype(np.uint8)).convert("1", dither=Image.Dither.NONE)
    _write("bilevel.png", _encode(bilevel, "PNG"))

    # EXIF orientation 6 ("rotate 90 degrees clockwise to display").
    # Stored pixels: 64 wide x 32 high; left half (x < 32) red, right half
    # (x >= 32) blue, plus an 8x8 green marker in the stored top-left corner.
    # Correctly displayed (e.g. after PIL.ImageOps.exif_transpose) the image
    # is 32 wide x 64 high: RED on the TOP half, BLUE on the BOTTOM half, and
    # the green marker in the TOP-RIGHT corner. Without applying the
    # orientation a reader sees 64x32 with red on the left.
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    stored[:8, :8] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    _write(
        "exif_rotated.jpg",
        _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()),
    )

    # Animated GIF, 3 frames of 32x32: solid red, then blue/white halves,
    # then a green square on black. The first frame is the solid red one.
    f1 = Image.new("RGB", (32, 32), (255, 0, 0))
    f2 = Image.new("RGB", (32, 32), (255, 255, 255))
    f2.paste((0, 0, 255), (0, 0, 16, 32))
    f3 = Image.new("RGB", (32, 32), (0, 0, 0))
    f3.paste((0, 255, 0), (8, 8, 24, 24))
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) for f in (f1, f2, f3)]
    _write(
        "animated.gif",
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
    )

    # --- broken files -------------------------------------------------------
    big = Image.fromarray(_rgb_pattern(64, 64, rng))
    jpg = _encode(big, "JPEG", quality=90)
    _write("truncated.jpg", jpg[: len(jpg) // 2])
    png = _encode(big, "PNG")
    _write("truncated.png", png[: len(png) // 2])

    _write("empty.jpg", b"")
    _write("text.jpg", b"This is a plain text file, not a JPEG image.\n")
    _write("fake.png", rng.integers(0, 256, size=512, dtype=np.uint8).tobytes())


if __name__ == "__main__":
    main()
