"""``onnx``: embeddings from your own ONNX model, run on onnxruntime.

``onnx:/path/model.onnx`` (or a JSON spec with settings) runs any image model
whose input is one ``(N, 3, H, W)`` (or ``(N, H, W, 3)``) float tensor: the
image is resized, normalised with ``mean`` / ``std`` (RGB, 0..255 scale), the
chosen output is pooled to one vector per image and L2-normalised (cosine).

The spec records everything that changes the vectors, resolved against the
model when it is first created: input and output names, input size, pooling,
and the SHA-256 of the model file, so an index is pinned to the exact model.
Opening it again after the file changed raises a clear :class:`ValueError`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np

from ..errors import PathNotFound, UsageError

from .base import Extractor, l2_normalise
from .cnn import cover_crop, cpu_session

#: ImageNet channel statistics on the 0..255 scale (torchvision's, times 255).
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
RESIZES = ("shorter-side-centre-crop", "stretch")
LAYOUTS = ("NCHW", "NHWC")
POOLINGS = ("avg", "max", "none")
_INPUT_TYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
}
_SETTINGS = ("path", "sha256", "input", "output", "input_size", "resize", "mean", "std", "layout", "pooling")


def file_sha256(path: str) -> str:
    """Hex SHA-256 of the file at ``path`` (cached per size and mtime)."""
    st = os.stat(path)
    return _sha256(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resize_to(image: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(height, width, 3) uint8`` by ``mode`` (see :data:`RESIZES`).

    Downscaling uses area averaging, upscaling bilinear (as the ``cnn`` extractor).
    """
    h, w = image.shape[:2]
    if mode == "stretch":
        if (h, w) == (height, width):
            return np.ascontiguousarray(image)
        interp = cv2.INTER_AREA if height <= h and width <= w else cv2.INTER_LINEAR
        return cv2.resize(image, (width, height), interpolation=interp)
    return cover_crop(image, height, width)


def _size_pair(input_size: Any) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        pair = (int(input_size), int(input_size))
    elif isinstance(input_size, (list, tuple)) and len(input_size) == 2:
        pair = (int(input_size[0]), int(input_size[1]))
    else:
        raise UsageError(f"input_size must be an int or [height, width], got {input_size!r}")
    if min(pair) < 1:
        raise UsageError(f"input_size must be positive, got {input_size!r}")
    return pair


def _triple(value: Any, what: str) -> list[float]:
    try:
        out = [float(v) for v in value]
    except TypeError:
        out = []
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise UsageError(f"{what} must be a list of 3 numbers (R, G, B on the 0..255 scale), got {value!r}")
    return out


class OnnxExtractor(Extractor):
    """Any ONNX image model: resize, normalise, run, pool, L2-normalise; cosine."""

    name = "onnx"
    description = "your own ONNX model: pooled output, L2-normalised, cosine"
    usage: ClassVar[str] = "onnx:PATH"
    speed = "medium"
    dtype = "float32"
    metric = "cosine"

    def __init__(
        self,
        path: str | os.PathLike,
        input_size: int | Sequence[int] | None = None,
        resize: str = "shorter-side-centre-crop",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        layout: str = "NCHW",
        input: str | None = None,
        output: str | None = None,
        pooling: str | None = None,
        sha256: str | None = None,
        threads: int | None = None,
        batch_size: int = 32,
    ):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if not os.path.isfile(self.path):
            raise PathNotFound(f"ONNX model file not found: {self.path}")
        if resize not in RESIZES:
            raise UsageError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
        if layout not in LAYOUTS:
            raise UsageError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if pooling is not None and pooling not in POOLINGS:
            raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.resize, self.layout, self.pooling = resize, layout, pooling
        self.mean, self.std = _triple(mean, "mean"), _triple(std, "std")
        if any(s == 0 for s in self.std):
            raise UsageError("std must not contain 0")
        self._size = _size_pair(input_size)
        self.input, self.output = input, output
        self.threads = threads  # runtime only: does not change the vectors
        self.batch_size = max(1, int(batch_size))
        actual = file_sha256(self.path)
        if sha256 is not None and sha256.lower() != actual:
            raise UsageError(
                f"the ONNX model file {self.path} changed since this spec was made "
                f"(sha256 is now {actual}, the spec says {sha256})"
            )
        self.sha256 = actual
        self._session = None
        self._dim: int | None = None
        self._static_batch: int | None = None
        self._in_dtype: type[np.floating] = np.float32
        self._resolved = False
        # A spec from a manifest names everything prepare() needs, so worker
        # processes never load the model; a short spec is checked right away.
        if None in (self._size, self.input, self.output, self.pooling):
            self._resolve()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **runtime: Any) -> "OnnxExtractor":
        spec = dict(spec)
        if "path" not in spec:
            raise UsageError('the onnx extractor needs the model file: use onnx:PATH or {"name": "onnx", "path": ...}')
        unknown = sorted(set(spec) - set(_SETTINGS))
        if unknown:
            raise UsageError(f"unknown onnx extractor settings: {', '.join(unknown)} (known: {', '.join(_SETTINGS)})")
        return cls(**spec, **runtime)

    # -- model ----------------------------------------------------------------
    def _get_session(self):
        if self._session is None:
            try:
                self._session = cpu_session(self.path, self.threads)
            except Exception as e:  # onnxruntime raises its own exception types
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UsageError(f"{self.path} is not a loadable ONNX model ({msg})") from None
        return self._session

    def _resolve(self) -> None:
        """Fill in the settings left to the model and check the others against it."""
        if self._resolved:
            return
        session = self._get_session()
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self.input = self._pick(self.input, inputs, "input")
        self.output = self._pick(self.output, outputs, "output")
        inp = next(i for i in inputs if i.name == self.input)
        out = next(o for o in outputs if o.name == self.output)
        if inp.type not in _INPUT_TYPES:
            raise UsageError(f"{self.path}: input {self.input!r} is {inp.type}; only float inputs are supported")
        self._in_dtype = _INPUT_TYPES[inp.type]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise UsageError(f"{self.path}: input {self.input!r} has shape {shape}; an image input needs 4 axes")
        channels, spatial = (shape[1], shape[2:4]) if self.layout == "NCHW" else (shape[3], shape[1:3])
        if isinstance(channels, int) and channels != 3:
            other = "NHWC" if self.layout == "NCHW" else "NCHW"
            raise UsageError(
                f"{self.path}: input {self.input!r} has shape {shape}, not 3 colour channels in "
                f"layout {self.layout} (is the model {other}?)"
            )
        static = tuple(spatial) if all(isinstance(s, int) and s > 0 for s in spatial) else None
        if self._size is None:
            self._size = static or (224, 224)
        elif static is not None and static != self._size:
            raise UsageError(
                f"{self.path}: input {self.input!r} takes {static[0]}x{static[1]} images, "
                f"input_size asks for {self._size[0]}x{self._size[1]}"
            )
        self._static_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        rank = len(out.shape)
        if self.pooling is None:
            self.pooling = "avg" if rank == 4 else "none"
        if self.pooling != "none" and rank != 4:
            raise UsageError(
                f"{self.path}: output {self.output!r} has shape {list(out.shape)}; pooling "
                f"{self.pooling!r} needs a 4-D feature map, use pooling \"none\""
            )
        if self.pooling != "none":
            c = out.shape[1] if self.layout == "NCHW" else out.shape[3]
            self._dim = c if isinstance(c, int) and c > 0 else None
        elif all(isinstance(s, int) and s > 0 for s in out.shape[1:]):
            self._dim = int(np.prod(out.shape[1:]))
        if self._dim is None:  # dynamic output shape: run the model once
            h, w = self._size
            try:
                self._dim = int(self._forward(np.zeros((1, h, w, 3), np.uint8)).shape[1])
            except Exception as e:
                raise UsageError(f"{self.path}: the model failed on a {h}x{w} input: {e}") from None
        self._resolved = True

    def _pick(self, wanted: str | None, args: list, what: str) -> str:
        names = [a.name for a in args]
        if wanted is None:
            return names[0]
        if wanted not in names:
            raise UsageError(f"{self.path} has no {what} named {wanted!r}; its {what}s: {', '.join(names)}")
        return wanted

    # -- interface ------------------------------------------------------------
    @property
    def dim(self) -> int:  # type: ignore[override]
        self._resolve()
        assert self._dim is not None  # _resolve() found it
        return self._dim

    @property
    def input_size(self) -> tuple[int, int]:
        if self._size is None:
            self._resolve()
        assert self._size is not None  # _resolve() found it
        return self._size

    def settings(self) -> dict[str, Any]:
        h, w = self.input_size  # every setting is known after __init__
        return {
            "path": self.path,
            "sha256": self.sha256,
            "input": self.input,
            "output": self.output,
            "input_size": h if h == w else [h, w],
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": self.layout,
            "pooling": self.pooling,
        }

    @property
    def min_side(self) -> int:
        return max(self.input_size)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        return resize_to(image, h, w, self.resize)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``(n, H, W, 3) uint8`` -> pooled ``(n, d) float32`` (not normalised)."""
        x = (batch.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        n = len(x)
        if self._static_batch is not None and n < self._static_batch:  # pad to the fixed batch
            x = np.concatenate([x, np.zeros((self._static_batch - n, *x.shape[1:]), x.dtype)])
        y = np.asarray(self._get_session().run([self.output], {self.input: x})[0], dtype=np.float32)[:n]
        if self.pooling == "none":
            return y.reshape(n, -1)
        axes = (2, 3) if self.layout == "NCHW" else (1, 2)
        return y.mean(axis=axes) if self.pooling == "avg" else y.max(axis=axes)

    def embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(prepared), self.dim), dtype=np.float32)  # dim resolves the model
        step = self._static_batch or self.batch_size
        for start in range(0, len(prepared), step):
            chunk = np.stack(prepared[start : start + step])
            y = self._forward(chunk)
            if y.shape[1] != self._dim:
                raise UsageError(f"{self.path}: output {self.output!r} gave {y.shape[1]} values, expected {self._dim}")
            out[start : start + len(chunk)] = y
        return l2_normalise(out)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None  # sessions don't pickle; a copy loads its own
        return state
