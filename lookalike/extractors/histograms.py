"""Handcrafted global descriptors (OpenCV): colour histogram, edge statistics, HOG.

All three do their whole work in :meth:`~lookalike.extractors.base.Extractor.prepare`
(cheap, runs in the decoding workers) and produce L2-normalised ``float32``
vectors compared by cosine similarity.

========= ============================================================ ===========
name      what                                                         dim
========= ============================================================ ===========
color     joint HSV (or Lab) histogram, sqrt-mapped (Hellinger)        8*4*4 = 128
edges     4x4 grid x (8 orientation bins + Canny edge density)         4*4*9 = 144
hog       OpenCV HOG on a 128x128 grey image, cell 16, block 32        7*7*36 = 1764
========= ============================================================ ===========

``edges`` and ``hog`` look at the channel-symmetric grey image ``(R+G+B)/3``,
so permuting the colour channels (RGB -> BGR) gives exactly the same vector.
``color`` is exactly invariant to a horizontal flip (see :class:`ColorHistogramExtractor`).
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import UsageError

from .base import Extractor, l2_normalise


def symmetric_grey(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(H, W) float32`` mean of R, G and B.

    The channel sum is exact integer arithmetic, so any permutation of the
    channels gives bit-identical output (OpenCV's RGB2GRAY weights do not).
    """
    return image.sum(axis=2, dtype=np.uint16).astype(np.float32) / np.float32(3.0)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to ``width x height``: area averaging when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def _to_u8(grey: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _stack(prepared: Sequence[np.ndarray], dim: int) -> np.ndarray:
    if len(prepared) == 0:
        return np.zeros((0, dim), np.float32)
    return l2_normalise(np.stack(prepared))


def _mirror_canonical(image: np.ndarray) -> np.ndarray:
    """``image`` or its horizontal mirror, whichever comes first byte-wise.

    The image and its mirror image both map to the same array (the first row
    that is not its own mirror decides; a fully symmetric image is its own
    mirror), so anything computed from the result is exactly flip-invariant.
    Usually decided by the first row, so it costs next to nothing.
    """
    for row in image:
        a, b = row.tobytes(), row[::-1].tobytes()
        if a != b:
            return image[:, ::-1] if b < a else image
    return image


class ColorHistogramExtractor(Extractor):
    """Joint colour histogram, compared with the Hellinger / Bhattacharyya kernel.

    Steps: the image is scaled (INTER_AREA) so its longest side is at most
    ``max_side`` px; converted to ``space`` with OpenCV's 8-bit conversions
    (HSV: H in 0..179, S and V in 0..255; Lab: L, a, b in 0..255); binned into a
    joint histogram of ``bins[0] x bins[1] x bins[2]`` equal-width bins
    (``cv2.calcHist``); normalised to sum 1; mapped by ``map`` (``"sqrt"``:
    element-wise square root, so the cosine of two vectors is the
    Bhattacharyya coefficient of the histograms, i.e. the Hellinger kernel;
    ``"none"``: the raw histogram); L2-normalised.

    Settings: ``space`` ``"hsv"`` (default) or ``"lab"``; ``bins`` (default
    ``[8, 4, 4]`` for HSV, ``[4, 8, 8]`` for Lab, where lightness needs fewer
    bins than the two colour axes); ``map`` ``"sqrt"`` (default) or ``"none"``;
    ``max_side`` (256). Vector: ``prod(bins)`` float32 (128 by default).

    A histogram ignores pixel positions, but resizing does not commute exactly
    with mirroring (OpenCV's INTER_AREA is off by one grey level here and there),
    so the image is first put in a canonical mirror orientation: a
    horizontally flipped image gives exactly the same vector.
    """

    name = "color"
    description = "joint HSV colour histogram 8x4x4, sqrt-mapped (Hellinger), 128-d, cosine"
    speed = "fast"
    dtype = "float32"
    metric = "cosine"

    SPACES = {"hsv": (cv2.COLOR_RGB2HSV, (180, 256, 256)), "lab": (cv2.COLOR_RGB2LAB, (256, 256, 256))}
    DEFAULT_BINS = {"hsv": [8, 4, 4], "lab": [4, 8, 8]}
    MAPS = ("sqrt", "none")

    def __init__(self, bins: Sequence[int] | None = None, space: str = "hsv", map: str = "sqrt", max_side: int = 256):
        space = str(space).lower()
        if space not in self.SPACES:
            raise UsageError(f"space must be one of {sorted(self.SPACES)}, not {space!r}")
        if map not in self.MAPS:
            raise UsageError(f"map must be one of {list(self.MAPS)}, not {map!r}")
        bins = list(self.DEFAULT_BINS[space] if bins is None else bins)
        if len(bins) != 3 or any(int(b) < 1 or int(b) != b for b in bins):
            raise UsageError("bins must be three positive integers, one per channel")
        if int(max_side) < 1:
            raise UsageError("max_side must be positive")
        self.space = space
        self.bins = [int(b) for b in bins]
        self.map = map
        self.max_side = int(max_side)
        self.dim = int(np.prod(self.bins))

    def settings(self) -> dict[str, Any]:
        return {"space": self.space, "bins": list(self.bins), "map": self.map, "max_side": self.max_side}

    @property
    def min_side(self) -> int:
        # the longest side must reach max_side; the shortest one reaching it is enough
        return self.max_side

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(dim,) float32`` mapped histogram (not yet L2-normalised)."""
        image = _mirror_canonical(image)
        h, w = image.shape[:2]
        if max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            image = _resize(image, max(1, round(w * s)), max(1, round(h * s)))
        code, top = self.SPACES[self.space]
        conv = cv2.cvtColor(np.ascontiguousarray(image), code)
        ranges = [0, top[0], 0, top[1], 0, top[2]]
        hist = cv2.calcHist([conv], [0, 1, 2], None, self.bins, ranges).reshape(-1).astype(np.float64)
        hist /= max(hist.sum(), 1.0)
        if self.map == "sqrt":
            hist = np.sqrt(hist)
        return hist.astype(np.float32)

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return _stack(prepared, self.dim)


class EdgeHistogramExtractor(Extractor):
    """Spatial grid of gradient-orientation histograms plus Canny edge density.

    Steps: channel-symmetric grey ``(R+G+B)/3``, resized to ``size x size``
    (aspect ratio not kept); 3x3 Sobel gradients; each pixel votes its gradient
    magnitude into ``orientations`` unsigned orientation bins over [0, 180)
    degrees (linear interpolation between the two nearest bin centres, wrapping
    around) of its cell in a ``grid x grid`` layout; Canny edges (on the 8-bit
    grey image, thresholds ``0.66 * median`` and ``1.33 * median`` of the grey
    values, clipped to 0..255) give each cell its edge density (fraction of
    edge pixels, 0..1).

    Normalisation (chosen: global, per block, not per cell): the orientation
    block (``grid*grid*orientations`` values) is scaled to unit L2 norm over
    the whole image, which removes overall contrast but keeps which cells have
    strong and which weak gradients (per-cell L1 would blow the noise in flat
    cells up to the weight of real edges). The density block
    (``grid*grid`` values) is scaled to unit L2 norm too, and the two blocks
    are weighted equally; the final vector is L2-normalised. An image with no
    gradients or no edges gives zeros for that block.

    Settings: ``grid`` (4), ``orientations`` (8), ``size`` (256).
    Vector: ``grid*grid*(orientations + 1)`` float32 (144 by default), laid out
    as all orientation histograms (cell-major, row by row) then all densities.
    """

    name = "edges"
    description = "4x4 grid of Sobel orientation histograms (8 bins) + Canny edge density, 144-d, cosine"
    speed = "fast"
    dtype = "float32"
    metric = "cosine"

    def __init__(self, grid: int = 4, orientations: int = 8, size: int = 256):
        self.grid = int(grid)
        self.orientations = int(orientations)
        self.size = int(size)
        if self.grid < 1 or self.orientations < 1:
            raise UsageError("grid and orientations must be positive")
        if self.size < 8 or self.size % self.grid:
            raise UsageError("size must be at least 8 and a multiple of grid")
        self.dim = self.grid * self.grid * (self.orientations + 1)

    def settings(self) -> dict[str, Any]:
        return {"grid": self.grid, "orientations": self.orientations, "size": self.size}

    @property
    def min_side(self) -> int:
        return self.size

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(dim,) float32`` (blocks normalised, whole not yet)."""
        n, g, nb = self.size, self.grid, self.orientations
        grey = _resize(symmetric_grey(image), n, n)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        mag, ang = cv2.cartToPolar(gx, gy)  # angle in [0, 2*pi), about 0.3 degrees accurate
        # unsigned orientation in bin units; bin k is centred on (k + 0.5) * 180/nb degrees
        ang = ang * np.float32(nb / np.pi) - np.float32(0.5)
        lo = np.floor(ang)
        frac = ang - lo
        lo = lo.astype(np.int64) % nb
        hi = (lo + 1) % nb
        cell = n // g
        cell_id = (np.arange(n) // cell)[:, None] * g + (np.arange(n) // cell)[None, :]
        flat = cell_id * nb
        orient = np.bincount((flat + lo).ravel(), (mag * (1 - frac)).ravel(), minlength=g * g * nb)
        orient += np.bincount((flat + hi).ravel(), (mag * frac).ravel(), minlength=g * g * nb)

        u8 = _to_u8(grey)
        med = float(np.median(u8))
        edges = cv2.Canny(u8, int(max(0, 0.66 * med)), int(min(255, 1.33 * med))) > 0
        density = np.bincount(cell_id.ravel(), edges.ravel().astype(np.float64), minlength=g * g) / (cell * cell)

        def unit(v: np.ndarray) -> np.ndarray:
            norm = np.linalg.norm(v)
            return v / norm if norm > 1e-12 else np.zeros_like(v)

        return np.concatenate([unit(orient), unit(density)]).astype(np.float32)

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return _stack(prepared, self.dim)


class HogExtractor(Extractor):
    """Histogram of oriented gradients of the whole image (``cv2.HOGDescriptor``).

    Steps: channel-symmetric grey ``(R+G+B)/3`` as 8-bit, resized to
    ``size x size`` (aspect ratio not kept); one HOG window covering the whole
    image: ``cell`` px cells, ``block`` px blocks of ``(block/cell)**2`` cells
    moved by ``stride`` px, ``bins`` unsigned orientation bins, OpenCV's
    defaults otherwise (gamma correction on, Gaussian block window, L2-Hys
    block normalisation, threshold 0.2); then L2-normalised.

    Settings: ``size`` (128), ``cell`` (16), ``block`` (32), ``stride`` (16),
    ``bins`` (9). Vector: ``blocks_per_side**2 * (block/cell)**2 * bins``
    float32 with ``blocks_per_side = (size - block) / stride + 1``:
    ``7 * 7 * 4 * 9 = 1764`` by default.
    """

    name = "hog"
    description = "OpenCV HOG of a 128x128 grey image (cell 16, block 32, stride 16, 9 bins), 1764-d, cosine"
    speed = "fast"
    dtype = "float32"
    metric = "cosine"

    def __init__(self, size: int = 128, cell: int = 16, block: int = 32, stride: int = 16, bins: int = 9):
        self.size, self.cell, self.block, self.stride, self.bins = (int(v) for v in (size, cell, block, stride, bins))
        if min(self.size, self.cell, self.block, self.stride, self.bins) < 1:
            raise UsageError("HOG settings must be positive")
        if self.block % self.cell or self.stride % self.cell:
            raise UsageError("block and stride must be multiples of cell")
        if self.block > self.size or (self.size - self.block) % self.stride:
            raise UsageError("(size - block) must be a non-negative multiple of stride")
        per_side = (self.size - self.block) // self.stride + 1
        self.dim = per_side * per_side * (self.block // self.cell) ** 2 * self.bins

    def settings(self) -> dict[str, Any]:
        return {"size": self.size, "cell": self.cell, "block": self.block, "stride": self.stride, "bins": self.bins}

    @property
    def min_side(self) -> int:
        return self.size

    def _descriptor(self) -> "cv2.HOGDescriptor":
        hog = getattr(self, "_hog", None)
        if hog is None:
            s, b, st, c = self.size, self.block, self.stride, self.cell
            hog = cv2.HOGDescriptor((s, s), (b, b), (st, st), (c, c), self.bins)
            self._hog = hog
        return hog

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_hog", None)  # OpenCV objects do not pickle; rebuilt on first use
        return state

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(dim,) float32`` raw HOG (not yet L2-normalised)."""
        grey = _to_u8(_resize(symmetric_grey(image), self.size, self.size))
        return np.asarray(self._descriptor().compute(grey)).reshape(-1).astype(np.float32)

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return _stack(prepared, self.dim)
