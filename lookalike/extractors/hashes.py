"""Perceptual hashes (imagehash) as packed bit vectors compared by Hamming distance."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from .base import Extractor


class PHashExtractor(Extractor):
    """64-bit DCT perceptual hash (``imagehash.phash``), Hamming distance."""

    name = "phash"
    description = "perceptual hash (DCT of a 32x32 grey thumbnail), 64 bits, Hamming"
    speed = "fast"
    dtype = "uint8"
    metric = "hamming"

    def __init__(self, hash_size: int = 8, highfreq_factor: int = 4):
        if hash_size < 2:
            raise ValueError("hash_size must be at least 2")
        self.hash_size = int(hash_size)
        self.highfreq_factor = int(highfreq_factor)
        self.dim = self.hash_size * self.hash_size
        if self.dim % 8:
            raise ValueError("hash_size * hash_size must be a multiple of 8")

    def settings(self) -> dict[str, Any]:
        return {"hash_size": self.hash_size, "highfreq_factor": self.highfreq_factor}

    @property
    def min_side(self) -> int:
        return self.hash_size * self.highfreq_factor

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The whole hash: ``(H, W, 3) uint8`` -> ``(dim // 8,) uint8`` packed bits."""
        import imagehash

        h = imagehash.phash(
            Image.fromarray(image), hash_size=self.hash_size, highfreq_factor=self.highfreq_factor
        )
        return np.packbits(h.hash.reshape(-1))

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros((0, self.row_width), np.uint8)
        return np.stack(prepared).astype(np.uint8)
