"""Perceptual hashes (imagehash) as packed bit vectors compared by Hamming distance.

Every hash here is an :class:`ImageHashExtractor`: a subclass only says how to
turn a PIL image into imagehash's boolean array (:meth:`ImageHashExtractor._hash`)
and how many bits that gives; packing, zero padding to whole bytes and batching
are shared.

=========== ======================================== ============== ===========
name        what                                     settings       bits (dim)
=========== ======================================== ============== ===========
phash       DCT of a grey thumbnail                  hash_size=8,   64
                                                     highfreq_factor=4
ahash       grey thumbnail > its mean                hash_size=8    64
dhash       horizontal gradient signs of a thumbnail hash_size=8    64
whash       Haar wavelet LL band > its median        hash_size=8,   64
                                                     image_scale=64
colorhash   HSV colour fractions, binbits per bin    binbits=3      42 -> 48
=========== ======================================== ============== ===========

Rows are ``dim // 8`` bytes (``np.packbits`` order: the hash's first bit is the
high bit of the first byte, so a row's hex equals ``str(imagehash_value)`` when
no padding is needed).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import UsageError

from .base import Extractor


class ImageHashExtractor(Extractor):
    """Shared machinery for imagehash-based extractors.

    Subclasses set ``self.n_bits`` (bits imagehash produces) in ``__init__``
    and implement :meth:`_hash`. ``dim`` is ``n_bits`` rounded up to a multiple
    of 8; the extra bits are always zero, so they never add Hamming distance.
    """

    dtype = "uint8"
    metric = "hamming"
    speed = "fast"
    n_bits: int

    def _set_bits(self, n_bits: int) -> None:
        self.n_bits = int(n_bits)
        self.dim = -(-self.n_bits // 8) * 8

    def _hash(self, image: Image.Image) -> np.ndarray:
        """imagehash's boolean array for a PIL RGB image (any shape, ``n_bits`` values)."""
        raise NotImplementedError

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The whole hash: ``(H, W, 3) uint8`` -> ``(dim // 8,) uint8`` packed bits."""
        bits = np.zeros(self.dim, bool)
        bits[: self.n_bits] = np.asarray(self._hash(Image.fromarray(image))).reshape(-1)
        return np.packbits(bits)

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros((0, self.row_width), np.uint8)
        return np.stack(prepared).astype(np.uint8)


def _check_hash_size(hash_size: int) -> int:
    hash_size = int(hash_size)
    if hash_size < 2:
        raise UsageError("hash_size must be at least 2")
    if (hash_size * hash_size) % 8:
        raise UsageError("hash_size * hash_size must be a multiple of 8")
    return hash_size


class PHashExtractor(ImageHashExtractor):
    """64-bit DCT perceptual hash (``imagehash.phash``), Hamming distance.

    Settings: ``hash_size`` (8: ``hash_size**2`` = 64 bits), ``highfreq_factor``
    (4: the DCT runs on a ``hash_size * highfreq_factor`` = 32 px square grey
    thumbnail). Row: ``(hash_size**2 // 8,) uint8``.
    """

    name = "phash"
    description = "perceptual hash (DCT of a 32x32 grey thumbnail), 64 bits, Hamming"

    def __init__(self, hash_size: int = 8, highfreq_factor: int = 4):
        self.hash_size = _check_hash_size(hash_size)
        self.highfreq_factor = int(highfreq_factor)
        self._set_bits(self.hash_size * self.hash_size)

    def settings(self) -> dict[str, Any]:
        return {"hash_size": self.hash_size, "highfreq_factor": self.highfreq_factor}

    @property
    def min_side(self) -> int:
        return self.hash_size * self.highfreq_factor

    def _hash(self, image: Image.Image) -> np.ndarray:
        import imagehash

        return imagehash.phash(image, hash_size=self.hash_size, highfreq_factor=self.highfreq_factor).hash


class _SquareHash(ImageHashExtractor):
    """A hash of ``hash_size x hash_size`` bits with no other setting."""

    def __init__(self, hash_size: int = 8):
        self.hash_size = _check_hash_size(hash_size)
        self._set_bits(self.hash_size * self.hash_size)

    def settings(self) -> dict[str, Any]:
        return {"hash_size": self.hash_size}


class AHashExtractor(_SquareHash):
    """Average hash (``imagehash.average_hash``), Hamming distance.

    The image as a ``hash_size x hash_size`` grey thumbnail (Lanczos); a bit is
    set where a pixel is brighter than the thumbnail's mean.
    Settings: ``hash_size`` (8 -> 64 bits). Row: ``(hash_size**2 // 8,) uint8``.
    """

    name = "ahash"
    description = "average hash (8x8 grey thumbnail > its mean), 64 bits, Hamming"

    @property
    def min_side(self) -> int:
        return 4 * self.hash_size

    def _hash(self, image: Image.Image) -> np.ndarray:
        import imagehash

        return imagehash.average_hash(image, hash_size=self.hash_size).hash


class DHashExtractor(_SquareHash):
    """Difference hash (``imagehash.dhash``), Hamming distance.

    The image as a ``(hash_size + 1) x hash_size`` grey thumbnail; a bit is set
    where a pixel is brighter than its left neighbour.
    Settings: ``hash_size`` (8 -> 64 bits). Row: ``(hash_size**2 // 8,) uint8``.
    """

    name = "dhash"
    description = "difference hash (signs of horizontal steps in a 9x8 thumbnail), 64 bits, Hamming"

    @property
    def min_side(self) -> int:
        return 4 * (self.hash_size + 1)

    def _hash(self, image: Image.Image) -> np.ndarray:
        import imagehash

        return imagehash.dhash(image, hash_size=self.hash_size).hash


class WHashExtractor(ImageHashExtractor):
    """Wavelet hash (``imagehash.whash``, Haar), Hamming distance.

    The image as an ``image_scale`` square grey thumbnail, its coarsest Haar
    LL coefficient removed, then the LL band at ``hash_size x hash_size``
    thresholded at its median.
    Settings: ``hash_size`` (8 -> 64 bits; a power of 2), ``image_scale``
    (64; a power of 2, at least ``hash_size``). Unlike imagehash's default,
    which picks the scale from the image's size, the scale is fixed so that
    the hash does not jump when an image is resized across a power of 2 (or
    decoded at a reduced JPEG scale). Row: ``(hash_size**2 // 8,) uint8``.
    """

    name = "whash"
    description = "wavelet hash (Haar LL band of a 64x64 grey thumbnail > median), 64 bits, Hamming"

    def __init__(self, hash_size: int = 8, image_scale: int = 64):
        self.hash_size = _check_hash_size(hash_size)
        self.image_scale = int(image_scale)
        for what, v in (("hash_size", self.hash_size), ("image_scale", self.image_scale)):
            if v & (v - 1):
                raise UsageError(f"{what} must be a power of 2")
        if self.image_scale < self.hash_size:
            raise UsageError("image_scale must be at least hash_size")
        self._set_bits(self.hash_size * self.hash_size)

    def settings(self) -> dict[str, Any]:
        return {"hash_size": self.hash_size, "image_scale": self.image_scale}

    @property
    def min_side(self) -> int:
        return self.image_scale

    def _hash(self, image: Image.Image) -> np.ndarray:
        import imagehash

        return imagehash.whash(image, hash_size=self.hash_size, image_scale=self.image_scale).hash


class ColorHashExtractor(ImageHashExtractor):
    """Colour hash (``imagehash.colorhash``), Hamming distance.

    Fractions of the image that are black, grey, and in 6 hue bins of faint and
    of bright colour (14 bins), each quantised to ``binbits`` bits.
    Settings: ``binbits`` (3). imagehash gives ``14 * binbits`` bits (42); they
    are padded with zero bits to the next multiple of 8, so ``dim`` is 48 and a
    row is 6 bytes (the last 6 bits always zero).
    Note that the bits are a binary number per bin, so Hamming distance is only
    a rough measure of how far two fractions are apart.
    """

    name = "colorhash"
    description = "colour hash (black/grey/hue fractions, 14 bins x 3 bits), 42 bits padded to 48, Hamming"

    def __init__(self, binbits: int = 3):
        self.binbits = int(binbits)
        if self.binbits < 1:
            raise UsageError("binbits must be at least 1")
        self._set_bits(14 * self.binbits)

    def settings(self) -> dict[str, Any]:
        return {"binbits": self.binbits}

    @property
    def min_side(self) -> int:
        return 64

    def _hash(self, image: Image.Image) -> np.ndarray:
        import imagehash

        return imagehash.colorhash(image, binbits=self.binbits).hash
