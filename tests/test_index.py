import os
import shutil

import numpy as np
import pytest
from PIL import Image

from lookalike import ExtractorMismatch, Index, NotAnIndex, QueryError, SkipReason
from lookalike.store import IndexLocked

from .conftest import DEMO, ODD, edit_photos, make_pattern_images


@pytest.fixture
def cnn_index(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="cnn") as ix:
        report = ix.add(photos, jobs=1)
        assert report.added == 8
        yield ix


def test_search_finds_the_same_image_first(cnn_index, photos):
    hits = cnn_index.search(DEMO / "coffee.jpg", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].path == str(photos / "coffee.jpg")
    assert hits[0].score > 0.999
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_search_finds_an_edited_copy(cnn_index, photos, tmp_path):
    img = Image.open(DEMO / "rocket.jpg").convert("L").rotate(8, expand=True)
    q = tmp_path / "query.jpg"
    img.save(q, quality=40)
    assert cnn_index.search(q, k=1)[0].path == str(photos / "rocket.jpg")
    arr = np.asarray(Image.open(q).convert("RGB"))
    assert cnn_index.search(arr, k=1)[0].path == str(photos / "rocket.jpg")


def test_k_larger_than_index_returns_everything(cnn_index):
    hits = cnn_index.search(DEMO / "cat.jpg", k=100)
    assert len(hits) == 8 == len(cnn_index)
    assert len(cnn_index.search(DEMO / "cat.jpg", k=None)) == 8


def test_indexed_path_query_uses_stored_vector(cnn_index, photos):
    hits = cnn_index.search(photos / "cat.jpg", k=1)
    assert hits[0].path == str(photos / "cat.jpg")
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # stored as float16
    for p in sorted(photos.glob("*.jpg")):  # some float16-rounded vectors have norm > 1
        assert all(-1.0 <= h.score <= 1.0 for h in cnn_index.search(p, k=None))


def test_float16_storage_by_default_float32_on_request(tmp_path, photos):
    with Index.create(tmp_path / "a", extractor="cnn") as half, \
            Index.create(tmp_path / "b", extractor="cnn", storage="float32") as full:
        half.add(photos, jobs=1)
        full.add(photos, jobs=1)
        assert half.store.manifest.dtype == "float16" and full.store.manifest.dtype == "float32"
        assert (tmp_path / "a" / "vectors.bin").stat().st_size * 2 == (tmp_path / "b" / "vectors.bin").stat().st_size
        assert full.search(photos / "cat.jpg", k=1)[0].score == pytest.approx(1.0, abs=1e-6)
        for q in sorted(DEMO.glob("*.jpg")):
            a = [(h.path, h.score) for h in half.search(q, k=8)]
            b = [(h.path, h.score) for h in full.search(q, k=8)]
            assert [p for p, _ in a] == [p for p, _ in b]
            assert max(abs(x[1] - y[1]) for x, y in zip(a, b)) < 2e-3


def test_bad_query_raises_typed_error(cnn_index):
    with pytest.raises(QueryError) as e:
        cnn_index.search(ODD / "truncated.jpg")
    assert e.value.reason is SkipReason.TRUNCATED


def test_search_many_keeps_order_and_reports_errors(cnn_index, photos):
    res = cnn_index.search_many([DEMO / "astronaut.jpg", ODD / "text.jpg", DEMO / "hubble.jpg"], k=2)
    assert [r.error for r in res] == [None, "not_an_image", None]
    assert res[0].hits[0].path == str(photos / "astronaut.jpg")
    assert res[2].hits[0].path == str(photos / "hubble.jpg")


def test_ties_are_broken_by_path(tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    src = DEMO / "brick.jpg"
    for name in ["c.jpg", "a.jpg", "b.jpg"]:
        shutil.copy(src, folder / name)
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        report = ix.add(folder, jobs=1)
        assert report.added == 1 and report.reused == 2  # copies share one vector
        hits = ix.search(src, k=3)
    assert [os.path.basename(h.path) for h in hits] == ["a.jpg", "b.jpg", "c.jpg"]
    assert {h.distance for h in hits} == {0}


def test_second_run_processes_nothing(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(photos, jobs=2)
        again = ix.add(photos, jobs=2)
    assert again.processed == 0 and again.unchanged == 8


def test_incremental_changes(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(photos, jobs=1)
        before = {r.path: r for r in ix.store.catalog.records()}
        edit_photos(photos)
        r = ix.add(photos, jobs=1)
        after = {rec.path: rec for rec in ix.store.catalog.records()}
    assert (r.renamed, r.removed, r.updated, r.added, r.reused) == (2, 1, 1, 1, 1)
    assert after[str(photos / "kitty.jpg")].id == before[str(photos / "cat.jpg")].id
    assert after[str(photos / "sub" / "coffee.jpg")].row == before[str(photos / "coffee.jpg")].row
    assert str(photos / "brick.jpg") not in after
    assert after[str(photos / "camera.jpg")].row != before[str(photos / "camera.jpg")].row
    assert len(after) == 9


def test_touched_file_is_not_reembedded(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        ix.add(photos, jobs=1)
        rows = ix.store.catalog.n_rows()
        os.utime(photos / "cat.jpg", ns=(1, 1))
        r = ix.add(photos, jobs=1)
        assert r.added == r.updated == 0 and ix.store.catalog.n_rows() == rows


def test_odd_folder_indexes_valid_files_and_records_reasons(tmp_path):
    with Index.create(tmp_path / "idx", extractor="cnn") as ix:
        r = ix.add(ODD, jobs=2)
        assert r.added == 13
        assert dict(r.skip_reasons) == {"truncated": 2, "empty": 1, "not_an_image": 2}
        skipped = {os.path.basename(s.path): s.reason for s in ix.skipped()}
        assert skipped == {
            "truncated.jpg": "truncated", "truncated.png": "truncated", "empty.jpg": "empty",
            "text.jpg": "not_an_image", "fake.png": "not_an_image",
        }
        info = ix.info()
        assert info.files == 13 and info.skipped == 5
        assert ix.add(ODD, jobs=2).processed == 0  # bad files are not retried unchanged


def test_bombs_and_bad_names_are_skipped_with_reasons(tmp_path):
    from .conftest import gif_bomb, png_bomb

    folder = tmp_path / "in"
    make_pattern_images(folder, 3)
    png_bomb(folder / "bomb.png", 60_000, 60_000)
    gif_bomb(folder / "bomb.gif", 65_000, 65_000)
    bad = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    shutil.copy(folder / "img0000.jpg", bad)
    (folder / "dir.jpg").mkdir()
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        r = ix.add(folder, jobs=1)
        reasons = {os.path.basename(s.path): s.reason for s in ix.skipped()}
    assert r.added == 3
    assert reasons == {"bomb.png": "too_large", "bomb.gif": "too_large", "caf\\xe9.jpg": "bad_path"}


def test_symlink_loop_is_safe(tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 2)
    os.symlink(folder, folder / "loop")
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        r = ix.add(folder, jobs=1)
    assert r.seen == 2 and r.added == 2  # the looping link is not entered again


def test_hidden_files_are_optional(tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 2)
    make_pattern_images(folder / ".cache", 1, seed=5)
    with Index.create(tmp_path / "a", extractor="phash") as ix:
        assert ix.add(folder, jobs=1).seen == 2
    with Index.create(tmp_path / "b", extractor="phash") as ix:
        assert ix.add(folder, jobs=1, include_hidden=True).seen == 3


def test_reopen_checks_extractor(tmp_path, photos):
    Index.create(tmp_path / "idx", extractor="phash").close()
    with Index.open(tmp_path / "idx") as ix:
        assert ix.extractor.name == "phash"
    with Index.open(tmp_path / "idx", extractor="phash"):
        pass
    with pytest.raises(ExtractorMismatch, match="name: index has 'phash', asked for 'cnn'"):
        Index.open(tmp_path / "idx", extractor="cnn")
    with pytest.raises(ExtractorMismatch, match="hash_size"):
        Index.open(tmp_path / "idx", extractor={"name": "phash", "hash_size": 16})
    with pytest.raises(NotAnIndex):
        Index.open(tmp_path / "nothing")


def test_saved_index_round_trip(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="cnn") as ix:
        ix.add(photos, jobs=1)
        first = ix.search(DEMO / "astronaut.jpg", k=8)
    with Index.open(tmp_path / "idx") as ix:
        again = ix.search(DEMO / "astronaut.jpg", k=8)
    assert [(h.path, round(h.score, 5)) for h in first] == [(h.path, round(h.score, 5)) for h in again]


def test_second_writer_is_refused(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="phash") as ix, Index.open(tmp_path / "idx") as other:
        with ix.store.writing():
            with pytest.raises(IndexLocked, match=f"pid {os.getpid()}"):
                other.add(photos)


def test_readers_see_a_writers_commits(tmp_path, photos):
    with Index.create(tmp_path / "idx", extractor="phash") as writer, Index.open(tmp_path / "idx") as reader:
        assert len(reader.search(DEMO / "cat.jpg", k=5)) == 0
        writer.add(photos, jobs=1)
        assert reader.search(DEMO / "cat.jpg", k=1)[0].path == str(photos / "cat.jpg")


def test_interrupted_creation_can_be_redone(tmp_path):
    from lookalike.store import Catalog

    idx = tmp_path / "idx"
    idx.mkdir()
    Catalog(str(idx / "catalog.sqlite")).close()  # killed before the manifest was written
    with Index.open_or_create(idx, "phash") as ix:
        assert ix.extractor.name == "phash"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        Index.create(other, "phash")
