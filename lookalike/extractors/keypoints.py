"""Keypoint descriptors made into fixed-size vectors (OpenCV)."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from .base import Extractor, l2_normalise


def _kaze():
    # OpenCV 5 moved KAZE to the contrib module; 4.x has it in the main one.
    xf = getattr(cv2, "xfeatures2d", None)
    if xf is not None and hasattr(xf, "KAZE_create"):
        return xf.KAZE_create()
    if hasattr(cv2, "KAZE_create"):
        return cv2.KAZE_create()
    raise RuntimeError(
        "this OpenCV build has no KAZE; install opencv-contrib-python-headless "
        "(and not opencv-python-headless alongside it)"
    )


def _limit_side(gray: np.ndarray, max_side: int) -> np.ndarray:
    h, w = gray.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return gray


class KazeConcatExtractor(Extractor):
    """The OpenCV-for-newbies tutorial's baseline (A. Nikishaev, 2018).

    The ``n_keypoints`` strongest KAZE keypoints (by detector response), their
    64-d descriptors concatenated in that order and zero-padded to
    ``n_keypoints * 64`` values; compared by cosine. Kept as a documented
    baseline: the vector depends on keypoint order, so it is fragile.
    Unlike the tutorial, images are first scaled so the longest side is at most
    ``max_side`` pixels (KAZE's cost grows with the pixel count).
    """

    name = "kaze-concat"
    description = "tutorial baseline: 32 strongest KAZE descriptors concatenated, 2048-d"
    speed = "slow"
    dtype = "float32"
    metric = "cosine"

    def __init__(self, n_keypoints: int = 32, max_side: int = 512):
        self.n_keypoints = int(n_keypoints)
        self.max_side = int(max_side)
        self.dim = self.n_keypoints * 64

    def settings(self) -> dict[str, Any]:
        return {"n_keypoints": self.n_keypoints, "max_side": self.max_side}

    def prepare(self, image: np.ndarray) -> np.ndarray:
        gray = _limit_side(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), self.max_side)
        out = np.zeros(self.dim, np.float32)
        if min(gray.shape) < 8:
            return out
        kaze = _kaze()
        keypoints = kaze.detect(gray)
        keypoints = sorted(keypoints, key=lambda k: -k.response)[: self.n_keypoints]
        if not keypoints:
            return out
        _, desc = kaze.compute(gray, keypoints)
        if desc is None:
            return out
        flat = desc.reshape(-1)[: self.dim]
        out[: flat.size] = flat
        return out

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalise(np.stack(prepared))
