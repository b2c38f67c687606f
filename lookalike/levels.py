"""Duplicate levels, and the pixel checks that tell them apart.

- ``exact``: the same content (equal content hashes in the catalog).
- ``near``: the same picture re-encoded, resized, recompressed, with other
  metadata or a mild colour change: a copy pair (see :mod:`lookalike.grouping`)
  whose two images also agree pixel by pixel once both are shrunk to the same
  small size (:func:`near_pair`). A crop, mirror, rotation, caption, border or
  strong colour change moves the pixels and fails; so does the next shot of a
  burst, where something in the picture moved.
- ``edited``: every copy pair, including crops, mirrors, rotations, overlays,
  borders and framing.

Low-information images (blank, flat, near-uniform: :func:`low_information`)
are grouped only at ``exact``: a copy descriptor cannot tell one flat image
from another.

The constants were set on image pairs made from Debian packages that no
benchmark uses, with random edits of both kinds
(``tools/calibrate_near.py``; the figures are in docs/duplicates.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = ("exact", "near", "edited")
#: The level when the user names none: the safe one for actions.
DEFAULT_LEVEL = "near"


def check_level(level: str) -> str:
    """``level`` if it is one of :data:`LEVELS`, else :class:`UsageError` naming them."""
    if level in LEVELS:
        return level
    from .errors import UsageError

    raise UsageError(f"unknown duplicate level {level!r}; choose one of {', '.join(LEVELS)}")

#: At ``near``, a copy score above this (the query is more like the other image than
#: like its nearest pictures of the background set) nominates a pair, and the pixel
#: checks decide: they are far stricter than the copy threshold, which is set for
#: edited copies and misses some heavily recompressed ones.
NEAR_COPY_BAR = 0.0

#: Side of the square thumbnails compared (pixels).
THUMB = 64
#: Thumbnails are compared at the size where each of their pixels covers 4 x 4 pixels
#: of the smaller image or more (JPEG blocks and resampling average out), down to this.
MIN_COMPARED = 16
#: Cells per side for the worst-cell test (cells of THUMB/CELLS pixels).
CELLS = 8
#: Aspect ratios may differ by this much (log ratio): rounding when resizing.
ASPECT_TOLERANCE = 0.03
#: Structure difference (see :func:`differences`; in standard deviations) at most ...
MAX_STRUCTURE = 0.2
#: ... and in the worst cell at most (a caption, a logo, a moved subject, a new corner).
MAX_CELL = 0.5
#: Mean absolute change of the two colour-difference channels (0-255) at most.
MAX_CHROMA = 8.0
#: The mean brightness may move this much (0-255) ...
MAX_BRIGHTNESS_SHIFT = 16.0
#: ... and its standard deviation by this log ratio.
MAX_CONTRAST_CHANGE = 0.15
#: An image whose grey thumbnail has a standard deviation under this (0-255) is flat.
FLAT_STD = 6.0
#: ... and one with this share of its thumbnail within ``UNIFORM_BAND`` of the median is near-uniform.
UNIFORM_SHARE = 0.97
UNIFORM_BAND = 8

_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


@dataclass(frozen=True)
class Thumb:
    """What the pixel checks need of one image: its aspect ratio, its shorter side, and a
    small square RGB thumbnail (compared as brightness and two colour differences, YCbCr)."""

    aspect: float  # width / height
    rgb: np.ndarray  # (THUMB, THUMB, 3) uint8: 12 kB
    side: int  # the image's shorter side (pixels)

    @property
    def ycc(self) -> np.ndarray:
        """``(THUMB, THUMB, 3)`` float32 brightness and colour differences, 0-255 (Cb, Cr centred on 0)."""
        return self.rgb.astype(np.float32) @ _YCC.T


def thumb(pixels: np.ndarray, side: int | None = None) -> Thumb:
    """The :class:`Thumb` of an RGB ``(H, W, 3) uint8`` image; ``side``: its shorter side at
    full size, where ``pixels`` were decoded smaller."""
    import cv2

    h, w = pixels.shape[:2]
    small = cv2.resize(np.ascontiguousarray(pixels), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return Thumb(w / max(1, h), small, int(side or min(h, w)))


def _halved(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, *x.shape[2:]).mean(axis=(1, 3))


def low_information(t: Thumb) -> bool:
    """Blank, flat or near-uniform: too little in it to tell it from another such image."""
    grey = t.ycc[..., 0]
    if float(grey.std()) < FLAT_STD:
        return True
    share = float((np.abs(grey - np.median(grey)) <= UNIFORM_BAND).mean())
    return share >= UNIFORM_SHARE


def differences(a: Thumb, b: Thumb) -> tuple[float, float, float, float, float, float, float]:
    """How two thumbnails differ: ``(aspect, structure, worst cell, chroma, brightness shift,
    contrast change, turned)``.

    *aspect*: the log ratio of their aspect ratios. *structure*: the mean absolute
    difference of their brightness once each is brought to mean 0 and standard
    deviation 1 (so a mild brightness or contrast change costs nothing), and
    *worst cell* the same in the worst of ``CELLS x CELLS`` cells. *chroma*: the
    mean absolute difference of the colour channels. *brightness shift*: the change
    of mean brightness (0-255); *contrast change*: the absolute log ratio of the
    brightness's standard deviations. *turned*: 1.0 when one of them mirrored or
    turned half round matches the other better than as it is. The thumbnails are
    compared at 64, 32 or 16 pixels a side: the largest at which each compared pixel
    covers 4 x 4 pixels of the smaller image.
    """
    x, y = a.ycc, b.ycc
    side = min(a.side, b.side)
    while len(x) > MIN_COMPARED and side < 4 * len(x):  # each compared pixel: 4 x 4 of the smaller image or more
        x, y = _halved(x), _halved(y)
    ya, yb = x[..., 0], y[..., 0]
    ma, mb = float(ya.mean()), float(yb.mean())
    sa, sb = float(ya.std()) + 1.0, float(yb.std()) + 1.0
    za, zb = (ya - ma) / sa, (yb - mb) / sb
    diff = np.abs(za - zb)
    step = len(diff) // CELLS
    cells = diff.reshape(CELLS, step, CELLS, step).mean(axis=(1, 3))
    chroma = float(np.abs(x[..., 1:] - y[..., 1:]).mean())
    return (abs(float(np.log(a.aspect / b.aspect))), float(diff.mean()), float(np.max(cells)), chroma,
            abs(ma - mb), abs(float(np.log(sa / sb))), _best_turned(za, zb, float(diff.mean())))


def _best_turned(za: np.ndarray, zb: np.ndarray, as_is: float) -> float:
    """1.0 when ``zb`` mirrored (either way) or turned half round matches ``za`` better than
    as it is (a mirrored copy of a nearly symmetric picture), else 0.0."""
    for turned in (zb[:, ::-1], zb[::-1, :], zb[::-1, ::-1]):
        if float(np.abs(za - turned).mean()) < as_is:
            return 1.0
    return 0.0


def near_pair(a: Thumb, b: Thumb) -> bool:
    """Whether two images, already a copy pair, are the same picture without a geometric
    edit or a visible change: same shape, and pixels that agree everywhere once shrunk."""
    return near_pair_differences(differences(a, b))


def near_pair_differences(d: tuple[float, ...]) -> bool:
    """:func:`near_pair` on the output of :func:`differences`."""
    aspect, structure, worst, chroma, shift, contrast, turned = d
    return (aspect <= ASPECT_TOLERANCE and structure <= MAX_STRUCTURE and worst <= MAX_CELL
            and chroma <= MAX_CHROMA and shift <= MAX_BRIGHTNESS_SHIFT and contrast <= MAX_CONTRAST_CHANGE
            and not turned)
