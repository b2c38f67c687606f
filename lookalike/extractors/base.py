"""The extractor interface every feature family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np

#: Metrics an extractor can declare. ``cosine`` vectors are float and stored
#: L2-normalised, so cosine similarity is their dot product. ``hamming``
#: vectors are bit strings packed 8 to a byte (``dtype`` ``uint8``).
METRICS = ("cosine", "hamming")


class Extractor(ABC):
    """Turns decoded images into fixed-size vectors.

    Subclasses set ``name``, ``dim``, ``dtype`` and ``metric``, take their
    settings as constructor keywords, and implement :meth:`prepare` (per-image
    work, run in worker processes: resizing, or the whole feature for cheap
    handcrafted ones) and :meth:`embed_prepared` (the batch step, run once per
    batch in the indexing process: e.g. neural-network inference).

    ``dim`` is the number of vector components; for ``hamming`` it is the
    number of bits and a stored row has ``dim // 8`` bytes.
    No file I/O happens here: images arrive decoded.
    """

    name: ClassVar[str]
    dim: int
    dtype: str  # "float32" or "uint8" (packed bits)
    metric: str  # one of METRICS
    #: Short description for ``lookalike extractors``.
    description: ClassVar[str] = ""
    #: "fast", "medium" or "slow" per image on one CPU core (``fuse`` sets its own per instance).
    speed: str = "medium"
    #: Bumped when the same settings would produce different vectors.
    version: ClassVar[int] = 1

    def settings(self) -> dict[str, Any]:
        """Settings that change the vectors (JSON-able). Part of :meth:`spec`."""
        return {}

    def spec(self) -> dict[str, Any]:
        """JSON-able description; ``registry.create(spec)`` rebuilds an equal extractor."""
        return {"name": self.name, "version": self.version, **self.settings()}

    @property
    def min_side(self) -> int | None:
        """Shortest image side this extractor needs; lets JPEGs decode at reduced scale."""
        return None

    @property
    def row_width(self) -> int:
        """Stored components per vector (bytes per row for packed bits)."""
        return self.dim // 8 if self.metric == "hamming" else self.dim

    def prepare(self, image: np.ndarray) -> Any:
        """Per-image step on an ``(H, W, 3) uint8`` RGB array; may run in a worker.
        Returns what :meth:`embed_prepared` takes (picklable; an array for most extractors)."""
        return image

    @abstractmethod
    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """Batch step over :meth:`prepare` outputs -> ``(n, row_width)`` array of ``dtype``."""

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded RGB images -> ``(n, row_width)`` array of ``dtype``."""
        if len(images) == 0:
            return np.zeros((0, self.row_width), dtype=self.dtype)
        return self.embed_prepared([self.prepare(im) for im in images])

    # -- a calibrated copy score, for descriptors trained for copy detection ----
    #: Rank hits whose copy score reaches the threshold first (``search.copies_first``).
    copies_first: bool = False

    def has_copy_score(self) -> bool:
        """Whether this extractor has a calibrated copy score (:meth:`copy_vectors` is not ``None``)."""
        return False

    def copy_vectors(self, vectors: np.ndarray) -> np.ndarray | None:
        """The unit copy-descriptor part of stored or query ``vectors`` (``(n, width)``),
        or ``None`` when this extractor has no calibrated copy score (most)."""
        return None

    def copy_offsets(self, copy_vectors: np.ndarray) -> np.ndarray:
        """``(q,)``: what each query's copy score subtracts from its similarities."""
        raise NotImplementedError

    def copy_query(self, vectors: np.ndarray) -> np.ndarray:
        """Stored or query ``vectors`` changed so that a search with them ranks by the
        copy descriptor alone (the other parts of a fused vector zeroed)."""
        return np.asarray(vectors, np.float32)

    def copy_threshold(self) -> float:
        """The copy score from which a hit counts as a copy."""
        raise NotImplementedError

    def best_of_view(self) -> tuple[float, float] | None:
        """``(floor, margin)``: in one view of a query, the best hit is also a copy when its
        copy score is at least ``floor`` and ``margin`` ahead of the next file's
        (:func:`lookalike.search.copy_paths`); ``None``: no such rule."""
        return None

    # -- learned state (e.g. a visual vocabulary), stored in the index -------
    #: True for extractors that must :meth:`fit` on sample images before embedding.
    trainable: ClassVar[bool] = False

    def is_trained(self) -> bool:
        return True

    def fit(self, prepared: Sequence[Any]) -> None:
        """Learn state from :meth:`prepare` outputs of a sample of the collection."""

    def state(self) -> dict[str, np.ndarray]:
        """Learned arrays to store in the index (name -> array); empty if none."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero. ``(n, d) float32``."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
