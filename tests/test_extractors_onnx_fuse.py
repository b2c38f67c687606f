import hashlib
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike import decode
from lookalike.cli import main
from lookalike.extractors import UnknownExtractor, create
from lookalike.extractors.cnn import MODEL_PATH
from lookalike.extractors.registry import parse
from lookalike.index import Index

from .conftest import DATA, DEMO, ODD

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

CAT = DEMO / "cat.jpg"
CNN_LIKE = {"mean": [127, 127, 127], "std": [128, 128, 128], "output": "feature_map", "pooling": "avg"}


def pixels(path):
    return decode.decode_file(path).pixels


def demo_images():
    return [pixels(p) for p in sorted(DEMO.glob("*.jpg"))]


def save_model(path, nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "tiny", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def nhwc_model(tmp_path):
    """NHWC float input ``pixels`` (N, 16, 16, 3); outputs ``fmap`` = Relu(x), 4-D NHWC,
    and ``embedding`` = mean over H, W, 2-D (N, 3)."""
    return save_model(
        tmp_path / "nhwc.onnx",
        [
            helper.make_node("Relu", ["pixels"], ["fmap"]),
            helper.make_node("ReduceMean", ["pixels"], ["embedding"], axes=[1, 2], keepdims=0),
        ],
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 16, 16, 3])],
        [
            helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["batch", 16, 16, 3]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3]),
        ],
    )


@pytest.fixture
def dynamic_model(tmp_path):
    """NCHW input of any size -> GlobalAveragePool (N, 3, 1, 1), shape left unknown."""
    return save_model(
        tmp_path / "gap.onnx",
        [helper.make_node("GlobalAveragePool", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "one", "one"])],
    )


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# -- onnx ---------------------------------------------------------------------
def test_onnx_with_the_shipped_model_equals_cnn():
    ext = create({"name": "onnx", "path": str(MODEL_PATH), **CNN_LIKE}, threads=2)
    assert (ext.dim, ext.dtype, ext.metric, ext.min_side) == (1280, "float32", "cosine", 224)
    imgs = demo_images() + [pixels(ODD / "tall_thin.png")]
    ours, cnn = ext.embed(imgs), create("cnn", threads=2).embed(imgs)
    assert ours.shape == cnn.shape == (len(imgs), 1280)
    assert (np.sum(ours * cnn, axis=1) >= 0.9999).all()
    golden = np.load(DATA / "golden_cnn_cat.npy")
    assert float(ext.embed([pixels(CAT)])[0] @ golden) >= 0.999


def test_onnx_spec_pins_the_model_and_round_trips():
    ext = create("onnx:" + str(MODEL_PATH))
    spec = ext.spec()
    assert spec["name"] == "onnx" and spec["path"] == str(MODEL_PATH)
    assert spec["sha256"] == hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert (spec["input"], spec["output"], spec["pooling"], spec["input_size"]) == ("input", "feature_map", "avg", 224)
    assert spec["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert spec["std"] == pytest.approx([58.395, 57.12, 57.375])
    assert (spec["layout"], spec["resize"]) == ("NCHW", "shorter-side-centre-crop")
    again = create(json.loads(json.dumps(spec)))
    assert again.spec() == spec
    assert again._session is None  # a full spec (e.g. in a worker) does not load the model to prepare
    assert again.prepare(pixels(CAT)).shape == (224, 224, 3)
    assert again.dim == 1280


def test_onnx_changed_model_file_is_refused(tmp_path):
    copy = tmp_path / "model.onnx"
    shutil.copy(MODEL_PATH, copy)
    spec = create(f"onnx:{copy}").spec()
    create(spec)  # unchanged: fine
    with open(copy, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"model\.onnx changed"):
        create(spec)
    create({k: v for k, v in spec.items() if k != "sha256"})  # a new spec pins the new file


def test_onnx_missing_or_bad_file_names_the_path(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n")
    with pytest.raises(ValueError, match="notes.onnx is not a loadable ONNX model"):
        create(f"onnx:{bad}")
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        create(f"onnx:{tmp_path / 'nowhere.onnx'}")
    with pytest.raises(ValueError, match="needs the model file"):
        create({"name": "onnx"})
    with pytest.raises(ValueError, match="unknown onnx extractor settings: colour"):
        create({"name": "onnx", "path": str(MODEL_PATH), "colour": 1})


def test_onnx_nhwc_model_with_named_2d_output(nhwc_model):
    ext = create({"name": "onnx", "path": str(nhwc_model), "layout": "NHWC", "output": "embedding",
                  "mean": [0, 0, 0], "std": [1, 1, 1]})
    spec = ext.spec()
    assert (spec["input"], spec["output"], spec["pooling"], spec["input_size"]) == ("pixels", "embedding", "none", 16)
    assert ext.dim == 3
    imgs = [pixels(CAT), pixels(ODD / "tall_thin.png"), np.full((40, 30, 3), (10, 200, 30), np.uint8)]
    got = ext.embed(imgs)
    small = [ext.prepare(im) for im in imgs]
    assert small[0].shape == (16, 16, 3)
    want = unit([s.reshape(-1, 3).astype(np.float64).mean(axis=0) for s in small])
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got[2] - unit([10, 200, 30])).max() < 1e-5  # a flat image is its own colour
    assert create(spec).embed(imgs) == pytest.approx(got, abs=1e-6)


def test_onnx_nhwc_4d_output_pools_over_its_spatial_axes(nhwc_model):
    base = {"name": "onnx", "path": str(nhwc_model), "layout": "NHWC", "mean": [128] * 3, "std": [64] * 3}
    ext = create({**base, "pooling": "max"})  # default output: the first, fmap
    assert ext.spec()["output"] == "fmap" and ext.dim == 3
    img = pixels(CAT)
    x = np.maximum((ext.prepare(img).astype(np.float64) - 128) / 64, 0)
    assert ext.embed([img])[0] == pytest.approx(unit(x.max(axis=(0, 1))), abs=1e-5)
    avg = create(base)  # a 4-D output pools with avg by default
    assert avg.spec()["pooling"] == "avg"
    assert avg.embed([img])[0] == pytest.approx(unit(x.mean(axis=(0, 1))), abs=1e-5)
    flat = create({**base, "pooling": "none"})  # none flattens a 4-D output
    assert flat.dim == 16 * 16 * 3


def test_onnx_settings_are_checked_against_the_model(nhwc_model):
    with pytest.raises(ValueError, match="not 3 colour channels in layout NCHW .is the model NHWC"):
        create(f"onnx:{nhwc_model}")
    nhwc = {"name": "onnx", "path": str(nhwc_model), "layout": "NHWC"}
    with pytest.raises(ValueError, match="no output named 'logits'; its outputs: fmap, embedding"):
        create({**nhwc, "output": "logits"})
    with pytest.raises(ValueError, match="no input named 'image'; its inputs: pixels"):
        create({**nhwc, "input": "image"})
    with pytest.raises(ValueError, match='pooling .avg. needs a 4-D feature map, use pooling "none"'):
        create({**nhwc, "output": "embedding", "pooling": "avg"})
    with pytest.raises(ValueError, match="takes 16x16 images, input_size asks for 224x224"):
        create({**nhwc, "input_size": 224})
    for bad in ({"layout": "CHW"}, {"resize": "pad"}, {"pooling": "sum"}, {"mean": [1, 2]}, {"std": [1, 0, 1]}):
        with pytest.raises(ValueError):
            create({**nhwc, **bad})


def test_onnx_dynamic_output_shape_runs_once_and_stretches(dynamic_model):
    ext = create({"name": "onnx", "path": str(dynamic_model), "input_size": [8, 12], "resize": "stretch",
                  "mean": [0, 0, 0], "std": [255, 255, 255]})
    assert ext.dim == 3 and ext.min_side == 12
    spec = ext.spec()
    assert (spec["input"], spec["output"], spec["pooling"], spec["input_size"]) == ("x", "y", "avg", [8, 12])
    img = pixels(CAT)
    small = ext.prepare(img)
    assert small.shape == (8, 12, 3)
    assert np.array_equal(small, cv2.resize(img, (12, 8), interpolation=cv2.INTER_AREA))
    assert ext.embed([img])[0] == pytest.approx(unit(small.reshape(-1, 3).mean(axis=0)), abs=1e-5)
    crop = create({**spec, "resize": "shorter-side-centre-crop"})
    assert crop.prepare(np.zeros((100, 300, 3), np.uint8)).shape == (8, 12, 3)
    assert crop.prepare(np.zeros((300, 100, 3), np.uint8)).shape == (8, 12, 3)
    clone = create(ext.spec())  # what a decoding worker does; it loads its own session
    assert clone.embed([img]) == pytest.approx(ext.embed([img]), abs=1e-6)


# -- fuse ---------------------------------------------------------------------
def part_similarities(a, b):
    cnn, ph = create("cnn"), create("phash")
    c = cnn.embed([a, b])
    h = ph.embed([a, b])
    ham = int(np.unpackbits(h[0] ^ h[1]).sum())
    return float(c[0] @ c[1]), 1 - 2 * ham / 64


@pytest.mark.parametrize("text, w_cnn", [("fuse:cnn+phash", 1.0), ("fuse:cnn*3+phash", 3.0)])
def test_fuse_similarity_is_the_weighted_mean_of_the_parts(text, w_cnn):
    ext = create(text)
    assert (ext.dim, ext.row_width, ext.dtype, ext.metric, ext.min_side) == (1280 + 64, 1344, "float32", "cosine", 224)
    cat = pixels(CAT)
    pairs = [(cat, pixels(DEMO / "coffee.jpg")), (cat, np.asarray(Image.fromarray(cat).rotate(3)))]
    for a, b in pairs:
        v = ext.embed([a, b])
        assert v.dtype == np.float32 and v.shape == (2, 1344)
        assert np.linalg.norm(v, axis=1) == pytest.approx([1, 1], abs=1e-5)
        s_cnn, s_ph = part_similarities(a, b)
        assert float(v[0] @ v[1]) == pytest.approx((w_cnn * s_cnn + s_ph) / (w_cnn + 1), abs=1e-5)


def test_fuse_spec_round_trip_and_interface():
    ext = create("fuse:cnn*3+phash")
    spec = ext.spec()
    assert spec["name"] == "fuse"
    assert [p["weight"] for p in spec["parts"]] == [3.0, 1.0]
    assert spec["parts"][0]["extractor"] == create("cnn").spec()
    assert spec["parts"][1]["extractor"] == create("phash").spec()
    again = create(json.loads(json.dumps(spec)))
    assert again.spec() == spec
    imgs = [pixels(CAT), pixels(ODD / "one_pixel.png")]
    prepared = ext.prepare(imgs[0])
    assert isinstance(prepared, tuple) and len(prepared) == 2
    assert again.embed(imgs) == pytest.approx(ext.embed(imgs), abs=1e-6)
    assert ext.embed([]).shape == (0, 1344)
    hashes = create("fuse:phash+phash*1")  # two Hamming parts: cosine = 1 - 2 * hamming / bits
    v = hashes.embed(imgs)
    h = create("phash").embed(imgs)
    assert float(v[0] @ v[1]) == pytest.approx(1 - 2 * np.unpackbits(h[0] ^ h[1]).sum() / 64, abs=1e-6)


def test_fuse_rejects_bad_parts():
    with pytest.raises(UnknownExtractor, match="unknown extractor 'nope'"):
        create("fuse:cnn+nope")
    with pytest.raises(ValueError, match="weight must be positive"):
        create("fuse:cnn*0+phash")
    with pytest.raises(ValueError, match="needs parts"):
        create({"name": "fuse"})
    with pytest.raises(ValueError, match="list of parts"):
        create({"name": "fuse", "parts": []})


def test_fuse_index_end_to_end(tmp_path, photos):
    with Index.create(tmp_path / "ix", "fuse:cnn+phash") as ix:
        report = ix.add(photos, jobs=2)  # prepared tuples cross from real worker processes
        assert report.added == len(list(DEMO.glob("*.jpg")))
        cat = pixels(CAT)
        h, w = cat.shape[:2]
        edited = np.asarray(Image.fromarray(cat[h // 20 : h - h // 20, w // 20 :]).resize((w // 3, h // 3)))
        hits = ix.search(edited, k=3)
        assert os.path.basename(hits[0].path) == "cat.jpg"
        assert hits[0].score > hits[1].score
        spec = ix.store.manifest.extractor
    with Index.open(tmp_path / "ix", "fuse:cnn+phash") as ix:  # the same short form matches the manifest
        assert ix.extractor.spec() == spec
        assert os.path.basename(ix.search(photos / "cat.jpg", k=1)[0].path) == "cat.jpg"


# -- parse and the CLI --------------------------------------------------------
def test_parse_short_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse("cnn") == {"name": "cnn"}
    assert parse(' {"name": "phash", "hash_size": 16} ') == {"name": "phash", "hash_size": 16}
    assert parse("onnx:models/m.onnx") == {"name": "onnx", "path": str(tmp_path / "models" / "m.onnx")}
    assert parse("onnx:/abs/m.onnx") == {"name": "onnx", "path": os.path.abspath("/abs/m.onnx")}
    assert parse("fuse:cnn+color") == {
        "name": "fuse",
        "parts": [{"extractor": {"name": "cnn"}, "weight": 1.0}, {"extractor": {"name": "color"}, "weight": 1.0}],
    }
    assert parse("fuse:cnn*2+phash") == {
        "name": "fuse",
        "parts": [{"extractor": {"name": "cnn"}, "weight": 2.0}, {"extractor": {"name": "phash"}, "weight": 1.0}],
    }
    assert parse("fuse: cnn * 0.5 + onnx:m.onnx*2") == {
        "name": "fuse",
        "parts": [
            {"extractor": {"name": "cnn"}, "weight": 0.5},
            {"extractor": {"name": "onnx", "path": str(tmp_path / "m.onnx")}, "weight": 2.0},
        ],
    }
    for bad in ("fuse:", "fuse:cnn+", "onnx:"):
        with pytest.raises(UnknownExtractor):
            parse(bad)
    with pytest.raises(UnknownExtractor, match="cnn"):
        create("nope")


def test_create_accepts_an_onnx_part_in_fuse():
    ext = create(f"fuse:onnx:{MODEL_PATH}*2+phash")
    assert ext.dim == 1344
    assert ext.spec()["parts"][0]["extractor"]["sha256"] == hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()


def test_cli_extractors_lists_the_ones_that_need_settings():
    runner = CliRunner()
    res = runner.invoke(main, ["extractors"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines()}
    assert "onnx:PATH" in lines["onnx"] and " -  " in lines["onnx"]
    assert "fuse:A+B" in lines["fuse"]
    assert "1280-d" in lines["cnn"]
    res = runner.invoke(main, ["extractors", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["onnx"]["dim"] is None and rows["onnx"]["spec"] is None
    assert rows["onnx"]["metric"] == "cosine" and rows["fuse"]["dtype"] == "float32"
    assert rows["cnn"]["dim"] == 1280


def test_fuse_rank_setting():
    from lookalike.errors import UsageError

    plain = create("fuse:phash+color")
    assert plain.rank == "mean" and "rank" not in plain.spec() and not plain.copies_first
    assert plain.copy_vectors(np.zeros((1, plain.dim), np.float32)) is None  # no part has a copy score
    with pytest.raises(UsageError, match="copies-first.*needs a part with a copy score"):
        create({"name": "fuse", "parts": ["phash", "color"], "rank": "copies-first"})
    with pytest.raises(UsageError, match="rank must be one of mean, copies-first"):
        create({"name": "fuse", "parts": ["phash", "color"], "rank": "best"})
    assert parse("default")["name"] in ("cnn", "fuse")  # the best installed default
