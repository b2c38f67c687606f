"""Reliability: bad files, bombs, concurrent writers and readers, read-only and full disks.

Everything here runs the real ``lookalike`` command in subprocesses, except
where a test needs a hook inside a run (a file vanishing mid-run, a disk
filling mid-batch); those use the Python API and say so.

Permissions: the tests may run as root, which reads and writes anything
whatever the mode bits say. Where a test needs "permission denied", a root
test process runs the command without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
(dropped from the child's bounding set before exec), so that it obeys file
modes like any user; a non-root one just runs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Index
from lookalike.store import IndexStore

from .conftest import DATA, make_pattern_images
from .test_crash import committed_rows, wait_for_rows

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]
BAD = DATA / "bad"
AS_ROOT = os.geteuid() == 0

_spec = importlib.util.spec_from_file_location("make_bad_files", BAD / "make_bad_files.py")
make_bad_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_bad_files)
#: committed corpus: file name -> "ok" or the skip reason it must get
EXPECTED: dict[str, str] = make_bad_files.EXPECTED
#: the CNN scales the shorter side to 224 *before* cropping, so a 1 x 100000
#: strip becomes a 224 x 22 400 000 intermediate (15 GB): see
#: test_cnn_prepare_of_extreme_aspect_ratio_is_bounded
EXTREME_ASPECT = {"strip_1x100000.png", "strip_100000x1.png"}


# -- helpers -------------------------------------------------------------------
# Run a command as root without the capabilities that ignore file modes. The
# capabilities are dropped in a fresh interpreter that then execs the command,
# not in a preexec_fn: forking this test process (which may hold gRPC threads
# from the Milvus tests) can abort the child.
_DROP_CAPS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: not granted again at exec
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.argv[1], sys.argv[1:])
"""


def obeying_modes(command: list[str]) -> list[str]:
    """``command`` wrapped so that, as root, it gets 'permission denied' like any user."""
    return [sys.executable, "-c", _DROP_CAPS, *command] if AS_ROOT else command


def cli(*args, obey_modes: bool = False, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run ``lookalike ARGS``; ``obey_modes``: as root, without the power to ignore file modes."""
    command = [*LOOKALIKE, *map(str, args)]
    return subprocess.run(obeying_modes(command) if obey_modes else command,
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def modes_obeyed(tmp_path_factory) -> None:
    """Skip unless a child process can be made to get 'permission denied' on a chmod-000 file."""
    secret = tmp_path_factory.mktemp("modes") / "secret"
    secret.write_text("x")
    os.chmod(secret, 0)
    try:
        out = subprocess.run(obeying_modes([sys.executable, "-c", f"open({str(secret)!r}).read()"]),
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE for a child process here: {e}")
    if "PermissionError" not in out.stderr:
        pytest.skip("a chmod-000 file stays readable here (root with capabilities that cannot be dropped)")


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    return out


def info_json(idx) -> dict:
    return json.loads(ok(cli("info", idx, "--json", "--all")).stdout)


def catalog(idx) -> dict[str, tuple[str, str | None]]:
    """path -> (status, reason) of every catalog entry, read directly."""
    with Index.open(idx) as ix:
        return {r.path: (r.status, r.reason) for r in ix.store.catalog.records()}


def start_index(folder, idx, *extra) -> subprocess.Popen:
    return subprocess.Popen([*LOOKALIKE, "index", str(folder), "--index", str(idx), "-q", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def no_write_transaction(idx) -> bool:
    """True if nobody holds the catalog's write lock right now."""
    db = sqlite3.connect(str(Path(idx) / "catalog.sqlite"), timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def solid(path: Path, colour, size=(40, 30), fmt=None) -> Path:
    """A small image with a colour gradient, distinct per ``colour``."""
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = colour
    arr[..., 0] = (arr[..., 0].astype(int) + xx * 3) % 256
    arr[..., 1] = (arr[..., 1].astype(int) + yy * 5) % 256
    Image.fromarray(arr).save(path, format=fmt or ("JPEG" if str(path).endswith(".jpg") else "PNG"))
    return path


def make_corpus(folder: Path, *, runtime: bool = True, skip: set[str] = frozenset()) -> tuple[dict, set]:
    """Copy the committed bad-file corpus into ``folder`` and add the run-time cases.

    Returns ``(expected, absent)``: catalog path -> "ok" or skip reason, and
    paths that must not be in the catalog at all (not regular files).
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, outcome in EXPECTED.items():
        if name in skip:
            continue
        shutil.copy(BAD / name, folder / name)
        expected[str(folder / name)] = outcome
    absent: set[str] = set()
    if not runtime:
        return expected, absent
    # a directory named like an image: walked into, never read as a file
    (folder / "folder.jpg").mkdir()
    solid(folder / "folder.jpg" / "inside.png", (10, 120, 200))
    expected[str(folder / "folder.jpg" / "inside.png")] = "ok"
    absent.add(str(folder / "folder.jpg"))
    # symlink loops and a dangling link: not files, so not listed
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    absent |= {str(folder / n) for n in ("loop.jpg", "loop_a.jpg", "loop_b.jpg", "dangling.jpg")}
    # a FIFO named like an image: reading it would wait for a writer forever
    os.mkfifo(folder / "pipe.jpg")
    absent.add(str(folder / "pipe.jpg"))
    # a file name that is not valid UTF-8
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    solid(Path(os.fsdecode(raw)), (200, 40, 40), fmt="JPEG")
    expected[str(folder) + "/caf\\xe9.jpg"] = "bad_path"
    # unreadable (chmod 000): distinct content so that a rerun adds it
    solid(folder / "unreadable.jpg", (30, 200, 30))
    os.chmod(folder / "unreadable.jpg", 0)
    expected[str(folder / "unreadable.jpg")] = "unreadable"
    return expected, absent


def check_outcome(idx, expected: dict, absent: set) -> None:
    got = catalog(idx)
    assert not absent & set(got), f"non-files in the catalog: {absent & set(got)}"
    assert {p: s for p, (s, r) in got.items() if s == "ok"}.keys() == {p for p, e in expected.items() if e == "ok"}
    assert {p: r for p, (s, r) in got.items() if s == "skipped"} == {p: e for p, e in expected.items() if e != "ok"}
    info = info_json(idx)
    n_ok = sum(e == "ok" for e in expected.values())
    assert info["files"] == n_ok and info["skipped"] == len(expected) - n_ok
    assert {s["path"]: s["reason"] for s in info["skipped_files"]} == {p: e for p, e in expected.items() if e != "ok"}
    assert all(s["detail"] for s in info["skipped_files"])  # every reason comes with the decoder's words
    ok(cli("check", idx))


# -- 1. bad files ------------------------------------------------------------------
def test_index_bad_corpus_with_phash(tmp_path, modes_obeyed):
    """Every kind of bad file, through the real CLI: exit 0, valid ones indexed, a reason for each other one."""
    folder, idx = tmp_path / "in", tmp_path / "idx"
    expected, absent = make_corpus(folder)
    out = ok(cli("index", folder, "--index", idx, "-e", "phash", "--jobs", "2", "--json", obey_modes=True))
    report = json.loads(out.stdout)
    n_ok = sum(e == "ok" for e in expected.values())
    assert report["added"] + report["reused"] == n_ok
    assert report["skipped"] == len(expected) - n_ok
    assert report["seen"] == len(expected)
    check_outcome(idx, expected, absent)

    # a rerun retries only what may have changed: unreadable (now readable) and too_large
    os.chmod(folder / "unreadable.jpg", 0o644)
    again = json.loads(ok(cli("index", folder, "--index", idx, "--json", obey_modes=True)).stdout)
    too_large = sum(e == "too_large" for e in expected.values())
    assert again["added"] + again["updated"] == 1 and again["skipped"] == too_large
    assert again["unchanged"] == len(expected) - 1 - too_large
    expected[str(folder / "unreadable.jpg")] = "ok"
    check_outcome(idx, expected, absent)


@pytest.mark.slow
def test_index_bad_corpus_with_cnn(tmp_path):
    folder, idx = tmp_path / "in", tmp_path / "idx"
    expected, absent = make_corpus(folder, skip=EXTREME_ASPECT)
    del expected[str(folder / "unreadable.jpg")]  # as root it would be read; covered by the phash test
    os.chmod(folder / "unreadable.jpg", 0o644)
    os.remove(folder / "unreadable.jpg")
    ok(cli("index", folder, "--index", idx, "-e", "cnn", "--jobs", "2", "-q"))
    check_outcome(idx, expected, absent)
    with Index.open(idx) as ix:  # every vector is a unit vector: nothing half-written
        live = ix.live()
        norms = np.linalg.norm(np.asarray(live.matrix[live.rows], np.float32), axis=1)
        assert np.allclose(norms, 1.0, atol=1e-2)


def test_file_vanishing_between_listing_and_reading(tmp_path):
    """The progress callback deletes a later file on its first call (after listing, before reading)."""
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 4)
    gone = paths[-1]  # files are processed in sorted order, so this one is read last

    def progress(done, total):
        if gone.exists():
            gone.unlink()

    with Index.create(tmp_path / "idx", extractor="phash") as ix:
        r = ix.add(folder, jobs=1, progress=progress)
        assert (r.seen, r.added, r.skipped) == (4, 3, 1)
        assert dict(r.skip_reasons) == {"vanished": 1}
        assert {s.path: s.reason for s in ix.skipped()} == {str(gone): "vanished"}
        assert ix.check() == []
        again = ix.add(folder, jobs=1)  # the next run forgets it
        assert again.removed == 1 and again.seen == 3 and ix.skipped() == []


def test_fifo_named_like_an_image_never_blocks(tmp_path):
    """Given directly (not found by the walk, which lists regular files only), as a root and as a query."""
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    idx = tmp_path / "idx"
    out = json.loads(ok(cli("index", pipe, "--index", idx, "-e", "phash", "--json", timeout=60)).stdout)
    assert out["skipped"] == 1 and out["skip_reasons"] == {"unreadable": 1}
    found = cli("search", pipe, "--index", idx, timeout=60)
    assert found.returncode == 1 and "unreadable" in found.stderr and "Traceback" not in found.stderr


_DECODE_BOMBS = """
import sys
from lookalike import decode
for path in sys.argv[1:]:
    try:
        decode.decode_file(path)
        print(path, "ok")
    except decode.DecodeError as e:
        print(path, e.reason.value)
"""


_MEASURE = """
import atexit, runpy, sys
out = sys.argv[1]

def report():
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:")).split()[1]
    with open(out, "w") as f:
        f.write(hwm)

atexit.register(report)
mode, target, *rest = sys.argv[2:]
if mode == "-c":
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def _peak_rss_mb(cmd, tmp_path) -> tuple[str, int, float]:
    """Run ``[python, -c|-m, X, args...]``; its stdout (stderr appended), exit status and peak RSS in MB.

    The peak is the child's own ``VmHWM``, read at exit: ``ru_maxrss`` would also
    count the copy of this (large) test process that existed between fork and exec.
    """
    assert cmd[0] == sys.executable and cmd[1] in ("-c", "-m")
    hwm = tmp_path / "hwm.txt"
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(hwm), *cmd[1:]], capture_output=True, text=True)
    out = proc.stdout + (proc.stderr if proc.returncode != 0 else "")
    return out, proc.returncode, int(hwm.read_text()) / 1024


def test_bombs_are_refused_in_bounded_memory(tmp_path):
    """Decompression bombs (huge declared size, tiny file) are refused before any pixels are decoded."""
    bombs = {name: r for name, r in EXPECTED.items() if name.startswith("bomb")}
    assert len(bombs) >= 6
    paths = [str(BAD / name) for name in sorted(bombs)]
    out, status, peak = _peak_rss_mb([sys.executable, "-c", _DECODE_BOMBS, *paths], tmp_path)
    assert status == 0, out
    got = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert got == {str(BAD / n): r for n, r in bombs.items()}
    assert peak < 400, f"decoding the bombs peaked at {peak:.0f} MB"

    folder = tmp_path / "bombs"
    folder.mkdir()
    for name in bombs:
        shutil.copy(BAD / name, folder / name)
    cmd = [*LOOKALIKE, "index", str(folder), "--index", str(tmp_path / "idx"), "-e", "phash", "--jobs", "1", "--json"]
    out, status, peak_cli = _peak_rss_mb(cmd, tmp_path)
    assert status == 0, out
    assert json.loads(out.splitlines()[-1])["skipped"] == len(bombs)
    assert peak_cli < 400, f"indexing the bombs peaked at {peak_cli:.0f} MB"


_CNN_EXTREME = """
import resource, sys, time
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # fail fast instead of using 15 GB
from lookalike.extractors.cnn import CnnExtractor
ext = CnnExtractor()
for shape in [(100000, 1, 3), (1, 100000, 3), (65535, 3, 3)]:
    t = time.perf_counter()
    out = ext.prepare(np.full(shape, 128, np.uint8))
    assert out.shape == (224, 224, 3), out.shape
    assert time.perf_counter() - t < 5, (shape, time.perf_counter() - t)
print("bounded")
"""


def test_cnn_prepare_of_extreme_aspect_ratio_is_bounded():
    out = subprocess.run([sys.executable, "-c", _CNN_EXTREME], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "bounded" in out.stdout, out.stderr[-2000:]


# -- 2. crash safety: bytes written but never committed ------------------------------
def test_uncommitted_vector_bytes_are_ignored_then_dropped(tmp_path):
    """A writer killed between appending vectors and committing them leaves extra bytes: harmless."""
    folder = tmp_path / "in"
    make_pattern_images(folder, 5)
    idx = tmp_path / "idx"
    with Index.create(idx, extractor="cnn") as ix:
        ix.add(folder, jobs=1)
        before = {h.path: h.score for h in ix.search(folder / "img0002.jpg", k=None)}
    store = IndexStore.open(idx)
    n_rows, row_bytes = store.catalog.n_rows(), store.vectors.row_bytes
    with store.writing():  # what a killed writer leaves: 3 whole rows and half a row, never committed
        store.vectors.append(n_rows, np.full((3, store.vectors.width), 7, store.vectors.dtype))
    with open(store.vectors.path, "ab") as f:
        f.write(b"\xff" * (row_bytes // 2))
    store.close()
    assert os.path.getsize(idx / "vectors.bin") == (n_rows + 3) * row_bytes + row_bytes // 2

    ok(cli("check", idx))  # extra bytes are not a problem ...
    with Index.open(idx) as ix:  # ... readers never see them
        assert ix.check() == [] and len(ix) == 5
        assert {h.path: h.score for h in ix.search(folder / "img0002.jpg", k=None)} == pytest.approx(before)
    make_pattern_images(folder, 7)  # two more files: the next writer drops the bytes, then appends
    out = json.loads(ok(cli("index", folder, "--index", idx, "--json")).stdout)
    assert out["added"] == 2
    assert os.path.getsize(idx / "vectors.bin") == (n_rows + 2) * row_bytes
    with Index.open(idx) as ix:
        assert ix.check() == [] and len(ix) == 7
        live = ix.live()
        assert not (np.asarray(live.matrix[live.rows]) == 7).all(axis=1).any()


def test_check_reports_a_vector_file_shorter_than_the_catalog(tmp_path):
    folder = tmp_path / "in"
    make_pattern_images(folder, 3)
    idx = tmp_path / "idx"
    ok(cli("index", folder, "--index", idx, "-e", "phash", "-q"))
    size = os.path.getsize(idx / "vectors.bin")
    os.truncate(idx / "vectors.bin", size - 1)
    out = cli("check", idx)
    assert out.returncode == 1 and "problem: vector file has" in out.stderr
    assert "Traceback" not in out.stderr


# -- 3. concurrency ----------------------------------------------------------------
@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many") / "images"
    make_pattern_images(folder, 300, size=48, seed=21)
    return folder


def test_second_writer_is_refused_naming_the_holder(many_images, tmp_path):
    idx = tmp_path / "idx"
    first = start_index(many_images, idx, "-e", "phash", "--batch-size", "4", "--jobs", "1")
    try:
        assert wait_for_rows(first, idx, 8), "the first run ended before the second could start"
        # freeze the first writer between two commits, so that the second meets the lock, not SQLite's
        for _ in range(200):
            first.send_signal(signal.SIGSTOP)
            if no_write_transaction(idx):
                break
            first.send_signal(signal.SIGCONT)
            time.sleep(0.002)
        second = cli("index", many_images, "--index", idx, "-q")
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    assert f"another lookalike process (pid {first.pid}) is writing to {idx}" in second.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    with Index.open(idx) as ix:
        assert len(ix) == 300 and ix.check() == []


def test_stale_lock_of_a_killed_writer_does_not_block(many_images, tmp_path):
    idx = tmp_path / "idx"
    first = start_index(many_images, idx, "-e", "phash", "--batch-size", "4", "--jobs", "1")
    assert wait_for_rows(first, idx, 8), "the first run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert (idx / "lock").read_text().strip() == str(first.pid)  # the lock file stays, the flock does not
    out = json.loads(ok(cli("index", many_images, "--index", idx, "--json")).stdout)
    assert out["added"] + out["unchanged"] == 300
    assert (idx / "lock").read_text().strip() != str(first.pid)
    with Index.open(idx) as ix:
        assert len(ix) == 300 and ix.check() == [] and ix.store.catalog.n_rows() == 300


def test_searches_stay_consistent_while_a_writer_commits(many_images, tmp_path):
    idx = tmp_path / "idx"
    Index.create(idx, extractor="phash").close()
    query_path = many_images / "img0007.jpg"
    query_array = np.asarray(Image.open(many_images / "img0123.jpg").convert("RGB"))
    writer = start_index(many_images, idx, "--batch-size", "2", "--jobs", "1")
    sizes, searches = [], 0
    try:
        with Index.open(idx) as reader:
            while writer.poll() is None or searches < 2:
                for q in (query_array, query_path):
                    n_before = len(reader)
                    hits = reader.search(q, k=10)
                    searches += 1
                    scores = [h.score for h in hits]
                    assert scores == sorted(scores, reverse=True)
                    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
                    paths = [h.path for h in hits]
                    assert len(set(paths)) == len(paths)
                    indexed = {r.path for r in reader.store.catalog.records(status="ok")}
                    assert set(paths) <= indexed
                    assert all(os.path.exists(p) for p in paths)
                    assert min(10, n_before) <= len(hits) <= min(10, len(indexed))  # the index only grows
                sizes.append(len(reader))
    finally:
        if writer.poll() is None:
            writer.kill()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert sizes[-1] == 300
    assert len({s for s in sizes if 0 < s < 300}) >= 2, f"no intermediate states seen: {sorted(set(sizes))}"
    assert sizes == sorted(sizes)  # a reader never sees the index shrink


# -- 5. read-only index, full disk ------------------------------------------------
@pytest.fixture
def read_only_index(tmp_path, modes_obeyed):
    """An index (chmod 555, files 444) with 4 images, a folder of 3 more, and its files' sizes and mtimes."""
    base, more, idx = tmp_path / "base", tmp_path / "more", tmp_path / "idx"
    make_pattern_images(base, 4)
    make_pattern_images(more, 3, seed=9)
    ok(cli("index", base, "--index", idx, "-e", "phash", "-q"))
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in idx.iterdir()}
    os.chmod(idx, 0o555)
    for p in idx.iterdir():
        os.chmod(p, 0o444)
    yield idx, more, before
    os.chmod(idx, 0o755)
    for p in idx.iterdir():
        os.chmod(p, 0o644)


def test_indexing_into_a_read_only_index_fails_and_leaves_it_intact(read_only_index):
    idx, more, before = read_only_index
    out = cli("index", more, "--index", idx, "-q", obey_modes=True)
    assert out.returncode == 1
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in idx.iterdir()} == before
    os.chmod(idx, 0o755)
    ok(cli("check", idx))
    assert info_json(idx)["files"] == 4


def test_read_only_index_can_be_searched_and_refuses_writes_in_one_line(read_only_index):
    idx, more, _ = read_only_index
    out = cli("index", more, "--index", idx, "-q", obey_modes=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "read-only" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert ok(cli("check", idx, obey_modes=True)).stdout.strip().endswith("ok")
    assert json.loads(ok(cli("info", idx, "--json", obey_modes=True)).stdout)["files"] == 4
    ok(cli("search", more / "img0001.jpg", "--index", idx, "-k", "2", obey_modes=True))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: (mount point, a function that fills it up to ``keep`` free bytes)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not permitted in this sandbox?): {done.stderr.strip()}")

    def fill(keep: int) -> Path:
        st = os.statvfs(mnt)
        filler = mnt / "filler"
        with open(filler, "ab") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - keep))
            f.flush()
            os.fsync(f.fileno())
        return filler

    yield mnt, fill
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk_fails_the_run_keeps_the_index_and_a_rerun_completes(small_disk, many_images):
    mnt, fill = small_disk
    idx = mnt / "idx"
    ok(cli("index", many_images / "img0000.jpg", "--index", idx, "-e", "cnn", "-q"))
    filler = fill(keep=256 * 1024)  # room for about half of the 300 vectors (2.5 KB each) and their rows
    out = cli("index", many_images, "--index", idx, "--batch-size", "8", "-q")
    assert out.returncode == 1, out.stderr
    done = committed_rows(idx)
    assert 1 < done < 300  # some batches were committed before the disk filled
    ok(cli("check", idx))
    with Index.open(idx) as ix:
        assert len(ix) == done
    filler.unlink()  # free the space: the same command resumes and completes
    again = json.loads(ok(cli("index", many_images, "--index", idx, "--json")).stdout)
    assert again["added"] == 300 - done
    ok(cli("check", idx))
    with Index.open(idx) as ix:
        assert len(ix) == 300 and ix.store.catalog.n_rows() == 300


def test_full_disk_error_is_one_clear_line(small_disk, many_images):
    mnt, fill = small_disk
    idx = mnt / "idx"
    ok(cli("index", many_images / "img0000.jpg", "--index", idx, "-e", "cnn", "-q"))
    fill(keep=64 * 1024)
    out = cli("index", many_images, "--index", idx, "--batch-size", "8", "-q")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "full" in out.stderr.lower() or "no space" in out.stderr.lower()


def test_disk_filling_mid_batch_never_commits_missing_vectors(small_disk, many_images):
    """The worst moment: the catalog's WAL has free room (after a checkpoint) but the vector file has not."""
    mnt, fill = small_disk
    idx = mnt / "idx"
    filled = []
    with Index.create(idx, extractor="cnn") as ix:

        def progress(done, total):
            if done == 40 and not filled:  # between two batches of 8
                ix.store.catalog.db.execute("PRAGMA wal_checkpoint(RESTART)")  # the WAL is reused from its start
                filled.append(fill(keep=8192))  # less than one batch of vectors (8 x 2.5 KB)

        with pytest.raises(OSError):
            ix.add(many_images, jobs=1, batch_size=8, progress=progress)
        assert ix.check() == [], "rows were committed that the vector file does not hold"
        done = ix.store.catalog.n_rows()
    assert ok(cli("check", idx))
    filled[0].unlink()
    ok(cli("index", many_images, "--index", idx, "-q"))
    with Index.open(idx) as ix:
        assert len(ix) == 300 and ix.check() == [] and ix.store.catalog.n_rows() >= done
