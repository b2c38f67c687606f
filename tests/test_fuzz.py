"""Fuzzing: mutated image bytes through the decoder and the query path.

The mutators (bit flips, boundary-value bytes, truncation, chunk duplication,
deletion and insertion, header fields set to boundary values, PNG CRCs fixed
up afterwards) live in ``bench/fuzz.py``, which runs them for as long as you
like; here hypothesis draws them, a bounded and reproducible number of times
(``derandomize``), on the seed images in ``tests/data/odd``.

The contract: the decoder raises nothing but ``DecodeError`` and returns only
``(H, W, 3) uint8`` images; a search raises nothing but ``QueryError``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from bench import fuzz
from lookalike import Index, QueryError, decode
from lookalike.decode import DecodeError, SkipReason

from .conftest import ODD, make_pattern_images

SEEDS = fuzz.load_seeds(ODD)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible; bench/fuzz.py explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

seed_index = st.integers(0, len(SEEDS) - 1)
mutations = st.lists(
    st.tuples(st.sampled_from(fuzz.MUTATOR_NAMES), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    min_size=1,
    max_size=4,
)


def test_seeds_and_mutators_are_sane():
    assert len(SEEDS) >= 15
    name, data = next((n, d) for n, d in SEEDS if n == "ok_rgb.png")
    assert fuzz.mutate(data, []) == data
    assert fuzz.mutate(data, [("truncate", 10, 0)]) == data[:10]
    # a header change with fixed-up CRCs gets past Pillow's CRC check and reaches the size check
    bomb = fuzz.mutate(data, [("header", 0, fuzz.INTERESTING.index(0x7FFFFFFF)), ("crc", 0, 0)])
    with pytest.raises(DecodeError) as e:
        decode.decode_bytes(bomb)
    assert e.value.reason is SkipReason.TOO_LARGE


@FUZZ
@given(seed=seed_index, ops=mutations)
def test_mutated_bytes_decode_or_are_refused_with_a_reason(seed, ops):
    fuzz.check_decode(fuzz.mutate(SEEDS[seed][1], ops))


@pytest.fixture(scope="module")
def query_index(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzzq")
    make_pattern_images(base / "gallery", 12)
    with Index.create(base / "idx", extractor="phash") as ix:
        ix.add(base / "gallery", jobs=1)
        yield ix, str(base)


@FUZZ
@given(seed=seed_index, ops=mutations)
def test_mutated_bytes_through_the_query_path(query_index, seed, ops):
    """As a file (``Index.search(path)``) and, when it decodes, as an uploaded pixel array."""
    ix, workdir = query_index
    data = fuzz.mutate(SEEDS[seed][1], ops)
    _, decoded = fuzz.check_decode(data)
    fuzz.check_query(ix, data, decoded, workdir)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, np.bool_]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12),
))
def test_in_memory_pixels_are_used_or_refused(arr):
    """``decode.pixels_of`` (the in-memory query path): RGB uint8 out, or a DecodeError."""
    try:
        px = decode.pixels_of(arr)
    except DecodeError as e:
        assert isinstance(e.reason, SkipReason)
        return
    assert px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3 and px.shape[:2] == arr.shape[:2]


def test_pixels_of_converts_grey_and_rgba_and_refuses_the_rest():
    grey = np.full((4, 5), 9, np.uint8)
    assert (decode.pixels_of(grey) == 9).all() and decode.pixels_of(grey).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)  # fully transparent: white
    assert (decode.pixels_of(rgba) == 255).all()
    with pytest.raises(DecodeError, match="uint8"):
        decode.pixels_of(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(DecodeError, match="invalid size"):
        decode.pixels_of(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(DecodeError) as e:
        decode.pixels_of(np.zeros((20, 20, 3), np.uint8), max_pixels=100)
    assert e.value.reason is SkipReason.TOO_LARGE
    with pytest.raises(DecodeError) as e:  # a PIL image of broken bytes fails when loaded, as a DecodeError
        decode.pixels_of(Image.open(ODD / "truncated.png"))
    assert e.value.reason is SkipReason.TRUNCATED


HOSTILE = {
    "empty": np.zeros((0, 5, 3), np.uint8),
    "no width": np.zeros((5, 0, 3), np.uint8),
    "float": np.zeros((5, 5, 3), np.float32),
    "int64": np.zeros((8, 8, 3), np.int64),
    "two channels": np.zeros((5, 5, 2), np.uint8),
    "1-d": np.zeros((5,), np.uint8),
    "4-d": np.zeros((2, 2, 2, 3), np.uint8),
}


@pytest.mark.parametrize("extractor", ["phash", "cnn"])
def test_hostile_in_memory_queries_raise_query_error(tmp_path, extractor):
    make_pattern_images(tmp_path / "gallery", 3)
    with Index.create(tmp_path / "idx", extractor=extractor) as ix:
        ix.add(tmp_path / "gallery", jobs=1)
        for name, arr in HOSTILE.items():
            with pytest.raises(QueryError):
                ix.search(arr, k=2)
        truncated = Image.open(io.BytesIO((ODD / "truncated.jpg").read_bytes()))
        with pytest.raises(QueryError) as e:
            ix.search(truncated, k=2)
        assert e.value.reason is SkipReason.TRUNCATED
        for arr in (np.zeros((40, 30), np.uint8), np.zeros((40, 30, 4), np.uint8)):  # grey, RGBA: usable
            assert len(ix.search(arr, k=2)) == 2
        results = ix.search_many([HOSTILE["empty"], np.zeros((40, 30, 3), np.uint8)], k=1)
        assert results[0].error == "decode_error" and len(results[1].hits) == 1
