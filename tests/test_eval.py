"""`lookalike eval` and lookalike.evaluate: metric functions by hand, both folder layouts, the CLI."""

import inspect
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike import Index
from lookalike.evaluate import (
    OVERALL, EvalReport, LayoutError, average_precision, detect_layout, evaluate, even_sample,
    mean_average_precision, percentile, precision_at, recall_by_transform, without_ignored,
)

from .conftest import DEMO, ODD, make_pattern_images

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


# -- metric functions, worked out by hand ----------------------------------------
def test_average_precision_by_hand():
    # relevant at ranks 2, 3 and 6 of 6: (1/2 + 2/3 + 3/6) / 3
    ranking = ["x", "a", "b", "y", "z", "c"]
    assert average_precision(ranking, {"a", "b", "c"}) == pytest.approx((1 / 2 + 2 / 3 + 3 / 6) / 3)
    # a relevant item missing from the ranking contributes 0: (1/1) / 2
    assert average_precision(["a", "x"], {"a", "gone"}) == pytest.approx(0.5)
    assert average_precision(["a", "b"], {"a", "b"}) == 1.0
    assert average_precision(["a"], set()) == 0.0


def test_precision_recall_map_by_hand():
    assert precision_at(["a", "x", "b", "y"], {"a", "b"}, 1) == 1.0
    assert precision_at(["a", "x", "b", "y"], {"a", "b"}, 2) == 0.5
    assert precision_at(["a", "b"], {"a", "b"}, 5) == pytest.approx(2 / 5)  # divided by k, not by what exists
    gt = [("q1", "o1", "crop"), ("q2", "o2", "crop"), ("q3", "o3", "grey")]
    r = recall_by_transform(gt, {"q1": ["o1"], "q2": ["o9", "o2"]}, ks=(1, 2))  # q3 failed: a miss
    assert r == {"crop": {1: 0.5, 2: 1.0}, "grey": {1: 0.0, 2: 0.0}, OVERALL: {1: 1 / 3, 2: 2 / 3}}
    assert list(r) == ["crop", "grey", OVERALL]
    # the query itself is dropped from its ranking; a query without a ranking scores 0
    relevant = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert mean_average_precision({"a": ["a", "x", "b"], "b": ["a"]}, relevant) == pytest.approx((0.5 + 1 + 0) / 3)
    assert math.isnan(mean_average_precision({}, {}))
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5


def test_even_sample():
    assert even_sample(list(range(10)), 3) == [0, 4, 9]  # round(4.5) -> 4 (banker's rounding)
    assert even_sample([1, 2], None) == [1, 2] and even_sample([1, 2], 5) == [1, 2]
    assert even_sample([1, 2, 3], 1) == [1] and even_sample([1, 2, 3], 0) == []


def test_bench_metrics_module_still_works():
    from bench import metrics

    assert metrics.average_precision is average_precision and metrics.OVERALL == OVERALL


# -- folders ----------------------------------------------------------------------
def _noisy(path: Path, rgb, seed: int, size: int = 48) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.integers(-25, 26, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@pytest.fixture
def benchmark(tmp_path) -> Path:
    """originals = the 8 demo photos + a half-size cat; 6 pattern distractors; 9 queries."""
    root = tmp_path / "bench"
    (root / "originals").mkdir(parents=True)
    (root / "queries").mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, root / "originals" / p.name)
    cat = Image.open(DEMO / "cat.jpg")
    cat.resize((cat.width // 2, cat.height // 2), Image.LANCZOS).save(root / "originals" / "cat_small.jpg", quality=90)
    make_pattern_images(root / "distractors", 6)
    rows = []
    for name in ("astronaut", "brick", "coffee", "rocket"):  # exact copies: found first for certain
        shutil.copy(DEMO / f"{name}.jpg", root / "queries" / f"copy_{name}.jpg")
        rows.append((f"queries/copy_{name}.jpg", f"originals/{name}.jpg", "copy"))
    for name in ("camera", "hubble", "retina", "rocket"):
        ImageOps.grayscale(Image.open(DEMO / f"{name}.jpg")).convert("RGB").save(root / "queries" / f"grey_{name}.jpg")
        rows.append((f"queries/grey_{name}.jpg", f"originals/{name}.jpg", "grey"))
    shutil.copy(ODD / "text.jpg", root / "queries" / "broken.jpg")  # not an image: a failed query, a miss
    rows.append(("queries/broken.jpg", "originals/cat.jpg", "broken"))
    (root / "ground_truth.csv").write_text("query,original,transform\n" + "".join(f"{q},{o},{t}\n" for q, o, t in rows))
    # the two cats rank each other first, so mAP is exactly 1; "alone" has one file: not a query
    (root / "labels.csv").write_text("file,label\noriginals/cat.jpg,cat\noriginals/cat_small.jpg,cat\n"
                                     "originals/rocket.jpg,alone\n")
    return root


@pytest.fixture
def classes(tmp_path) -> Path:
    """red/ and blue/ with 3 noisy images each (plus a broken file in red/), green/ with one, one loose file."""
    root = tmp_path / "classes"
    for name, rgb in (("red", (200, 30, 30)), ("blue", (30, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            _noisy(root / name / f"{name}{i}.jpg", rgb, seed=i + (10 if name == "blue" else 0))
    shutil.copy(ODD / "text.jpg", root / "red" / "broken.jpg")
    (root / "green").mkdir()
    _noisy(root / "green" / "green0.jpg", (30, 200, 40), seed=20)
    _noisy(root / "loose.jpg", (128, 128, 128), seed=30)
    (root / "empty").mkdir()  # a subfolder without images is not a class
    return root


# -- benchmark layout ---------------------------------------------------------------
def test_benchmark_layout_phash(benchmark, tmp_path):
    seen = []
    report = evaluate(benchmark, "phash", index=tmp_path / "idx", jobs=1,
                      progress=lambda stage, done, total: seen.append(stage))
    assert report.layout == "benchmark" and report.extractor["name"] == "phash"
    assert report.gallery == 9 + 6 and report.skipped == 0
    assert report.queries == 9 and report.query_errors == 1 and "not_an_image" in report.error_examples[0]
    assert report.recall["copy"] == {"R@1": 1.0, "R@10": 1.0}
    assert report.recall["broken"] == {"R@1": 0.0, "R@10": 0.0}
    assert list(report.recall)[-1] == OVERALL
    assert report.recall[OVERALL]["R@1"] == pytest.approx((4 + 4 * report.recall["grey"]["R@1"]) / 9)
    assert report.map == 1.0 and report.map_queries == 2 and report.ap_by_class == {"cat": 1.0}
    assert report.timing["embedded"] == 15 and report.timing["index_images_per_s"] > 0
    assert report.timing["query_ms"] > 0 and report.timing["search_ms"] > 0
    assert {"index originals", "index distractors", "queries", "mAP"} <= set(seen)

    # the same index again: nothing is embedded, the numbers are the same
    again = evaluate(benchmark, index=tmp_path / "idx", jobs=1)
    assert again.timing["embedded"] == 0 and again.timing["index_images_per_s"] is None
    assert again.recall == report.recall and again.map == report.map
    assert again.index_path == str(tmp_path / "idx")
    assert "index reused" in again.to_text()

    quick = evaluate(benchmark, "phash", limit=2, jobs=1)
    assert quick.queries == 2 and quick.map_queries == 2 and quick.index_path is None


def test_without_ignored_by_hand():
    rankings = {"q1": ["bg", "o1", "x"], "q2": ["o2", "bg"]}
    assert without_ignored(rankings, {"q1": {"bg"}}) == {"q1": ["o1", "x"], "q2": ["o2", "bg"]}
    assert without_ignored(rankings, {}) == rankings


def test_ignore_column_leaves_the_background_out(benchmark):
    # the query is cat.jpg itself; its "original" is the half-size cat. Unless
    # cat.jpg is ignored for this query it ranks first and the query is a miss.
    shutil.copy(DEMO / "cat.jpg", benchmark / "queries" / "pasted.jpg")
    rows = "query,original,transform,ignore\nqueries/pasted.jpg,originals/cat_small.jpg,pasted,{}\n"
    (benchmark / "ground_truth.csv").write_text(rows.format(""))
    assert evaluate(benchmark, "phash", jobs=1).recall["pasted"]["R@1"] == 0.0
    (benchmark / "ground_truth.csv").write_text(rows.format("originals/cat.jpg;distractors/none.png"))
    assert evaluate(benchmark, "phash", jobs=1).recall["pasted"]["R@1"] == 1.0


def test_benchmark_without_labels(benchmark):
    (benchmark / "labels.csv").unlink()
    report = evaluate(benchmark, "phash", ks=[1, 3], jobs=1)
    assert report.map is None and any("labels.csv" in n for n in report.notes)
    assert set(report.recall["copy"]) == {"R@1", "R@3"}
    d = report.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN anywhere
    assert d["map"] is None and d["ks"] == [1, 3]


# -- class-per-subfolder layout --------------------------------------------------------
def test_class_layout_separable_classes(classes):
    report = evaluate(classes, "color", jobs=1)
    assert report.layout == "classes"
    assert report.class_sizes == {"blue": 3, "green": 1, "red": 4}
    assert report.gallery == 3 + 3 + 1 + 1 and report.skipped == 1  # broken.jpg is not indexed
    assert report.queries == 7 and report.query_errors == 1  # red's 4 files (one broken) + blue's 3
    assert report.map == 1.0 and report.map_queries == 6
    assert report.ap_by_class == {"blue": 1.0, "red": 1.0}
    for c in ("blue", "red", OVERALL):  # two other members each: P@1 = 1, P@5 = 2/5, P@10 = 2/10
        assert report.precision[c] == pytest.approx({"queries": 3 if c != OVERALL else 6,
                                                      "P@1": 1.0, "P@5": 0.4, "P@10": 0.2})
    assert any("green" in n for n in report.notes) and any("loose" not in n and "1 images directly" in n
                                                           for n in report.notes)
    text = report.to_text()
    assert "classes layout" in text and "P@5" in text
    assert any(line.split()[:4] == ["red", "4", "3", "1.000"] for line in text.splitlines())


def test_class_layout_cnn(tmp_path):
    root = tmp_path / "photos"
    for name in ("cat", "rocket", "coffee"):
        (root / name).mkdir(parents=True)
        im = Image.open(DEMO / f"{name}.jpg")
        im.save(root / name / "a.jpg")
        ImageOps.mirror(im).save(root / name / "b.jpg")
        w, h = im.size
        im.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(root / name / "c.jpg")
    report = evaluate(root, "cnn", ks=[1, 2], jobs=1)
    assert report.map == 1.0 and report.precision[OVERALL]["P@2"] == 1.0
    assert report.queries == 9 and report.extractor["name"] == "cnn"


def test_neither_layout_is_a_clear_error(tmp_path):
    one = tmp_path / "one"
    make_pattern_images(one / "only", 3)
    make_pattern_images(one, 2, seed=1)
    with pytest.raises(LayoutError, match="ground_truth.csv") as e:
        detect_layout(one)
    assert "subfolder per class" in str(e.value) and "found 1 subfolder with images" in str(e.value)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "ground_truth.csv").write_text("query,original,transform\n")
    with pytest.raises(LayoutError, match="no originals/"):
        evaluate(tmp_path / "gt")
    with pytest.raises(FileNotFoundError):
        evaluate(tmp_path / "missing")


# -- search options and index-like objects --------------------------------------------
class Wrapped:
    """An index-like object: what `evaluate` needs (add, search_many, extractor, len), nothing more."""

    def __init__(self, index: Index, accepts_verify: bool):
        self.index, self.extractor, self.calls = index, index.extractor, []
        if accepts_verify:
            def search_many(queries, k=10, *, verify=None):
                self.calls.append(verify)
                return self.index.search_many(queries, k)
        else:
            def search_many(queries, k=10):
                self.calls.append(None)
                return self.index.search_many(queries, k)
        self.search_many = search_many

    def add(self, folder, **kw):
        return self.index.add(folder, **kw)

    def __len__(self):
        return len(self.index)


def test_search_options_are_passed_only_when_given(classes, tmp_path):
    with Index.create(tmp_path / "idx", extractor="color") as ix:
        wrapped = Wrapped(ix, accepts_verify=True)
        report = evaluate(classes, index=wrapped, search_options={"verify": True}, jobs=1)
        assert report.search_options == {"verify": True} and set(wrapped.calls) == {True}
        assert report.map == 1.0 and report.index_path is None  # no `path` attribute: nothing to report
        plain = Wrapped(ix, accepts_verify=False)
        assert evaluate(classes, index=plain, jobs=1).map == 1.0  # no options: none passed
        with pytest.raises(ValueError, match="does not support verify"):
            evaluate(classes, index=plain, search_options={"verify": False}, jobs=1)


def test_real_index_accepts_the_options_it_declares(classes):
    """Whatever keywords Index.search_many takes today pass through evaluate unchanged."""
    params = inspect.signature(Index.search_many).parameters
    for name in ("verify", "augment"):
        if name in params:
            report = evaluate(classes, "color", search_options={name: False}, jobs=1)
            assert report.search_options == {name: False} and report.map == 1.0
        else:
            with pytest.raises(ValueError, match=f"does not support {name}"):
                evaluate(classes, "color", search_options={name: False}, jobs=1)


# -- the CLI ---------------------------------------------------------------------------
def run(*args):
    return subprocess.run([*LOOKALIKE, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_eval_json_and_text(classes, tmp_path):
    out = run("eval", classes, "-e", "color", "--k", "1", "--k", "2", "--json", "-j", "1")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["layout"] == "classes" and d["extractor"]["name"] == "color" and d["ks"] == [1, 2]
    assert d["map"] == 1.0 and d["precision"]["overall"]["P@2"] == 1.0
    assert d["search_options"] == {} and d["timing"]["index_images_per_s"] > 0
    assert set(d) >= {"gallery", "queries", "query_errors", "recall", "ap_by_class", "class_sizes", "notes"}

    text = run("eval", classes, "-e", "color", "--index", tmp_path / "idx", "-q", "-j", "1")
    assert text.returncode == 0, text.stderr
    assert "classes layout" in text.stdout and "overall" in text.stdout and "P@10" in text.stdout
    assert (tmp_path / "idx" / "manifest.json").exists()
    mismatch = run("eval", classes, "-e", "phash", "--index", tmp_path / "idx", "-q")
    assert mismatch.returncode == 1 and "different extractor" in mismatch.stderr


def test_cli_eval_neither_layout(tmp_path):
    make_pattern_images(tmp_path / "flat", 3)
    out = run("eval", tmp_path / "flat", "-e", "phash")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "ground_truth.csv" in out.stderr and "subfolder per class" in out.stderr
    assert out.stdout == ""


def test_report_is_a_dataclass_with_to_dict():
    report = EvalReport(folder="f", layout="classes", extractor={"name": "x"}, search_options={}, ks=[1],
                        index_path=None, gallery=0, skipped=0, queries=0, query_errors=0, map=float("nan"))
    assert report.to_dict()["map"] is None and "n/a" in report.to_text()


def test_quality_script_uses_evaluate(benchmark, capsys):
    from bench import quality

    assert quality.config_label("cnn", {"verify": True, "augment": False}) == "cnn + verify + no augment"
    assert quality.main(["--bench", str(benchmark), "--extractor", "phash", "--json", "--jobs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["results"]
    assert row["extractor"] == "phash" and row["recall"]["copy"] == {"R@1": 1.0, "R@10": 1.0}
    assert row["map"] == {"map": 1.0, "queries": 2, "labels": 1}
    assert row["index"]["files"] == 15 and row["query"]["count"] == 9 and row["query"]["errors"] == 1
