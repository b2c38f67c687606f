"""Every VectorSearch implementation against the exact reference: recall, dead rows,
and the same answers after save and load (as hnswlib's recall test does)."""

import numpy as np
import pytest

from lookalike.ann import AnnIndex
from lookalike.search import ExactSearch, LiveSet, VectorSearch

from .conftest import make_pattern_images


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def snapshot(matrix: np.ndarray, live_rows: np.ndarray) -> LiveSet:
    """A snapshot whose files use ``live_rows`` (ids = row + 1000, paths in row order)."""
    rows = np.asarray(live_rows, np.int64)
    return LiveSet(rows + 1000, [f"/f/{r:06d}" for r in rows], rows, matrix)


def recall(engine: VectorSearch, reference: VectorSearch, queries: np.ndarray, k: int = 10) -> float:
    _, got = engine.search(queries, k)
    _, want = reference.search(queries, k)
    return float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want)]))


@pytest.mark.parametrize("kind,floor", [("exact", 1.0), ("hnsw", 0.95), ("ivfpq", 0.9)])
def test_faiss_recall_against_exact_also_after_save_and_load(tmp_path, kind, floor):
    x = clustered(4000, 64)
    live = snapshot(x, np.arange(len(x)))
    exact = ExactSearch(live, "cosine", 64)
    ann = AnnIndex.build(kind, "cosine", x)
    ann.update(live)
    q = x[:200] + 0.05 * np.random.default_rng(1).standard_normal((200, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)  # unit queries, as the extractors make them
    assert recall(ann, exact, q) >= floor
    before = ann.search(q, 10)
    ann.save(str(tmp_path), x, "index-1")
    loaded = AnnIndex.load(str(tmp_path), kind, "cosine", x, "index-1")
    loaded.update(live)
    after = loaded.search(q, 10)
    assert np.array_equal(before[1], after[1]) and np.allclose(before[0], after[0])


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_binary_structures_against_exact(kind):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    live = snapshot(x, np.arange(len(x)))
    exact = ExactSearch(live, "hamming", 64)
    ann = AnnIndex.build(kind, "hamming", x)
    ann.update(live)
    scores, ids = ann.search(x[:50], 1)
    assert (ids[:, 0] == live.ids[:50]).all() and np.allclose(scores[:, 0], 1.0)  # each finds itself
    assert recall(ann, exact, x[:50], 5) >= (1.0 if kind == "exact" else 0.5)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_dead_rows_are_never_returned(kind):
    x = clustered(3000, 32, seed=3)
    live = snapshot(x, np.arange(0, len(x), 2))  # every odd row: no file uses it any more
    ann = AnnIndex.build(kind, "cosine", x)
    ann.update(live)
    _, ids = ann.search(x[1:200:2], 10)
    found = ids[ids >= 0] - 1000
    assert len(found) and (found % 2 == 0).all()
    assert recall(ann, ExactSearch(live, "cosine", 32), x[1:200:2]) >= (1.0 if kind == "exact" else 0.85)


def test_rows_added_later_are_searchable():
    x = clustered(2000, 32, seed=4)
    ann = AnnIndex.build("hnsw", "cosine", x[:1500])
    assert ann.update(snapshot(x, np.arange(len(x))))  # it grew
    _, ids = ann.search(x[1500:1600], 1)
    assert (ids[:, 0] == np.arange(1500, 1600) + 1000).mean() >= 0.95


def test_copies_sharing_a_row_are_all_hits_ties_by_path():
    x = clustered(100, 16, seed=5)
    rows = np.array([7, 7, 7] + list(range(8, 50)), np.int64)  # three files share row 7
    live = LiveSet(np.arange(len(rows)) + 1, sorted(f"/p/{i:03d}" for i in range(len(rows))), rows, x)
    ann = AnnIndex.build("hnsw", "cosine", x)
    ann.update(live)
    for engine in (ann, ExactSearch(live, "cosine", 16)):
        hits = engine.hits(x[7:8], 3)[0]
        assert [h.path for h in hits] == ["/p/000", "/p/001", "/p/002"]


def test_milvus_lite_search_matches_exact(tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from lookalike.backends import create_index
    from lookalike.backends.milvus import MilvusSearch

    folder = tmp_path / "imgs"
    make_pattern_images(folder, 40)
    with create_index(str(tmp_path / "m.db"), "phash", local=str(tmp_path / "local")) as ix:
        ix.add(folder, jobs=1)
        engine = ix.vector_search()
        assert isinstance(engine, MilvusSearch) and engine.kind.startswith("milvus")
        vectors = np.asarray(ix.live().matrix[ix.live().rows[:10]])
        assert recall(engine, ix.vector_search(exact=True), vectors, 5) == 1.0
        _, ids = engine.search(vectors, 1)
        assert list(ids[:, 0]) == list(ix.live().ids[:10])


def test_copies_first_by_hand():
    from lookalike.search import SearchResult, copies_first

    hits = [SearchResult(1, "a", 0.9, 1, copy_score=0.1), SearchResult(2, "b", 0.8, 2, copy_score=0.7),
            SearchResult(3, "c", 0.7, 3), SearchResult(4, "d", 0.6, 4, copy_score=0.5),
            SearchResult(5, "e", 0.5, 5, copy_score=0.5)]
    ordered = copies_first(hits, 0.5)
    # copies (b 0.7, then d and e tied at 0.5, by path), then the rest in their given order
    assert [h.path for h in ordered] == ["b", "d", "e", "a", "c"]
    assert [h.rank for h in ordered] == [1, 2, 3, 4, 5]
    assert [h.path for h in copies_first(hits, 0.9)] == ["a", "b", "c", "d", "e"]  # no copy: order kept


def test_copy_paths_take_a_view_s_best_hit_only_when_it_stands_out():
    from lookalike.search import SearchResult, copies_first, copy_paths

    def view(*scores):
        return [SearchResult(i + 1, p, 0.5, i, copy_score=c) for i, (p, c) in enumerate(scores)]

    ahead = view(("x", 0.30), ("y", 0.05), ("z", 0.02))  # under the threshold, far ahead of the rest
    crowd = view(("u", 0.30), ("v", 0.27), ("w", 0.25))  # as high, but among equals
    low = view(("p", 0.12), ("q", -0.2))  # far ahead, under the floor
    strict = view(("s", 0.6), ("t", 0.55))  # both over the threshold
    rule = (0.2, 0.1)
    assert copy_paths([ahead, crowd, low, strict], 0.5) == {"s", "t"}
    assert copy_paths([ahead, crowd, low, strict], 0.5, rule) == {"x", "s", "t"}
    assert copy_paths([view(("x", 0.9))], 0.95, rule) == set()  # one hit: nothing to stand out from
    merged = ahead + crowd
    ordered = copies_first(merged, 0.5, copy_paths([ahead, crowd], 0.5, rule))
    assert ordered[0].path == "x" and [h.rank for h in ordered] == list(range(1, 7))


def test_rectangles_find_a_picture_pasted_on_a_page():
    from lookalike.regions import rectangles

    rng = np.random.default_rng(3)
    page = np.full((480, 640, 3), 235, np.uint8)
    page[100:300, 200:460] = rng.integers(0, 255, (200, 260, 3), dtype=np.uint8)  # the picture
    boxes = rectangles(page)
    assert boxes and max(_iou(b, (200, 100, 260, 200)) for b in boxes) > 0.9
    assert rectangles(np.full((200, 300, 3), 128, np.uint8)) == []  # a flat image outlines nothing
    noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert all(w * h < 0.9 * 240 * 320 for _, _, w, h in rectangles(noise))


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)
