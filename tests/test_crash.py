"""Kill a real indexing process at random moments; the index must survive and resume."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from lookalike import Index

from .conftest import make_pattern_images

N_IMAGES = 240


def committed_rows(idx) -> int:
    try:
        db = sqlite3.connect(f"file:{idx}/catalog.sqlite?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT value FROM meta WHERE key='n_rows'").fetchone()
            return int(row[0]) if row else 0
        finally:
            db.close()
    except sqlite3.Error:
        return 0


#: SIGINT as a terminal's Ctrl-C finds a foreground command: a shell starts background jobs
#: (a test run in one) with SIGINT ignored, and the command would keep ignoring it. It is
#: restored in the fresh interpreter, not in a preexec_fn: forking this test process (which
#: may hold gRPC threads from the Milvus tests) and running Python in the child can abort it.
_FOREGROUND = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'lookalike'; runpy.run_module('lookalike.cli', run_name='__main__')"
)


def start_indexing(folder, idx):
    cmd = [sys.executable, "-c", _FOREGROUND, "index", str(folder), "--index", str(idx),
           "--batch-size", "8", "--jobs", "2", "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc, timeout: float = 300) -> tuple[int, str]:
    """Exit status and standard error of ``proc`` once it ends."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for_rows(proc, idx, at_least: int, timeout: float = 120) -> bool:
    """True when ``at_least`` rows are committed while the process still runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if committed_rows(idx) >= at_least:
            return True
        time.sleep(0.005)
    return False


def children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except OSError:
        return set()


def wait_gone(pids: set[int], timeout: float = 10) -> set[int]:
    end = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < end:
        alive = {p for p in alive if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]}
        time.sleep(0.1)
    return alive


def vectors_by_path(idx) -> dict:
    with Index.open(idx) as ix:
        assert ix.check() == []
        live = ix.live()
        return {p: np.array(live.matrix[r]) for p, r in zip(live.paths, live.rows)}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash") / "images"
    make_pattern_images(folder, N_IMAGES, size=96, seed=3)
    return folder


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory):
    idx = tmp_path_factory.mktemp("ref") / "idx"
    with Index.create(idx, extractor="cnn") as ix:
        ix.add(image_folder, jobs=1)
    return vectors_by_path(idx)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(image_folder, reference, tmp_path):
    idx = tmp_path / "idx"
    rng = random.Random(11)
    kills = 0
    for attempt in range(4):
        proc = start_indexing(image_folder, idx)
        target = committed_rows(idx) + rng.randint(1, 40)
        # let it commit some batches, then kill it at a random moment in the middle of one
        if wait_for_rows(proc, idx, target):
            time.sleep(rng.uniform(0, 0.05))
            workers = children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            kills += 1
            assert wait_gone(workers) == set(), "decoding workers outlived the killed indexer"
        proc.wait(timeout=120)
        with Index.open(idx) as ix:  # opens, consistent, no half-written entries
            assert ix.check() == []
            paths = [r.path for r in ix.store.catalog.records()]
            assert len(paths) == len(set(paths))
            assert len(ix) == committed_rows(idx)  # every committed row belongs to one file
    assert kills >= 2
    code, err = finished(start_indexing(image_folder, idx))
    assert code == 0, err
    got = vectors_by_path(idx)
    assert set(got) == set(reference)
    for path, vec in reference.items():
        assert float(vec @ got[path]) > 0.999, path  # float16 storage
    with Index.open(idx) as ix:
        assert ix.store.catalog.n_rows() == N_IMAGES  # nothing embedded twice


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(image_folder, reference, tmp_path):
    idx = tmp_path / "idx"
    proc = start_indexing(image_folder, idx)
    assert wait_for_rows(proc, idx, 16), "indexing finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "stopping after the current batch" in err  # said at once, before the batch is done
    assert "Interrupted" in err and "run the same command again" in err
    assert "Traceback" not in err
    done = committed_rows(idx)
    assert 16 <= done < N_IMAGES
    code, err = finished(start_indexing(image_folder, idx))
    assert code == 0, err
    assert set(vectors_by_path(idx)) == set(reference)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_the_rerun_completes(image_folder, reference, tmp_path):
    idx = tmp_path / "idx"
    proc = start_indexing(image_folder, idx)
    assert wait_for_rows(proc, idx, 8), "indexing finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "stopping after the current batch" in err or "stopped at once" in err
    code, err = finished(start_indexing(image_folder, idx))
    assert code == 0, err
    assert set(vectors_by_path(idx)) == set(reference)
    with Index.open(idx) as ix:
        assert ix.check() == []
