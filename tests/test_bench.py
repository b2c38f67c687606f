"""The benchmark's metric functions, and indexing the public benchmark when present."""

import pytest

from bench import metrics
from lookalike import Index


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3: (1/1 + 2/3) / 2
    assert metrics.average_precision(["a", "x", "b", "y"], {"a", "b"}) == pytest.approx(5 / 6)
    assert metrics.average_precision(["x", "y"], {"a"}) == 0.0  # never found
    assert metrics.average_precision(["a"], set()) == 0.0


def test_recall_by_transform_by_hand():
    gt = [("q1", "o1", "crop"), ("q2", "o2", "crop"), ("q3", "o3", "grey")]
    rankings = {"q1": ["o1", "o9"], "q2": ["o9", "o2"], "q3": ["o8"]}
    r = metrics.recall_by_transform(gt, rankings, ks=(1, 2))
    assert r["crop"] == {1: 0.5, 2: 1.0}
    assert r["grey"] == {1: 0.0, 2: 0.0}
    assert r[metrics.OVERALL] == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}


def test_label_queries_and_map():
    labels = {"a": "cat", "b": "cat", "c": "dog"}
    rel = metrics.label_queries(labels)
    assert rel == {"a": {"b"}, "b": {"a"}}  # c is alone in its label
    rankings = {"a": ["a", "c", "b"], "b": ["a", "c"]}
    assert metrics.mean_average_precision(rankings, rel) == pytest.approx((0.5 + 1.0) / 2)


def test_public_benchmark_indexes_cleanly_and_incrementally(bench_dir, tmp_path):
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        first = ix.add(bench_dir / "originals")
        assert first.skipped == 0 and first.added + first.reused == first.seen > 200
        again = ix.add(bench_dir / "originals")
        assert again.processed == 0 and again.unchanged == first.seen


def test_the_photo_bench_decoders_agree_and_the_floor_is_the_fastest(tmp_path):
    """bench/photo_speed.py: every decoder it times gives the picture at the size asked
    for, and the floor is no slower than the slowest of them."""
    import numpy as np
    from PIL import Image

    from bench import photo_speed

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    jpeg = (tmp_path / "p0.jpg").read_bytes()
    for name, way in photo_speed.decoders(100).items():
        pixels = way(jpeg)
        assert min(pixels.shape[:2]) >= 100 and pixels.shape[:2] in ((150, 200), (300, 400)), name
    floor = photo_speed.decode_floor(photo_speed.files_of(tmp_path), 100, tries=1)
    assert 0 < floor["ms"] <= max(floor["by_decoder"].values())
    assert set(floor["by_decoder"]) == {"lookalike"}  # only it reads the PNG too
