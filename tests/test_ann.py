"""FAISS structures against exact search, persistence, deletions, neighbours."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from lookalike import Index
from lookalike.ann import AnnIndex, live_bitmap, resolve

from .conftest import DEMO, make_pattern_images


def clustered(n, d, seed=0):
    """Unit vectors around 200 random centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, d)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(ann, x, queries):
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    bitmap = live_bitmap(np.arange(len(x)), len(x))
    _, rows = ann.search_rows(queries, 10, bitmap, 0, x)
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, rows)])


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_recall_at_10_against_exact_on_20k_vectors(kind):
    x = clustered(20_000, 128)
    queries = clustered(200, 128, seed=1)
    ann = AnnIndex.build(kind, "cosine", x)
    assert ann.ntotal == 20_000
    assert recall_at_10(ann, x, queries) >= 0.95


def test_random_uniform_vectors_hnsw():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ann = AnnIndex.build("hnsw", "cosine", x)
    assert recall_at_10(ann, x, x[:200] + 0.01) >= 0.95


def test_dead_rows_are_never_returned():
    x = clustered(5_000, 64)
    ann = AnnIndex.build("hnsw", "cosine", x)
    live = np.arange(0, 5_000, 2)  # every odd row deleted
    _, rows = ann.search_rows(x[:50], 10, live_bitmap(live, 5_000), 2_500, x)
    assert (rows % 2 == 0).all()


def test_binary_indexes_find_exact_matches():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (3_000, 8), dtype=np.uint8)
    for kind in ("exact", "hnsw", "ivfpq"):
        ann = AnnIndex.build(kind, "hamming", x)
        scores, rows = ann.search_rows(x[:20], 1, live_bitmap(np.arange(3_000), 3_000), 0, x)
        assert (rows[:, 0] == np.arange(20)).all() and (scores[:, 0] == 1.0).all(), kind


def test_auto_kind_by_size():
    assert resolve("auto", 10) == "exact"
    assert resolve("auto", 100_000) == "hnsw"
    assert resolve("auto", 10_000_000) == "ivfpq"
    with pytest.raises(ValueError, match="unknown ANN kind"):
        resolve("annoy", 5)


@pytest.mark.parametrize("extractor", ["phash", "cnn"])
def test_index_with_hnsw_matches_exact_and_persists(tmp_path, photos, extractor):
    with Index.create(tmp_path / "idx", extractor=extractor, ann="hnsw") as ix:
        ix.add(photos, jobs=1)
        assert ix.ann_kind() == "hnsw"
        assert (tmp_path / "idx" / "ann.faiss").exists()
        assert ix.store.manifest.files["ann.faiss"] == "ann"
        for q in sorted(DEMO.glob("*.jpg")):
            approx = [(h.path, round(h.score, 4)) for h in ix.search(q, k=3)]
            exact = [(h.path, round(h.score, 4)) for h in ix.search_vectors(ix.embed(q)[None], 3, exact=True)[0]]
            assert approx[0] == exact[0]
    with Index.open(tmp_path / "idx") as ix:
        loaded = ix.update_ann()
        assert loaded.ntotal == 8  # read from ann.faiss, not rebuilt
        assert ix.search(DEMO / "cat.jpg", k=1)[0].path == str(photos / "cat.jpg")


def test_deletions_and_additions_update_without_rebuild(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="cnn", ann="hnsw") as ix:
        ix.add(photos, jobs=1)
        os.remove(photos / "cat.jpg")
        Image.open(DEMO / "cat.jpg").rotate(180).save(photos / "upside-down-cat.jpg")
        ix.add(photos, jobs=1)
        assert ix.update_ann().ntotal == 9  # 8 rows + 1 appended, the dead one kept and filtered
        hits = ix.search(DEMO / "cat.jpg", k=8)
        paths = [h.path for h in hits]
        assert str(photos / "cat.jpg") not in paths
        assert len(paths) == 8 and str(photos / "upside-down-cat.jpg") in paths


def test_reader_catches_up_with_a_writer(tmp_path, photos):
    first = tmp_path / "first"
    first.mkdir()
    for p in sorted(photos.glob("*.jpg"))[:4]:
        shutil.move(p, first / p.name)
    with Index.create(tmp_path / "idx", extractor="phash", ann="hnsw") as writer:
        writer.add(first, jobs=1)
        with Index.open(tmp_path / "idx") as reader:
            assert reader.update_ann().ntotal == 4
            writer.add(photos, jobs=1)
            assert reader.search(DEMO / "rocket.jpg", k=1)[0].path == str(photos / "rocket.jpg")


def test_neighbours_excludes_self_and_finds_copies(tmp_path, photos):
    for p in sorted(DEMO.glob("*.jpg")):
        Image.open(p).convert("RGB").resize((200, 150)).save(photos / f"small-{p.name}", quality=70)
    for kind in ("exact", "hnsw"):
        with Index.create(tmp_path / kind, extractor="cnn", ann=kind) as ix:
            ix.add(photos, jobs=1)
            result = dict(ix.neighbours(k=2))
        assert len(result) == 16
        for path, hits in result.items():
            assert len(hits) == 2 and all(h.path != path for h in hits)
            name = os.path.basename(path)
            twin = name[len("small-"):] if name.startswith("small-") else f"small-{name}"
            assert os.path.basename(hits[0].path) == twin, (kind, path, hits)


def test_neighbours_of_a_larger_collection_in_batches(tmp_path):
    folder = tmp_path / "imgs"
    make_pattern_images(folder, 60, seed=9)
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(folder, jobs=1)
        result = list(ix.neighbours(k=3, batch=7))
    assert len(result) == 60 and all(len(h) == 3 for _, h in result)


def test_large_collections_stay_memory_mapped(tmp_path, photos, monkeypatch):
    import lookalike.index as index_module

    with Index.create(tmp_path / "idx", extractor="cnn") as ix:
        ix.add(photos, jobs=1)
        assert not isinstance(ix.live().matrix, np.memmap)  # small: held as float32 in memory
    monkeypatch.setattr(index_module, "DENSE_LIMIT_BYTES", 1000)  # pretend it is huge
    with Index.open(tmp_path / "idx") as ix:
        matrix = ix.live().matrix
        assert isinstance(matrix, np.memmap) and matrix.dtype == np.float16
        assert ix.search(DEMO / "cat.jpg", k=1)[0].path == str(photos / "cat.jpg")
