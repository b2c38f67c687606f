"""``cnn``: EfficientNet-Lite0 (ImageNet) embeddings on onnxruntime.

The shipped ONNX graph maps a normalised ``(N, 3, H, W)`` float32 batch to the
last convolutional feature map ``(N, 1280, H/32, W/32)``; pooling happens here,
so other pooling schemes can reuse the same model file. The graph was exported
once by ``tools/export_cnn.py``; torch is never imported at run time.

Settings for copy detection (edited copies: crops, blur, noise, recompression,
colour changes, pictures pasted into others), all off by default:

- ``pooling``: ``"avg"`` (default) or ``"gem"``, generalised-mean pooling with
  p = 3, which weights the strongest activations (the object) over the background;
- ``multiscale``: also pool at about sqrt 2 times ``input_size`` and sum the two;
- ``whiten``: ``"copy"`` applies a learned whitening shipped in ``models/``
  for ``pooling: "gem"`` (``cnn_copy_whitening_gem[_ms].npy``, made by ``tools/train_cnn_whitening.py``
  from pairs of images and randomly edited copies of them, images in no
  benchmark); ``whiten_dims`` keeps its leading axes (default: all shipped).

``{"name": "cnn", "pooling": "gem", "whiten": "copy"}`` detects copies better than
the default at the same speed; adding ``"multiscale": true`` is better still, at
about a third of the indexing speed (figures in ``tools/train_cnn_whitening.py``).
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
#: Pooling of the feature map: ``avg`` (the default) or ``gem`` (generalised mean, p = 3).
POOLINGS = ("avg", "gem")
GEM_P = 3.0
#: ``whiten``: ``none``, or ``copy``: a learned whitening shipped in ``models/``, made
#: by ``tools/train_cnn_whitening.py`` from (image, edited copy) pairs of images in no
#: benchmark; it sharpens copy detection. One file per ``(pooling, multiscale)``.
WHITENINGS = ("none", "copy")
MODELS_DIR = MODEL_PATH.parent


def whitening_path(pooling: str, multiscale: bool) -> Path:
    """The shipped ``copy`` whitening for a pooling (row 0: mean; rows 1..: projection)."""
    return MODELS_DIR / f"cnn_copy_whitening_{pooling}{'_ms' if multiscale else ''}.npy"


@functools.lru_cache(maxsize=None)
def load_copy_whitening(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (1280,), projection (dims, 1280))`` float32 from a shipped whitening file."""
    table = np.load(path, allow_pickle=False).astype(np.float32)
    if table.ndim != 2 or table.shape[1] != 1280 or len(table) < 2 or not np.isfinite(table).all():
        raise UsageError(f"{path}: not a cnn whitening table (expected (1 + dims, 1280) finite values)")
    return table[0], table[1:]


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
        pooling: str = "avg",
        multiscale: bool = False,
        whiten: str = "none",
        whiten_dims: int | None = None,
    ):
        if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
            raise UsageError("input_size must be a multiple of 32, at least 32")
        if pca and not 0 < pca < 1280:
            raise UsageError("pca must be between 1 and 1279 (0 = off)")
        if pooling not in POOLINGS:
            raise UsageError(f"cnn pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if not isinstance(multiscale, bool):
            raise UsageError(f"cnn multiscale must be true or false, got {multiscale!r}")
        if whiten not in WHITENINGS:
            raise UsageError(f"cnn whiten must be one of {', '.join(WHITENINGS)}, got {whiten!r}")
        if whiten_dims is not None and whiten == "none":
            raise UsageError('cnn whiten_dims needs whiten "copy"')
        if whiten != "none" and pca:
            raise UsageError('cnn takes either pca (learned from the collection) or whiten "copy", not both')
        self.pooling = pooling
        self.multiscale = multiscale
        self.whiten = whiten
        self.whiten_mean: np.ndarray | None = None
        self.whiten_projection: np.ndarray | None = None
        self.whiten_dims = 0
        if whiten == "copy":
            path = whitening_path(pooling, multiscale)
            if input_size != 224 or not path.exists():
                raise UsageError(
                    f'cnn whiten "copy" is shipped for input_size 224 with pooling gem (multiscale or not); '
                    f"none for input_size {input_size}, pooling {pooling}, multiscale {multiscale}"
                )
            self.whiten_mean, projection = load_copy_whitening(str(path))
            if whiten_dims is None:
                whiten_dims = len(projection)
            if not isinstance(whiten_dims, int) or not 0 < whiten_dims <= len(projection):
                raise UsageError(f"cnn whiten_dims must be between 1 and {len(projection)}, got {whiten_dims!r}")
            self.whiten_dims = whiten_dims
            self.whiten_projection = np.ascontiguousarray(projection[:whiten_dims])
        self.input_size = int(input_size)
        self.threads = threads  # runtime only: does not change the vectors
        self.batch_size = int(batch_size)
        self.pca = int(pca)
        self.train_images = int(train_images)
        self.dim = self.pca or self.whiten_dims or 1280
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None
        self._session = None

    #: what a stored spec holds beyond the settings (checked, or fixed), read by from_spec
    spec_keys = ("model_sha256", "whiten_sha256", "normalise", "resize")

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **runtime: Any) -> "CnnExtractor":
        spec = dict(spec)
        digest = spec.pop("model_sha256", None)
        whiten_digest = spec.pop("whiten_sha256", None)
        spec.pop("normalise", None), spec.pop("resize", None)  # fixed; "pooling" is a setting (old specs: avg)
        ext = cls(**spec, **runtime)
        if digest is not None and digest != model_digest(str(MODEL_PATH)):
            raise UsageError(
                f"the cnn model file differs from the one this spec was made with "
                f"(sha256 {model_digest(str(MODEL_PATH))} vs {digest})"
            )
        if whiten_digest is not None and ext.whiten != "none":
            shipped = model_digest(str(whitening_path(ext.pooling, ext.multiscale)))
            if whiten_digest != shipped:
                raise UsageError(
                    f"the cnn whitening file differs from the one this spec was made with "
                    f"(sha256 {shipped} vs {whiten_digest})"
                )
        return ext

    def settings(self) -> dict[str, Any]:
        out = {
            "input_size": self.input_size,
            "resize": "shorter-side-centre-crop",
            "normalise": "(x-127)/128",
            "pooling": self.pooling,
            "model_sha256": model_digest(str(MODEL_PATH)),
        }
        if self.multiscale:
            out["multiscale"] = True
        if self.whiten != "none":
            out |= {
                "whiten": self.whiten,
                "whiten_dims": self.whiten_dims,
                "whiten_sha256": model_digest(str(whitening_path(self.pooling, self.multiscale))),
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
    def large_size(self) -> int:
        """The second input size of ``multiscale`` (about sqrt 2 times ``input_size``)."""
        return max(self.input_size + 32, round(self.input_size * math.sqrt(2) / 32) * 32)

    @property
    def min_side(self) -> int:
        return self.large_size if self.multiscale else self.input_size

    def prepare(self, image: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if self.multiscale:
            return resize_centre_crop(image, self.input_size), resize_centre_crop(image, self.large_size)
        return resize_centre_crop(image, self.input_size)

    def pool(self, fmap: np.ndarray) -> np.ndarray:
        """``(..., C, h, w)`` feature maps -> ``(..., C)`` by ``pooling`` (not normalised)."""
        if self.pooling == "gem":
            return (np.maximum(fmap, 1e-6) ** GEM_P).mean(axis=(-2, -1)) ** (1.0 / GEM_P)
        return fmap.mean(axis=(-2, -1))

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

    def _pooled(self, prepared: Sequence[Any]) -> np.ndarray:
        """L2-normalised pooled vectors (summed over the two sizes with ``multiscale``), not whitened."""
        if self.multiscale:
            return l2_normalise(self._pooled_one([p[0] for p in prepared]) + self._pooled_one([p[1] for p in prepared]))
        return self._pooled_one(prepared)

    def _pooled_one(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(prepared), 1280), dtype=np.float32)
        for start in range(0, len(prepared), self.batch_size):
            chunk = np.stack(prepared[start : start + self.batch_size])
            out[start : start + len(chunk)] = self.pool(self.feature_maps(chunk))
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
                    pooled.append(self.pool(fmap[:, y : y + k, x : x + k]))
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
        """``(n, 1280)`` pooled vectors -> ``(n, pca)`` (or ``whiten_dims``) whitened ones when on."""
        if self.whiten_projection is not None and self.whiten_mean is not None:
            return apply_whitening(vectors, self.whiten_mean, self.whiten_projection)
        if not self.pca:
            return vectors
        if self.pca_mean is None or self.pca_components is None:
            raise NotTrained("cnn with pca: no PCA learned yet; index some images first")
        return apply_whitening(vectors, self.pca_mean, self.pca_components)
