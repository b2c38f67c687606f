import os
import numpy as np
import pytest
from PIL import Image

from lookalike import decode
from lookalike.decode import DecodeError, SkipReason

from .conftest import ODD, gif_bomb, png_bomb

VALID = {
    "ok_rgb.jpg": (48, 64),
    "ok_rgb.png": (48, 64),
    "ok_rgb.webp": (48, 64),
    "one_pixel.png": (1, 1),
    "tall_thin.png": (300, 1),
    "gray16.png": (48, 64),
    "cmyk.jpg": (48, 64),
    "palette_transparent.png": (48, 64),
    "rgba.png": (48, 64),
    "la.png": (48, 64),
    "bilevel.png": (48, 64),
    "exif_rotated.jpg": (64, 32),  # stored 64x32, displayed 32 wide x 64 high
    "animated.gif": (32, 32),
}

BROKEN = {
    "truncated.jpg": SkipReason.TRUNCATED,
    "truncated.png": SkipReason.TRUNCATED,
    "empty.jpg": SkipReason.EMPTY,
    "text.jpg": SkipReason.NOT_AN_IMAGE,
    "fake.png": SkipReason.NOT_AN_IMAGE,
}


@pytest.mark.parametrize("name,shape", sorted(VALID.items()))
def test_valid_files_decode_to_rgb_uint8(name, shape):
    d = decode.decode_file(ODD / name)
    assert d.pixels.dtype == np.uint8
    assert d.pixels.shape == (*shape, 3)
    assert (d.height, d.width) == shape


@pytest.mark.parametrize("name,reason", sorted(BROKEN.items()))
def test_broken_files_give_typed_reason(name, reason):
    with pytest.raises(DecodeError) as e:
        decode.decode_file(ODD / name)
    assert e.value.reason is reason


def test_exif_orientation_is_applied():
    px = decode.decode_file(ODD / "exif_rotated.jpg").pixels
    top, bottom = px[:32].reshape(-1, 3).mean(0), px[32:].reshape(-1, 3).mean(0)
    assert top[0] > 150 and top[2] < 100  # red on top
    assert bottom[2] > 150 and bottom[0] < 100  # blue below
    assert px[2:6, 27:31, 1].mean() > 150  # green square moved to the top right


def test_animated_gif_uses_first_frame():
    px = decode.decode_file(ODD / "animated.gif").pixels
    assert np.abs(px.reshape(-1, 3).mean(0) - [255, 0, 0]).max() < 5


def test_transparency_is_composited_on_white():
    px = decode.decode_file(ODD / "palette_transparent.png").pixels
    assert (px[0, 0] == 255).all()  # the transparent frame
    rgba = decode.decode_file(ODD / "rgba.png").pixels
    assert rgba[:, 0].min() >= 250  # alpha 0 on the left edge -> white


def test_sixteen_bit_uses_the_full_range():
    px = decode.decode_file(ODD / "gray16.png").pixels
    assert px.min() <= 5 and px.max() >= 250
    assert (px[..., 0] == px[..., 1]).all()


def test_cmyk_matches_rgb_version():
    a = decode.decode_file(ODD / "cmyk.jpg").pixels.astype(int)
    b = decode.decode_file(ODD / "ok_rgb.jpg").pixels.astype(int)
    assert np.abs(a - b).mean() < 20


def test_png_bomb_is_refused_without_decoding(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DecodeError) as e:
        decode.decode_file(bomb)
    assert e.value.reason is SkipReason.TOO_LARGE
    assert "limit" in e.value.detail


def test_gif_bomb_is_refused(tmp_path):
    bomb = gif_bomb(tmp_path / "bomb.gif", 65535, 65535)
    with pytest.raises(DecodeError) as e:
        decode.decode_file(bomb)
    assert e.value.reason is SkipReason.TOO_LARGE


def test_pixel_limit_can_be_raised(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (2000, 1000), 128).save(p)
    with pytest.raises(DecodeError) as e:
        decode.decode_file(p, max_pixels=1_000_000)
    assert e.value.reason is SkipReason.TOO_LARGE
    assert decode.decode_file(p, max_pixels=3_000_000).pixels.shape == (1000, 2000, 3)


def test_pixel_limit_above_pillows_own_guard(tmp_path):
    # Pillow refuses > 2 x MAX_IMAGE_PIXELS by itself; a user-raised limit must win.
    p = tmp_path / "wide.png"
    Image.new("L", (4000, 1000), 0).save(p)
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 1_000_000
        assert decode.decode_file(p, max_pixels=5_000_000).width == 4000
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_jpeg_draft_decodes_smaller_but_keeps_full_size(tmp_path):
    p = tmp_path / "large.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (1600, 2400, 3), dtype=np.uint8)).save(p, quality=80)
    d = decode.decode_file(p, min_side=224)
    assert (d.width, d.height) == (2400, 1600)
    assert min(d.pixels.shape[:2]) >= 224
    assert d.pixels.shape[0] < 1600  # reduced DCT scale was used


def test_directory_and_missing_file(tmp_path):
    folder = tmp_path / "x.jpg"
    folder.mkdir()
    with pytest.raises(DecodeError) as e:
        decode.decode_file(folder)
    assert e.value.reason is SkipReason.UNREADABLE
    with pytest.raises(DecodeError) as e:
        decode.decode_file(tmp_path / "gone.jpg")
    assert e.value.reason is SkipReason.VANISHED


def test_non_utf8_name_is_refused(tmp_path):
    name = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"bad\xff.jpg"))
    Image.new("RGB", (8, 8)).save(name, format="JPEG")
    with pytest.raises(DecodeError) as e:
        decode.decode_file(name)
    assert e.value.reason is SkipReason.BAD_PATH


def test_permission_denied_is_unreadable(tmp_path):
    p = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(p)
    os.chmod(p, 0)
    as_root = os.geteuid() == 0
    if as_root:  # root reads anything: act as 'nobody' for the read, then switch back
        os.chmod(tmp_path, 0o755)
        os.seteuid(65534)
    try:
        with pytest.raises(DecodeError) as e:
            decode.decode_file(p)
    finally:
        if as_root:
            os.seteuid(0)
    assert e.value.reason is SkipReason.UNREADABLE


def test_hostile_bytes_never_raise_anything_else():
    rng = np.random.default_rng(7)
    seed = (ODD / "ok_rgb.png").read_bytes()
    for i in range(200):
        data = bytearray(seed)
        for _ in range(rng.integers(1, 20)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        try:
            d = decode.decode_bytes(bytes(data[: rng.integers(1, len(data) + 1)]))
            assert d.pixels.ndim == 3 and d.pixels.shape[2] == 3
        except DecodeError as e:
            assert isinstance(e.reason, SkipReason)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode(tmp_path, fmt):
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = tmp_path / f"photo.{fmt.lower()}"
    try:
        Image.new("RGB", (64, 48), (200, 30, 30)).save(path, format=fmt)
    except (KeyError, OSError, ValueError) as e:
        pytest.skip(f"this Pillow/pillow-heif build cannot write {fmt}: {e}")
    px = decode.decode_file(path).pixels
    assert px.shape == (48, 64, 3)
    assert np.abs(px.reshape(-1, 3).mean(0) - [200, 30, 30]).max() < 12


def test_bomb_refused_by_pillows_own_guard_is_reported_with_our_limit(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 80_000, 80_000)  # past Pillow's 2x guard, raised at open
    with pytest.raises(DecodeError) as e:
        decode.decode_file(bomb, max_pixels=1_000_000)
    assert e.value.reason is SkipReason.TOO_LARGE
    assert e.value.detail == "6400000000 pixels, limit is 1000000"


# -- JPEGs in the indexing workers: OpenCV, the same pixels as Pillow -------------------
def _jpeg_variants(tmp_path):
    """Colour 4:2:0 and 4:4:4, progressive, grey, CMYK, and all eight EXIF orientations,
    each big enough to be decoded at a reduced scale."""
    rng = np.random.default_rng(3)
    base = Image.fromarray(np.clip(rng.normal(128, 60, (600, 900, 3)), 0, 255).astype(np.uint8))
    base = base.resize((1800, 1200), Image.Resampling.BICUBIC)
    made = {}
    for name, image, kw in [("420", base, dict(quality=90)), ("444", base, dict(quality=95, subsampling=0)),
                            ("progressive", base, dict(quality=85, progressive=True)),
                            ("grey", base.convert("L"), dict(quality=90)), ("cmyk", base.convert("CMYK"), {})]:
        path = tmp_path / f"{name}.jpg"
        image.save(path, **kw)
        made[name] = path
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"turned{orientation}.jpg"
        base.crop((0, 0, 1800, 1000)).save(path, quality=90, exif=exif)
        made[f"turned{orientation}"] = path
    return made


@pytest.mark.parametrize("min_side", [None, 224, 500])
def test_jpegs_in_the_workers_decode_to_exactly_the_pixels_pillow_gives(tmp_path, monkeypatch, min_side):
    import cv2

    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    for name, path in _jpeg_variants(tmp_path).items():
        data = path.read_bytes()
        monkeypatch.setattr(decode, "QUIET_NATIVE_STDERR", False)  # queries, --jobs 1: Pillow
        before = len(calls)
        pillow = decode.decode_bytes(data, min_side=min_side)
        assert len(calls) == before
        monkeypatch.setattr(decode, "QUIET_NATIVE_STDERR", True)  # an indexing worker
        worker = decode.decode_bytes(data, min_side=min_side)
        assert len(calls) == before + (name != "cmyk"), name  # CMYK stays with Pillow
        assert (worker.width, worker.height) == (pillow.width, pillow.height), name
        assert worker.pixels.shape == pillow.pixels.shape and np.array_equal(worker.pixels, pillow.pixels), name
        assert worker.pixels.flags["C_CONTIGUOUS"] and worker.pixels.dtype == np.uint8
        if min_side == 224:
            assert min(worker.pixels.shape[:2]) < 600 and min(worker.pixels.shape[:2]) >= 224  # reduced


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.999])
def test_a_truncated_jpeg_in_a_worker_is_still_truncated(tmp_path, monkeypatch, cut):
    data = _jpeg_variants(tmp_path)["420"].read_bytes()
    monkeypatch.setattr(decode, "QUIET_NATIVE_STDERR", True)
    with pytest.raises(DecodeError) as e:
        decode.decode_bytes(data[: int(len(data) * cut)], min_side=224)
    assert e.value.reason is SkipReason.TRUNCATED


def test_damaged_jpeg_data_in_a_worker_prints_nothing_of_libjpegs_own(tmp_path, monkeypatch, capfd):
    data = bytearray(_jpeg_variants(tmp_path)["420"].read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 400, 7):
        data[i] = 0xFF if i % 2 else 0x00  # inside the entropy-coded data: libjpeg warns and goes on
    monkeypatch.setattr(decode, "QUIET_NATIVE_STDERR", True)
    try:
        decode.decode_bytes(bytes(data), min_side=224)
    except DecodeError:
        pass
    assert capfd.readouterr().err == ""


def test_odd_files_decode_the_same_in_a_worker(monkeypatch):
    for name in sorted(VALID) + sorted(BROKEN):
        outcome = {}
        for quiet in (False, True):
            monkeypatch.setattr(decode, "QUIET_NATIVE_STDERR", quiet)
            try:
                d = decode.decode_file(ODD / name, min_side=16)
                outcome[quiet] = (d.width, d.height, d.pixels.tobytes())
            except DecodeError as e:
                outcome[quiet] = e.reason
        assert outcome[True] == outcome[False], name


def test_hostile_jpeg_bytes_in_a_worker_never_raise_anything_else(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "QUIET_NATIVE_STDERR", True)
    rng = np.random.default_rng(11)
    seed = _jpeg_variants(tmp_path)["turned6"].read_bytes()
    for _ in range(150):
        data = bytearray(seed)
        for _ in range(rng.integers(1, 30)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        try:
            d = decode.decode_bytes(bytes(data[: rng.integers(1, len(data) + 1)]), min_side=224)
            assert d.pixels.ndim == 3 and d.pixels.shape[2] == 3 and d.pixels.dtype == np.uint8
        except DecodeError as e:
            assert isinstance(e.reason, SkipReason)
