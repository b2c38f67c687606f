"""Misuses through the real CLI: a non-zero exit, one readable line, no traceback (issue 19)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lookalike import Index

from .conftest import DEMO, LOOKALIKE, run_cli


def one_line(out) -> str:
    """The one error line of a failed run (click's usage lines aside)."""
    assert out.returncode != 0, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and all(line.startswith(("Error:", "Usage:", "Try ")) for line in lines), out.stderr
    return errors[0]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    base = tmp_path_factory.mktemp("misuse")
    (base / "photos").mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(DEMO / name, base / "photos" / name)
    with Index.create(base / "idx", extractor="phash") as ix:
        ix.add(base / "photos", jobs=1)
    return base


def test_misuses_of_search_and_index(small_index, tmp_path):
    idx = small_index / "idx"
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file.jpg").write_bytes(b"x")
    cases = [
        (("search", tmp_path / "nope.jpg", "--index", idx), "no such file or folder"),
        (("search", "https://example.org/cat.jpg", "--index", idx), "URLs are not supported"),
        (("index", tmp_path / "nope", "--index", tmp_path / "new-idx"), "no such file or folder"),
        (("index", DEMO, "--index", tmp_path / "a-file.jpg"), "is a file, not an index folder"),
        (("index", small_index / "photos", "--index", idx, "--keypoints", "sift"), "made without keypoints"),
        (("search", DEMO / "cat.jpg", "--index", idx, "--verify"), "--keypoints sift"),
        (("duplicates", "--index", idx, "--keep", "biggest"), "unknown keeper rule"),
        (("duplicates", tmp_path / "nope"), "no such folder"),
        (("duplicates", "--index", idx, "--level", "similar"), "Invalid value for '--level'"),
    ]
    for args, expected in cases:
        line = one_line(run_cli(*args, check=False))
        assert expected in line, (args, line)
    assert not (tmp_path / "new-idx").exists()


def test_an_empty_index_and_an_empty_folder_say_so(tmp_path):
    (tmp_path / "empty").mkdir()
    out = run_cli("index", tmp_path / "empty", "--index", tmp_path / "idx", "-e", "phash")
    assert "no image files under" in out.stderr
    line = one_line(run_cli("search", DEMO / "cat.jpg", "--index", tmp_path / "idx", check=False))
    assert "holds no images yet" in line


def test_search_reads_the_query_from_standard_input(small_index):
    idx = small_index / "idx"
    with open(DEMO / "cat.jpg", "rb") as f:
        out = subprocess.run([*LOOKALIKE, "search", "-", "--index", str(idx)], stdin=f, capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "-" and "cat.jpg" in out.stdout.splitlines()[1]
    empty = subprocess.run([*LOOKALIKE, "search", "-", "--index", str(idx)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
    assert "standard input is empty" in one_line(empty)


@pytest.mark.parametrize("spec,expected", [
    ('{"name":"phash","hash_sz":16}', "extractor 'phash' has no setting 'hash_sz' (did you mean 'hash_size'?)"),
    ('{"name":"cnn","pca":"lots"}', "bad settings for extractor 'cnn' (pca='lots')"),
    ('{"name":"cnn",', "the extractor spec is not valid JSON"),
    ("phsh", "unknown extractor 'phsh' (did you mean 'phash'?)"),
    ('{"name":"fuse","parts":[{"extractor":{"name":"cnn","foo":1}}]}', "extractor 'cnn' has no setting 'foo'"),
    ('{"name":"cnn","threads":2}', "inference threads are a runtime option"),
])
def test_a_bad_extractor_spec_is_one_line(tmp_path, spec, expected):
    line = one_line(run_cli("index", DEMO, "--index", tmp_path / "idx", "-e", spec, check=False))
    assert expected in line
    assert not (tmp_path / "idx").exists()  # nothing left behind


def test_one_way_to_name_the_index_and_a_default_one(small_index, tmp_path):
    idx = small_index / "idx"
    for args in (("info", idx), ("info", "--index", idx), ("check", idx), ("check", "--index", idx)):
        assert run_cli(*args).returncode == 0
    assert "two indexes named" in one_line(run_cli("check", idx, "--index", tmp_path, check=False))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("LOOKALIKE_INDEX", None)
    none = subprocess.run([*LOOKALIKE, "search", str(DEMO / "cat.jpg")], env=env, capture_output=True, text=True)
    assert "no index named" in one_line(none) and "LOOKALIKE_INDEX" in one_line(none)
    env["LOOKALIKE_INDEX"] = str(idx)
    found = subprocess.run([*LOOKALIKE, "search", str(DEMO / "cat.jpg"), "-k", "1"], env=env, capture_output=True,
                           text=True)
    assert found.returncode == 0 and "cat.jpg" in found.stdout and "(the default;" in found.stderr


def test_search_json_names_min_score_explain_and_info(small_index):
    idx = small_index / "idx"
    out = run_cli("search", DEMO / "cat.jpg", "--index", idx, "--json")
    assert len(json.loads(out.stdout)["hits"]) == 2  # the HTTP API's field name
    strict = run_cli("search", DEMO / "cat.jpg", "--index", idx, "--json", "--min-score", "0.99")
    assert [h["path"].rsplit("/", 1)[1] for h in json.loads(strict.stdout)["hits"]] == ["cat.jpg"]
    assert "give one image, not a folder" in one_line(
        run_cli("search", DEMO, "--index", idx, "--verify", "--explain", "x.png", check=False))
    assert "keypoints:  none stored" in run_cli("info", idx).stdout


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([*LOOKALIKE, "extractors"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Error" not in err and "Traceback" not in err


def test_the_explained_outline_stays_on_the_match_panel():
    """An outline projected outside the matched image is clipped to its panel, never drawn
    across the query beside it."""
    import numpy as np

    from lookalike.explain import PAD, draw_match
    from lookalike.verify import Match

    query = np.full((100, 100, 3), 128, np.uint8)
    shift = np.array([[1.0, 0, -150.0], [0, 1.0, 0], [0, 0, 1.0]])  # the outline lands left of the match
    none = np.zeros((0, 2), np.float32)
    drawn = np.asarray(draw_match(query, query, Match(20, 20, shift, none, none)))
    plain = np.asarray(draw_match(query, query, Match(20, 20, None, none, none)))
    query_panel = (slice(0, None), slice(0, PAD + 480 + PAD))  # the query is drawn 480 px tall and wide
    assert (drawn[query_panel] == plain[query_panel]).all()
    inside = np.array([[1.0, 0, 10.0], [0, 1.0, 10.0], [0, 0, 1.0]])  # partly inside: drawn there
    assert (np.asarray(draw_match(query, query, Match(20, 20, inside, none, none))) != plain).any()


def test_a_folder_search_shows_progress_on_a_terminal(small_index):
    """stderr a terminal (a pseudo-terminal here): a progress bar with a rate, then all results."""
    import pty

    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    proc = subprocess.Popen([*LOOKALIKE, "search", str(DEMO), "--index", str(small_index / "idx"), "-k", "1"],
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    out = proc.stdout.read()
    proc.wait(timeout=120)
    seen = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        seen += data
    os.close(leader)
    assert proc.returncode == 0
    assert out.count("\n   1 ") == len(list(DEMO.glob("*.jpg")))
    assert b"search" in seen and b"img/s" in seen and b"100%" in seen


def test_files_without_an_extension_are_sniffed_not_ignored(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DEMO / "cat.jpg", folder / "IMG_0001")  # a camera or a download without an extension
    (folder / "NOTES").write_text("not a picture")
    (folder / "notes.txt").write_text("ignored: a known other kind of file")
    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        report = ix.add(folder, jobs=1)
        assert report.added == 1 and report.skipped == 1 and report.skip_reasons == {"not_an_image": 1}
        [skipped] = ix.skipped()
        assert skipped.path.endswith("NOTES")


def test_the_summary_rate_counts_what_the_progress_bar_counts():
    from lookalike.cli import _summary
    from lookalike.indexer import IndexReport

    r = IndexReport(root="/p", seen=130, unchanged=30, added=40, renamed=10, reused=30, skipped=20, seconds=2.0)
    assert r.processed == 100  # the bar's count: every file it had to look at
    assert "(50 img/s)" in _summary(r)


def test_an_extractor_that_cannot_run_is_not_listed_as_usable():
    out = run_cli("extractors")
    listed = [line.split()[0] for line in out.stdout.splitlines() if line and not line.startswith(("not ", "default"))]
    assert "surf" not in listed and "cnn" in listed
    assert any(line.startswith("not usable: surf (") for line in out.stdout.splitlines())
    rows = {r["name"]: r for r in json.loads(run_cli("extractors", "--json").stdout)}
    assert rows["surf"]["usable"] is False and rows["cnn"]["usable"] is True


def _jxl_of_cat(path):
    pytest.importorskip("pillow_jxl", reason="the 'jxl' extra (pillow-jxl-plugin) is not installed")
    import pillow_jxl  # noqa: F401
    from PIL import Image

    Image.open(DEMO / "cat.jpg").convert("RGB").save(path, "JXL", quality=85, lossless_jpeg=False)
    return path


def test_jpeg_xl_files_are_indexed_with_the_extra(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _jxl_of_cat(folder / "cat.jxl")
    shutil.copy(DEMO / "coffee.jpg", folder / "coffee.jpg")
    with Index.create(tmp_path / "idx", extractor="cnn", keypoints="none") as ix:
        report = ix.add(folder, jobs=1)
        assert report.added == 2 and report.skipped == 0
        assert ix.search(DEMO / "cat.jpg", k=1)[0].path.endswith("cat.jxl")


def test_without_the_extra_a_jpeg_xl_file_says_which_extra(tmp_path):
    jxl = _jxl_of_cat(tmp_path / "cat.jxl")
    code = ("import sys; sys.modules['pillow_jxl'] = None\n"
            "from lookalike import decode\n"
            f"try:\n    decode.decode_file({str(jxl)!r})\n"
            "except decode.DecodeError as e:\n    print(e.reason.value, '|', e.detail)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("not_an_image | JPEG XL needs the 'jxl' extra"), out.stdout + out.stderr
