"""Keypoint descriptors (OpenCV) made into fixed-size vectors.

Detectors: ``sift``, ``orb``, ``kaze``, ``akaze``, ``brisk`` and ``brief``
(FAST corners + BRIEF). Two ways to turn a variable set of descriptors into
one vector (setting ``aggregation``):

``concat``
    the OpenCV tutorial's way: the ``n_keypoints`` strongest keypoints'
    descriptors concatenated in order of detector response, zero-padded.
    Fragile (order-dependent); kept as a baseline (``kaze-concat``).
``vlad`` (default)
    a visual vocabulary of ``words`` k-means centres learned from the first
    folder indexed, and VLAD aggregation: per word, the sum of residuals of the
    descriptors assigned to it; each word's block L2-normalised
    (intra-normalisation), then signed square root, then global L2.
    The vocabulary is stored in the index (``vocabulary.npy``).

Binary descriptors (ORB, AKAZE, BRISK, BRIEF) are unpacked to 0/1 floats for
the vocabulary and the residuals: squared Euclidean distance between 0/1
vectors is their Hamming distance, so assignment is exact Hamming assignment,
and centres become per-bit frequencies, which k-means can average (a Hamming
medoid vocabulary cannot). The price is a wider vector (bits x words).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import cv2
import numpy as np

from ..errors import NotTrained, UsageError  # NotTrained lived here; kept importable from here
from .base import Extractor, l2_normalise
from .pca import apply_whitening, fit_whitening


def _xf(name: str):
    # OpenCV 5 moved KAZE, AKAZE, BRISK and BRIEF to the contrib module.
    for module in (getattr(cv2, "xfeatures2d", None), cv2):
        if module is not None and hasattr(module, name):
            return getattr(module, name)
    raise RuntimeError(
        f"this OpenCV build has no {name}; install opencv-contrib-python-headless "
        "(and not opencv-python-headless alongside it)"
    )


#: detector name -> (descriptor bytes or floats, binary?)
DETECTORS: dict[str, tuple[int, bool]] = {
    "sift": (128, False),
    "kaze": (64, False),
    "orb": (32, True),
    "akaze": (61, True),
    "brisk": (64, True),
    "brief": (32, True),
}


def _detect_and_compute(detector: str, gray: np.ndarray, limit: int, rank_then_compute: bool):
    """Keypoints (strongest first, at most ``limit``) and their descriptors."""
    # The factories below exist at run time but not in the stubs OpenCV 5 ships, hence the ignores.
    if detector == "brief":
        finder, describer = cv2.FastFeatureDetector_create(), _xf("BriefDescriptorExtractor_create")(32)  # type: ignore[attr-defined]
    elif detector == "orb":
        finder = describer = cv2.ORB_create(nfeatures=max(limit, 32))  # type: ignore[attr-defined]
    elif detector == "sift":
        finder = describer = cv2.SIFT_create()  # type: ignore[attr-defined]
    else:
        finder = describer = _xf(f"{detector.upper()}_create")()
    if rank_then_compute or finder is not describer:
        keypoints = sorted(finder.detect(gray, None), key=lambda k: -k.response)[:limit]
        if not keypoints:
            return [], None
        keypoints, desc = describer.compute(gray, keypoints)
        return keypoints, desc
    keypoints, desc = finder.detectAndCompute(gray, None)
    if desc is None or not len(keypoints):
        return [], None
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:limit]
    return [keypoints[i] for i in order], desc[order]


def _grey(image: np.ndarray, max_side: int) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return gray


class KeypointExtractor(Extractor):
    """Local descriptors of one detector, aggregated by ``concat`` or ``vlad``."""

    detector: ClassVar[str] = "sift"
    speed = "slow"
    dtype = "float32"
    metric = "cosine"
    version = 1

    def __init__(
        self,
        aggregation: str = "vlad",
        words: int = 64,
        max_keypoints: int = 500,
        n_keypoints: int = 32,
        max_side: int = 512,
        train_images: int = 300,
        train_descriptors: int = 100_000,
        seed: int = 0,
        pca: int = 0,
    ):
        if aggregation not in ("vlad", "concat"):
            raise UsageError("aggregation must be 'vlad' or 'concat'")
        self.aggregation = aggregation
        self.words = int(words)
        self.max_keypoints = int(max_keypoints)
        self.n_keypoints = int(n_keypoints)
        self.max_side = int(max_side)
        self.train_images = int(train_images)
        self.train_descriptors = int(train_descriptors)
        self.seed = int(seed)
        self.pca = int(pca)
        width, self.binary = DETECTORS[self.detector]
        self.desc_dim = width * 8 if self.binary else width
        self.vlad_dim = self.words * self.desc_dim
        if aggregation == "vlad":
            if self.pca and not 0 < self.pca < self.vlad_dim:
                raise UsageError(f"pca must be between 1 and {self.vlad_dim - 1} (0 = off)")
            self.dim = self.pca or self.vlad_dim
        else:
            self.dim = self.n_keypoints * self.desc_dim
        self.vocabulary: np.ndarray | None = None
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None  # (pca, vlad_dim), rows scaled for whitening

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        return self.aggregation == "vlad"

    def settings(self) -> dict[str, Any]:
        if self.aggregation == "concat":
            return {"aggregation": "concat", "n_keypoints": self.n_keypoints, "max_side": self.max_side}
        return {
            "aggregation": "vlad", "words": self.words, "max_keypoints": self.max_keypoints,
            "max_side": self.max_side, "train_images": self.train_images,
            "train_descriptors": self.train_descriptors, "seed": self.seed,
            **({"pca": self.pca} if self.pca else {}),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **runtime: Any) -> "KeypointExtractor":
        return cls(**spec)

    # -- per image (worker processes) ----------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Concat: the final ``(dim,)`` vector. VLAD: ``(n, bytes|floats)`` raw descriptors."""
        gray = _grey(image, self.max_side)
        limit = self.n_keypoints if self.aggregation == "concat" else self.max_keypoints
        width = DETECTORS[self.detector][0]
        empty = np.zeros((0, width), np.uint8 if self.binary else np.float32)
        if min(gray.shape) < 16:
            desc = None
        else:
            _, desc = _detect_and_compute(self.detector, gray, limit, self.aggregation == "concat")
        desc = empty if desc is None else desc
        if self.aggregation == "vlad":
            return desc
        floats = self._floats(desc).reshape(-1)[: self.dim]
        out = np.zeros(self.dim, np.float32)
        out[: floats.size] = floats
        return out

    def _floats(self, desc: np.ndarray) -> np.ndarray:
        if self.binary:
            bits = np.unpackbits(desc, axis=1).astype(np.float32)
            return bits if self.aggregation == "vlad" else 1.0 - 2.0 * bits  # concat: +-1
        return desc.astype(np.float32)

    # -- vocabulary ------------------------------------------------------------
    def fit(self, prepared: Sequence[np.ndarray]) -> None:
        """Learn the vocabulary from :meth:`prepare` outputs of sample images."""
        rng = np.random.default_rng(self.seed)
        per_image = [self._floats(d) for d in prepared if len(d)]
        data = np.concatenate(per_image) if per_image else np.zeros((0, self.desc_dim), np.float32)
        if len(data) < self.words * 4:
            raise NotTrained(
                f"{self.name}: only {len(data)} descriptors in {len(prepared)} images; "
                f"learning {self.words} visual words needs at least {self.words * 4} "
                "(index more or larger images first)"
            )
        if len(data) > self.train_descriptors:
            data = data[rng.choice(len(data), self.train_descriptors, replace=False)]
        cv2.setRNGSeed(self.seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-4)
        _, _, centres = cv2.kmeans(np.ascontiguousarray(data), self.words, None, criteria, 1,  # type: ignore[call-overload]
                                   cv2.KMEANS_PP_CENTERS)  # bestLabels=None works; the stubs say otherwise
        self.vocabulary = centres.astype(np.float32)
        if self.pca:
            self._fit_pca(np.stack([self._vlad(self._floats(d)) for d in prepared]))

    def _fit_pca(self, vlads: np.ndarray) -> None:
        """PCA-whitening of VLAD vectors learned on the training images."""
        try:
            self.pca_mean, self.pca_components = fit_whitening(vlads, self.pca)
        except ValueError as e:
            raise NotTrained(f"{self.name}: {e} (lower 'pca' or index more images first)") from None

    def state(self) -> dict[str, np.ndarray]:
        if self.vocabulary is None:
            return {}
        out = {"vocabulary": self.vocabulary}
        if self.pca_mean is not None and self.pca_components is not None:
            out |= {"pca_mean": self.pca_mean, "pca_components": self.pca_components}
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        vocab = arrays.get("vocabulary")
        if vocab is not None:
            if vocab.shape != (self.words, self.desc_dim):
                raise UsageError(f"vocabulary has shape {vocab.shape}, expected {(self.words, self.desc_dim)}")
            self.vocabulary = vocab.astype(np.float32)
        if self.pca and "pca_components" in arrays:
            self.pca_mean = arrays["pca_mean"].astype(np.float32)
            self.pca_components = arrays["pca_components"].astype(np.float32)

    def is_trained(self) -> bool:
        if self.aggregation != "vlad":
            return True
        return self.vocabulary is not None and (not self.pca or self.pca_components is not None)

    # -- batch ------------------------------------------------------------------
    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.aggregation == "concat":
            return l2_normalise(np.stack(prepared))
        if not self.is_trained():
            raise NotTrained(f"{self.name}: no vocabulary yet; index some images first")
        vlads = np.stack([self._vlad(self._floats(d)) for d in prepared])
        if self.pca:
            assert self.pca_mean is not None and self.pca_components is not None  # is_trained()
            return apply_whitening(vlads, self.pca_mean, self.pca_components)
        return vlads

    def _vlad(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((self.words, self.desc_dim), np.float32)
        if len(x):
            c = self.vocabulary
            assert c is not None  # learned by fit() or read by load_state() first
            d2 = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
            nearest = d2.argmin(1)
            np.add.at(out, nearest, x - c[nearest])
            out = l2_normalise(out)  # intra-normalisation, per word
        flat = out.reshape(-1)
        flat = np.sign(flat) * np.sqrt(np.abs(flat))
        return l2_normalise(flat[None])[0]


def _make(name: str, detector: str, description: str, speed: str, **defaults: Any) -> type:
    def __init__(self, **settings: Any) -> None:
        KeypointExtractor.__init__(self, **{**defaults, **settings})

    attrs: dict[str, Any] = {"name": name, "detector": detector, "description": description, "speed": speed}
    if defaults:
        attrs["__init__"] = __init__
    return type(f"{name.title().replace('-', '')}Extractor", (KeypointExtractor,), attrs)


SiftExtractor = _make("sift", "sift", "SIFT descriptors, VLAD over 64 learned words (8192-d)", "slow")
OrbExtractor = _make("orb", "orb", "ORB binary descriptors, VLAD over 64 learned words (16384-d)", "medium")
KazeExtractor = _make("kaze", "kaze", "KAZE descriptors, VLAD over 64 learned words (4096-d)", "slow")
AkazeExtractor = _make("akaze", "akaze", "AKAZE binary descriptors, VLAD over 64 learned words (31232-d)", "slow")
BriskExtractor = _make("brisk", "brisk", "BRISK binary descriptors, VLAD over 64 learned words (32768-d)", "medium")
BriefExtractor = _make("brief", "brief", "FAST corners + BRIEF binary descriptors, VLAD (16384-d)", "medium")
KazeConcatExtractor = _make(
    "kaze-concat", "kaze",
    "tutorial baseline: 32 strongest KAZE descriptors concatenated, 2048-d", "slow",
    aggregation="concat",
)
KazeConcatExtractor.__doc__ = """The OpenCV-for-newbies tutorial's baseline (A. Nikishaev, 2018).

The 32 strongest KAZE keypoints (by detector response), their 64-d
descriptors concatenated in that order and zero-padded to 2048 values;
cosine. Unlike the tutorial, images are first scaled so the longest side is at
most ``max_side`` pixels (KAZE's cost grows with the pixel count).
"""


class SurfExtractor(Extractor):
    """SURF is patented; the PyPI OpenCV wheels are built without it."""

    name = "surf"
    usable = False  # listed apart by `lookalike extractors`
    description = "not available: patented, excluded from the PyPI OpenCV builds (use sift, akaze or orb)"
    speed = "-"
    dtype = "float32"
    metric = "cosine"

    def __init__(self, **settings: Any):
        raise UsageError(
            "SURF is patented and OpenCV's PyPI wheels are built without it (OPENCV_ENABLE_NONFREE "
            "off). Use 'sift' (its patent has expired; VLAD by default), 'akaze' or 'orb' instead."
        )

    def embed_prepared(self, prepared):  # pragma: no cover - never constructed
        raise NotImplementedError
