"""lookalike.thumbnails: the one thumbnail helper of the server, the HTML report and contact sheets."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from lookalike import decode, thumbnails

from .conftest import DEMO, ODD


def test_thumbnail_fits_the_box_and_keeps_the_aspect_ratio():
    img = thumbnails.thumbnail(DEMO / "cat.jpg", 160)  # 451 x 300
    assert img.mode == "RGB" and max(img.size) == 160
    assert img.size[0] / img.size[1] == pytest.approx(451 / 300, rel=0.02)


def test_thumbnail_is_never_enlarged():
    assert thumbnails.thumbnail(ODD / "one_pixel.png", 160).size == (1, 1)
    assert thumbnails.thumbnail(ODD / "tall_thin.png", 160).size == (1, 160)  # 1 x 300


def test_a_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    big = tmp_path / "big.jpg"
    Image.open(DEMO / "coffee.jpg").resize((2048, 1364)).save(big, quality=90)
    small = thumbnails.decode_small(big, 160)
    assert 160 <= min(small.size) and small.size[0] < 2048  # a DCT scale of 1/2, 1/4 or 1/8
    assert thumbnails.thumbnail(big, 160).size == (160, 107)


def test_jpeg_from_a_path_and_from_its_bytes_are_the_same():
    path = DEMO / "rocket.jpg"
    data = thumbnails.jpeg(path, 128)
    assert data == thumbnails.jpeg(path.read_bytes(), 128)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and max(img.size) == 128
    assert len(thumbnails.jpeg(path, 128, quality=30)) < len(data)  # quality is passed on


@pytest.mark.parametrize("name, reason", [("fake.png", "not_an_image"), ("empty.jpg", "empty"),
                                          ("truncated.jpg", "truncated")])
def test_undecodable_files_raise_decode_error(name, reason):
    with pytest.raises(decode.DecodeError) as e:
        thumbnails.jpeg((ODD / name).read_bytes(), 64)
    assert e.value.reason.value == reason
    with pytest.raises(decode.DecodeError):
        thumbnails.thumbnail(ODD / name, 64)


def test_max_pixels_refuses_large_images():
    with pytest.raises(decode.DecodeError) as e:
        thumbnails.jpeg((DEMO / "cat.jpg").read_bytes(), 64, max_pixels=1000)
    assert e.value.reason is decode.SkipReason.TOO_LARGE


def test_data_uri_is_an_inline_jpeg_or_none():
    uri = thumbnails.data_uri(DEMO / "cat.jpg", 96)
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):]))) as img:
        assert img.format == "JPEG" and max(img.size) == 96
    assert thumbnails.data_uri(ODD / "fake.png") is None
    assert thumbnails.data_uri(ODD / "no-such-file.jpg") is None


def test_square_pads_to_the_box_and_marks_unreadable_files():
    cell = thumbnails.square(ODD / "tall_thin.png", 160)
    assert cell.size == (160, 160) and cell.getpixel((0, 80)) == thumbnails.BACKGROUND
    wide = np.asarray(thumbnails.square(DEMO / "cat.jpg", 160))
    assert (wide[0] == 255).all() and not (wide[80] == 255).all()  # padded above and below, image across
    assert thumbnails.square(ODD / "one_pixel.png", 40).size == (40, 40)  # a cell is filled: scaled up
    broken = thumbnails.square(ODD / "fake.png", 50)
    assert broken.size == (50, 50) and (np.asarray(broken) == thumbnails.PLACEHOLDER).all()
