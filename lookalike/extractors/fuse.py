"""``fuse``: several extractors in one weighted vector.

``fuse:cnn+phash`` or ``fuse:cnn*3+phash`` (or the JSON spec
``{"name": "fuse", "parts": [{"extractor": SPEC, "weight": 1.0}, ...]}``).

Each part's vector is turned into a unit float vector: cosine parts are
L2-normalised, Hamming parts map each bit ``b`` to ``(1 - 2b) / sqrt(bits)``
so that the dot product of two of them is ``1 - 2 * hamming / bits``. Each is
scaled by ``sqrt(w_i / sum(w))`` and the parts are concatenated, so the fused
cosine similarity (a dot product) is the weighted mean of the parts'
similarities, and the fused vector is again of unit length.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

from . import registry
from ..errors import UsageError
from ..regions import copy_windows
from .base import Extractor, l2_normalise

_SPEEDS = ("fast", "medium", "slow")
#: ``mean``: hits by the fused similarity. ``copies-first``: hits whose copy score
#: (of the first part that has one, e.g. ``sscd``) reaches its threshold come
#: first, by copy score; the rest follow by the fused similarity.
RANKS = ("mean", "copies-first")


def unit_vectors(ext: Extractor, rows: np.ndarray) -> np.ndarray:
    """A part's stored rows -> unit ``(n, dim) float32`` vectors whose dot product is its similarity."""
    if ext.metric == "hamming":
        bits = np.unpackbits(np.asarray(rows, np.uint8), axis=1, count=ext.dim)
        return (1.0 - 2.0 * bits.astype(np.float32)) / np.float32(math.sqrt(ext.dim))
    if ext.metric == "cosine":
        return l2_normalise(rows)
    raise UsageError(f"fuse cannot combine extractor {ext.name!r} with metric {ext.metric!r}")


class FuseExtractor(Extractor):
    """Weighted concatenation of other extractors; cosine = weighted mean of their similarities."""

    name = "fuse"
    description = "several extractors in one vector; cosine = weighted mean of their similarities"
    usage: ClassVar[str] = "fuse:A+B, fuse:A*2+B"
    speed = "medium"
    dtype = "float32"
    metric = "cosine"

    def __init__(self, parts: Sequence[Any], rank: str = "mean", **runtime: Any):
        if rank not in RANKS:
            raise UsageError(f"fuse rank must be one of {', '.join(RANKS)}, not {rank!r}")
        self.rank = rank
        self.copies_first = rank == "copies-first"
        if isinstance(parts, (str, dict)) or not parts:
            raise UsageError('fuse needs a list of parts: fuse:A+B or {"name": "fuse", "parts": [...]}')
        self.parts: list[Extractor] = []
        self.weights: list[float] = []
        for i, part in enumerate(parts):
            if isinstance(part, dict) and "extractor" in part:
                unknown = sorted(set(part) - {"extractor", "weight"})
                if unknown:
                    raise UsageError(f"fuse part {i}: unknown keys {', '.join(unknown)} (known: extractor, weight)")
                spec, weight = part["extractor"], part.get("weight", 1.0)
            else:  # a bare spec, name or extractor: weight 1
                spec, weight = part, 1.0
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                raise UsageError(f"fuse part {i}: weight must be a number, got {weight!r}") from None
            if not (math.isfinite(weight) and weight > 0):
                raise UsageError(f"fuse part {i}: weight must be positive, got {weight!r}")
            self.parts.append(registry.create(spec, **runtime))
            self.weights.append(weight)
        total = sum(self.weights)
        self.scales = [math.sqrt(w / total) for w in self.weights]
        self.dim = sum(p.dim for p in self.parts)
        self.speed = max((getattr(p, "speed", "medium") for p in self.parts),
                         key=lambda s: _SPEEDS.index(s) if s in _SPEEDS else 1)
        if rank == "copies-first" and self._copy_part() is None:
            raise UsageError('fuse rank "copies-first" needs a part with a copy score (e.g. sscd)')

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **runtime: Any) -> "FuseExtractor":
        spec = dict(spec)
        if "parts" not in spec:
            raise UsageError('the fuse extractor needs parts: use fuse:A+B or {"name": "fuse", "parts": [...]}')
        unknown = sorted(set(spec) - {"parts", "rank"})
        if unknown:
            raise UsageError(f"unknown fuse extractor settings: {', '.join(unknown)} (known: parts, rank)")
        return cls(spec["parts"], spec.get("rank", "mean"), **runtime)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"parts": [{"extractor": p.spec(), "weight": w} for p, w in zip(self.parts, self.weights)]}
        if self.rank != "mean":
            out["rank"] = self.rank
        return out



    @property
    def min_side(self) -> int | None:
        sides = [p.min_side for p in self.parts if p.min_side is not None]
        return max(sides) if sides else None

    def prepare(self, image: np.ndarray) -> tuple:
        return tuple(p.prepare(image) for p in self.parts)

    def embed_prepared(self, prepared: Sequence[tuple]) -> np.ndarray:
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        if len(prepared) == 0:
            return out
        start = 0
        for i, (part, scale) in enumerate(zip(self.parts, self.scales)):
            rows = part.embed_prepared([p[i] for p in prepared])
            out[:, start : start + part.dim] = unit_vectors(part, rows) * np.float32(scale)
            start += part.dim
        return out

    # -- the copy score of the first part that has one --------------------------------
    def _copy_part(self) -> tuple[Extractor, int] | None:
        start = 0
        for part in self.parts:
            if part.has_copy_score():
                return part, start
            start += part.dim
        return None

    def has_copy_score(self) -> bool:
        return self._copy_part() is not None

    def copy_vectors(self, vectors: np.ndarray) -> np.ndarray | None:
        found = self._copy_part()
        if found is None:
            return None
        part, start = found
        return l2_normalise(np.asarray(vectors, np.float32)[:, start : start + part.dim])

    def copy_query(self, vectors: np.ndarray) -> np.ndarray:
        found = self._copy_part()
        assert found is not None, "copy_query of a fuse without a copy descriptor"
        part, start = found
        out = np.zeros((len(vectors), self.dim), np.float32)
        out[:, start : start + part.dim] = np.asarray(vectors, np.float32)[:, start : start + part.dim]
        return out

    def copy_offsets(self, copy_vectors: np.ndarray) -> np.ndarray:
        found = self._copy_part()
        assert found is not None, "copy_offsets of a fuse without a copy descriptor"
        return found[0].copy_offsets(copy_vectors)

    def copy_threshold(self) -> float:
        found = self._copy_part()
        assert found is not None, "copy_threshold of a fuse without a copy descriptor"
        return found[0].copy_threshold()

    def best_of_view(self) -> tuple[float, float] | None:
        found = self._copy_part()
        return None if found is None else found[0].best_of_view()

    def embed_regions(self, image: np.ndarray, min_side: int) -> np.ndarray:
        """Vectors of regions of ``image`` for the copy part alone (the other parts
        zero), so a search with them ranks by the copy descriptor: windows of 40% and
        60% of each side, overlapping by half, at least ``min_side`` pixels, and the
        rectangles outlined by the query's edges (:func:`lookalike.regions.copy_windows`).
        A picture pasted into a larger one meets its original at about its own
        scale. Empty without a copy part."""
        found = self._copy_part()
        if found is None:
            return np.zeros((0, self.dim), np.float32)
        part, start = found
        windows = copy_windows(image, min_side)
        out = np.zeros((len(windows), self.dim), np.float32)
        if windows:
            index = self.parts.index(part)
            rows = part.embed_prepared([part.prepare(x) for x in windows])
            out[:, start : start + part.dim] = unit_vectors(part, rows) * np.float32(self.scales[index])
        return out
