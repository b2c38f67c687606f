"""Local features for geometric verification: detect, store compactly, match, fit a model.

Indexed images get their keypoints measured once, at index time (SIFT by
default: position, and a 128-byte descriptor each, at most ``max_keypoints``
of the strongest). At query time the query's keypoints are matched against
each candidate's stored ones (nearest neighbour with Lowe's ratio test on
RootSIFT), and a homography is fitted with MAGSAC. The number of inliers says
how surely the query shows (part of) the candidate; the homography says where.

Mirrors: when no candidate verifies, the query's keypoints are mirrored
(positions flipped, descriptors permuted as the mirror image would give them)
and matched again, so a mirrored copy matches too; a homography that mirrors
has a negative determinant, which is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LookalikeError

#: Default settings; stored in the manifest so that a query is measured like the index.
DEFAULTS: dict[str, Any] = {"detector": "sift", "max_keypoints": 500, "max_side": 640}

RATIO = 0.8  # Lowe's ratio test: nearest / second-nearest distance
MIN_INLIERS = 12  # fewer inliers than this: no model
_DETECTORS = ("sift", "rootsift")  # "sift" descriptors are matched as RootSIFT


class LocalSettingsError(LookalikeError, ValueError):
    pass


def settings(spec: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """Normalise a local-features spec (``"sift"``, a dict, ``None``/``"none"`` = off)."""
    if spec is None or spec in ("none", False):
        return None
    if isinstance(spec, str):
        spec = {"detector": spec}
    out = dict(DEFAULTS) | dict(spec)
    if out["detector"] != "sift":
        raise LocalSettingsError(f"unknown local-feature detector {out['detector']!r} (available: sift)")
    unknown = set(out) - set(DEFAULTS)
    if unknown:
        raise LocalSettingsError(f"unknown local-feature settings: {', '.join(sorted(unknown))}")
    out["max_keypoints"] = int(out["max_keypoints"])
    out["max_side"] = int(out["max_side"])
    if not 16 <= out["max_keypoints"] <= 10000 or not 64 <= out["max_side"] <= 8192:
        raise LocalSettingsError("max_keypoints must be 16..10000 and max_side 64..8192")
    return out


@dataclass(frozen=True)
class Features:
    """Keypoints of one image: ``xy`` in the image's own pixel coordinates."""

    xy: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 128) uint8
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.xy)

    # compact storage: two BLOBs
    def to_blobs(self) -> tuple[bytes, bytes]:
        return self.xy.astype(np.float32).tobytes(), self.descriptors.astype(np.uint8).tobytes()

    @classmethod
    def from_blobs(cls, xy: bytes, desc: bytes, width: int, height: int) -> "Features":
        points = np.frombuffer(xy, np.float32).reshape(-1, 2)
        return cls(points, np.frombuffer(desc, np.uint8).reshape(-1, 128), width, height)


#: SIFT's contrast threshold (OpenCV's default), and the lower one used again on
#: flat images (drawings, clip art) that give fewer than ``FEW`` keypoints with it.
CONTRAST, FLAT_CONTRAST, FEW = 0.04, 0.015, 50
#: Small images are enlarged (at most 4x) to this longest side before detection,
#: so that thumbnails give keypoints at the scales their originals are measured at.
MIN_SIDE = 480


def _cv2():
    import cv2  # imported on first use: ``import lookalike`` stays light

    return cv2


def _grey_scaled(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    cv2 = _cv2()
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels
    h, w = grey.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if max(h, w) < MIN_SIDE:
        scale = min(4.0, MIN_SIDE / max(h, w))
    if scale != 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return grey, scale


def _sift(max_keypoints: int, contrast: float):
    return _cv2().SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast)


def detect(pixels: np.ndarray, spec: dict[str, Any], size: tuple[int, int] | None = None) -> Features:
    """Keypoints of an RGB ``(H, W, 3) uint8`` image, measured at most ``max_side`` wide.

    ``size``: the full ``(width, height)`` of an image decoded at reduced size;
    positions are given in it.
    """
    grey, scale = _grey_scaled(pixels, spec["max_side"])
    if size is not None and size[0] != pixels.shape[1]:
        scale *= pixels.shape[1] / size[0]
    kps, desc = _sift(spec["max_keypoints"], CONTRAST).detectAndCompute(grey, None)
    if len(kps) < min(FEW, spec["max_keypoints"]):
        kps, desc = _sift(spec["max_keypoints"], FLAT_CONTRAST).detectAndCompute(grey, None)
    w, h = size if size is not None else (pixels.shape[1], pixels.shape[0])
    if desc is None or not kps:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), w, h)
    order = np.argsort([-k.response for k in kps], kind="stable")[: spec["max_keypoints"]]
    xy = np.array([kps[i].pt for i in order], np.float32) / scale
    d = np.clip(np.round(desc[order]), 0, 255).astype(np.uint8)  # SIFT values are 0..255 already
    return Features(xy, d, w, h)


#: A SIFT descriptor is 4 x 4 cells of 8 orientation bins, rows along the
#: keypoint's orientation. Mirroring the image mirrors the keypoint's frame: the
#: cell rows come in reverse order and each orientation bin b becomes -b (mod 8).
_MIRROR_ORDER = (
    np.arange(128).reshape(4, 4, 8)[::-1][:, :, (-np.arange(8)) % 8].ravel()
)


def mirrored(features: Features) -> Features:
    """The keypoints the mirror image would give, without measuring it again.

    Positions are mirrored (``x -> width - x``) and descriptors permuted (see
    :data:`_MIRROR_ORDER`); SIFT descriptors are not mirror-invariant, so
    matching these finds mirrored copies. Pass ``mirrored=True`` to
    :func:`verify` to get a model for the unmirrored query.
    """
    xy = features.xy.copy()
    xy[:, 0] = features.width - xy[:, 0]
    return Features(xy, np.ascontiguousarray(features.descriptors[:, _MIRROR_ORDER]), features.width, features.height)


def detect_mirrored(pixels: np.ndarray, spec: dict[str, Any]) -> Features:
    """Keypoints measured on the mirror image of ``pixels`` (positions in the mirror image)."""
    return detect(np.ascontiguousarray(pixels[:, ::-1]), spec)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root -> unit L2 vectors."""
    d = descriptors.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


@dataclass(frozen=True)
class Match:
    """Outcome of verifying one query against one candidate."""

    inliers: int  # 0 when no model was found
    matches: int  # ratio-test matches before the geometric fit
    homography: np.ndarray | None  # 3x3, query pixel coords -> candidate pixel coords
    query_points: np.ndarray  # (inliers, 2) matched positions in the query
    candidate_points: np.ndarray  # (inliers, 2) the same in the candidate

    def outline(self, width: int, height: int) -> np.ndarray | None:
        """The query's border projected into the candidate, ``(4, 2)``, or ``None``."""
        if self.homography is None:
            return None
        corners = np.array([[[0, 0]], [[width, 0]], [[width, height]], [[0, height]]], np.float32)
        return _cv2().perspectiveTransform(corners, self.homography).reshape(4, 2)


_NO_MATCH = np.zeros((0, 2), np.float32)


def tentative_matches(query: np.ndarray, candidate: np.ndarray, ratio: float = RATIO) -> np.ndarray:
    """``(m, 2)`` index pairs (query, candidate) passing the ratio test; inputs are RootSIFT."""
    if len(query) == 0 or len(candidate) < 2:
        return np.zeros((0, 2), np.int64)
    sim = query @ candidate.T  # unit vectors: squared distance = 2 - 2 sim
    rows = np.arange(len(query))
    nearest = sim.argmax(axis=1)
    s1 = sim[rows, nearest]
    sim[rows, nearest] = -np.inf  # the second nearest is the best of the rest
    s2 = sim.max(axis=1)
    keep = np.sqrt(np.maximum(2 - 2 * s1, 0)) < ratio * np.sqrt(np.maximum(2 - 2 * s2, 0))
    q, c, s = np.flatnonzero(keep), nearest[keep], s1[keep]
    # one query point per candidate point: keep the closest
    order = np.argsort(-s, kind="stable")
    _, first_seen = np.unique(c[order], return_index=True)
    chosen = order[np.sort(first_seen)]
    pairs = np.stack([q[chosen], c[chosen]], axis=1)
    return pairs


def _plausible(h: np.ndarray, query_size: tuple[int, int], cand_size: tuple[int, int]) -> bool:
    """Reject degenerate models: collapsed, exploded or folded projections of the query."""
    cv2 = _cv2()
    w, hh = query_size
    corners = np.array([[[0, 0]], [[w, 0]], [[w, hh]], [[0, hh]]], np.float32)
    try:
        p = cv2.perspectiveTransform(corners, h).reshape(4, 2)
    except cv2.error:
        return False
    if not np.all(np.isfinite(p)):
        return False
    if not cv2.isContourConvex(p.astype(np.float32)):
        return False
    area = abs(cv2.contourArea(p))
    ratio = area / max(1.0, w * hh)
    cw, ch = cand_size
    # projected area relative to the query's own area: a scale change of at most 20x either way
    return 1 / 400 < ratio < 400 and area > 0.0005 * cw * ch


def verify(query: Features, candidate: Features, query_rs: np.ndarray | None = None, mirrored: bool = False) -> Match:
    """Match ``query`` against ``candidate`` and fit a homography (MAGSAC).

    ``mirrored``: ``query`` was measured on the mirror image of the query (see
    :func:`detect_mirrored`); the model and points returned are for the query
    itself, so the homography then mirrors (negative determinant). The fit is
    done in mirrored coordinates because MAGSAC refuses orientation-reversing models.
    """
    q = root_sift(query.descriptors) if query_rs is None else query_rs
    pairs = tentative_matches(q, root_sift(candidate.descriptors))
    empty = Match(0, len(pairs), None, _NO_MATCH, _NO_MATCH)
    if len(pairs) < MIN_INLIERS:
        return empty
    src = query.xy[pairs[:, 0]].reshape(-1, 1, 2)
    dst = candidate.xy[pairs[:, 1]].reshape(-1, 1, 2)
    cv2 = _cv2()
    threshold = max(2.0, 0.006 * max(candidate.width, candidate.height))
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold, maxIters=2000, confidence=0.999)
    if h is None or mask is None:
        return empty
    inl = mask.ravel().astype(bool)
    n = int(inl.sum())
    if n < MIN_INLIERS or not _plausible(h, (query.width, query.height), (candidate.width, candidate.height)):
        return empty
    qp = src.reshape(-1, 2)[inl]
    if mirrored:
        flip = np.array([[-1.0, 0.0, query.width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        h = h @ flip
        qp = qp.copy()
        qp[:, 0] = query.width - qp[:, 0]
    return Match(n, len(pairs), h, qp, dst.reshape(-1, 2)[inl])


def verify_query(
    pixels: np.ndarray, candidates: list["Features | None"], spec: dict[str, Any], plain: Features | None = None
) -> list[Match]:
    """Verify a query image against each candidate's stored features (``None``: no features).

    ``plain``: the query's features, when already measured. The mirror image
    is tried only when the plain one verifies no candidate strongly, which
    keeps the common case at one detection.
    """
    plain = detect(pixels, spec) if plain is None else plain
    found = _verify_all(plain, candidates)
    if max((m.inliers for m in found), default=0) < 2 * MIN_INLIERS:
        flipped = _verify_all(mirrored(plain), candidates, mirrored=True)
        found = [m if m.inliers >= n.inliers else n for m, n in zip(found, flipped)]
    return found


def _verify_all(query: Features, candidates: list["Features | None"], mirrored: bool = False) -> list[Match]:
    q = root_sift(query.descriptors)
    none = Match(0, 0, None, _NO_MATCH, _NO_MATCH)
    return [verify(query, c, q, mirrored) if c is not None and len(c) and len(query) else none for c in candidates]
