"""``cnn``: EfficientNet-Lite0 (ImageNet) embeddings on onnxruntime.

The shipped ONNX graph maps a normalised ``(N, 3, H, W)`` float32 batch to the
last convolutional feature map ``(N, 1280, H/32, W/32)``; pooling happens here,
so other pooling schemes can reuse the same model file. The graph was exported
once by ``tools/export_cnn.py``; torch is never imported at run time.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import NotTrained, UsageError
from .base import Extractor, l2_normalise
from .pca import apply_whitening, fit_whitening

MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0.onnx"


@functools.lru_cache(maxsize=None)
def model_digest(path: str) -> str:
    """First 16 hex digits of the model file's SHA-256 (recorded in the spec)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def cpu_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU inference session for the model file at ``path``.

    ``threads``: intra-op threads (default: CPU count). Shared by every
    extractor that runs an ONNX graph.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads would otherwise spin and starve the decoding
    # workers and NumPy's BLAS threads on small machines.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def crop_to_cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The central part of ``image`` that scaling to cover ``height x width`` and
    cropping the centre keeps, with a wide margin (4x along the long axis).

    Images up to 4:1 come back whole. An extreme strip is cut first, or
    scaling it whole would build a huge intermediate (1 x 100000 to
    224 x 22 400 000 pixels: 15 GB) just to throw nearly all of it away.
    """
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    ch = min(h, 4 * math.ceil(height / scale) + 2)
    cw = min(w, 4 * math.ceil(width / scale) + 2)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]


def cover_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover ``height x width``, then cut the centre of that size.

    ``image``: ``(H, W, 3) uint8``. Returns ``(height, width, 3) uint8``.
    Downscaling uses area averaging (no aliasing), upscaling bilinear.
    """
    image = crop_to_cover(image, height, width)
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interp)
    top, left = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Scale so the shorter side is ``size``, then cut the central ``size x size``."""
    return cover_crop(image, size, size)


def _starts(cells: int, window: int) -> list[int]:
    """Start positions of windows covering ``cells`` with about half a window of overlap."""
    steps = max(1, round((cells - window) / (window / 2)))
    return sorted({round(i * (cells - window) / steps) for i in range(steps + 1)})


class CnnExtractor(Extractor):
    """EfficientNet-Lite0 global-average-pooled features, 1280-d, L2-normalised, cosine."""

    name = "cnn"
    description = "EfficientNet-Lite0 (ImageNet) global average pool, 1280-d, onnxruntime"
    speed = "medium"
    dtype = "float32"
    metric = "cosine"

    def __init__(
        self,
        input_size: int = 224,
        threads: int | None = None,
        batch_size: int = 32,
        pca: int = 0,
        train_images: int = 2000,
    ):
        if input_size < 32 or input_size % 32:
            raise UsageError("input_size must be a multiple of 32, at least 32")
        if pca and not 0 < pca < 1280:
            raise UsageError("pca must be between 1 and 1279 (0 = off)")
        self.input_size = int(input_size)
        self.threads = threads  # runtime only: does not change the vectors
        self.batch_size = int(batch_size)
        self.pca = int(pca)
        self.train_images = int(train_images)
        self.dim = self.pca or 1280
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None
        self._session = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **runtime: Any) -> "CnnExtractor":
        spec = dict(spec)
        digest = spec.pop("model_sha256", None)
        spec.pop("pooling", None), spec.pop("normalise", None), spec.pop("resize", None)
        ext = cls(**spec, **runtime)
        if digest is not None and digest != model_digest(str(MODEL_PATH)):
            raise UsageError(
                f"the cnn model file differs from the one this spec was made with "
                f"(sha256 {model_digest(str(MODEL_PATH))} vs {digest})"
            )
        return ext

    def settings(self) -> dict[str, Any]:
        out = {
            "input_size": self.input_size,
            "resize": "shorter-side-centre-crop",
            "normalise": "(x-127)/128",
            "pooling": "avg",
            "model_sha256": model_digest(str(MODEL_PATH)),
        }
        if self.pca:
            out |= {"pca": self.pca, "train_images": self.train_images}
        return out

    # -- optional PCA-whitening, learned from the first images indexed --------------
    @property
    def trainable(self) -> bool:  # type: ignore[override]
        return self.pca > 0

    def is_trained(self) -> bool:
        return not self.pca or self.pca_components is not None

    def fit(self, prepared: Sequence[np.ndarray]) -> None:
        self.pca_mean, self.pca_components = fit_whitening(self._pooled(prepared), self.pca)

    def state(self) -> dict[str, np.ndarray]:
        if self.pca_mean is None or self.pca_components is None:
            return {}
        return {"pca_mean": self.pca_mean, "pca_components": self.pca_components}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if self.pca and "pca_components" in arrays:
            self.pca_mean = arrays["pca_mean"].astype(np.float32)
            self.pca_components = arrays["pca_components"].astype(np.float32)

    @property
    def min_side(self) -> int:
        return self.input_size

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return resize_centre_crop(image, self.input_size)

    def _get_session(self):
        if self._session is None:
            self._session = cpu_session(MODEL_PATH, self.threads)
        return self._session

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        """``(n, H, W, 3) uint8`` -> ``(n, 1280, H/32, W/32) float32`` feature maps."""
        x = (batch.astype(np.float32) - 127.0) / 128.0
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        session = self._get_session()
        return session.run(["feature_map"], {"input": x})[0]

    def _pooled(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(prepared), 1280), dtype=np.float32)
        for start in range(0, len(prepared), self.batch_size):
            chunk = np.stack(prepared[start : start + self.batch_size])
            out[start : start + len(chunk)] = self.feature_maps(chunk).mean(axis=(2, 3))
        return l2_normalise(out)

    def embed_regions(self, image: np.ndarray, min_side: int) -> np.ndarray:
        """Vectors of square regions of an RGB image, pooled from one feature map.

        The whole image (not cropped) is run once at twice the input size on its
        shorter side; windows of 40% and 60% of that side, overlapping by half,
        are average-pooled like the global vector (R-MAC-style regions). A
        picture pasted into a larger one then meets its original at a similar
        scale. Windows under ``min_side`` pixels of the image are left out.
        """
        h, w = image.shape[:2]
        scale = min(2 * self.input_size / min(h, w), 4 * self.input_size / max(h, w))
        size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        fmap = self.feature_maps(cv2.resize(image, size, interpolation=interpolation)[None])[0]
        cells_h, cells_w = fmap.shape[1:]
        pixels_per_cell = min(h, w) / min(cells_h, cells_w)
        pooled = []
        for fraction in (0.4, 0.6):
            k = max(1, round(min(cells_h, cells_w) * fraction))
            if k * pixels_per_cell < min_side:
                continue
            for y in _starts(cells_h, k):
                for x in _starts(cells_w, k):
                    pooled.append(fmap[:, y : y + k, x : x + k].mean(axis=(1, 2)))
        if not pooled:
            return np.zeros((0, self.dim), np.float32)
        return self._whitened(l2_normalise(np.array(pooled, np.float32)))

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros((0, self.dim), np.float32)
        if not self.is_trained():
            raise NotTrained("cnn with pca: no PCA learned yet; index some images first")
        return self._whitened(self._pooled(prepared))

    def _whitened(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, 1280)`` pooled vectors -> ``(n, pca)`` whitened ones when ``pca`` is on."""
        if not self.pca:
            return vectors
        if self.pca_mean is None or self.pca_components is None:
            raise NotTrained("cnn with pca: no PCA learned yet; index some images first")
        return apply_whitening(vectors, self.pca_mean, self.pca_components)
