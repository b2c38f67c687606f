"""PCA-whitening learned on a sample of the collection (for extractors that offer ``pca``)."""

from __future__ import annotations

import numpy as np

from .base import l2_normalise
from ..errors import UsageError


def fit_whitening(vectors: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (d,), components (dims, d))`` whitening ``vectors`` (``(n, d)``, n > dims).

    Components are the top principal axes, each divided by its standard
    deviation, so projected training vectors have unit variance per dimension.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) <= dims:
        raise UsageError(f"PCA to {dims} dimensions needs more than {dims} training images, got {len(vectors)}")
    mean = vectors.mean(0)
    _, sv, vt = np.linalg.svd(vectors - mean, full_matrices=False)
    scale = 1.0 / np.maximum(sv[:dims] / np.sqrt(len(vectors)), 1e-6)
    return mean.astype(np.float32), (vt[:dims] * scale[:, None]).astype(np.float32)


def apply_whitening(vectors: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project ``(n, d)`` vectors to ``(n, dims)`` and L2-normalise them."""
    return l2_normalise((np.asarray(vectors, np.float32) - mean) @ components.T)
