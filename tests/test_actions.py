"""Duplicate actions and undo, attacked: collisions, two runs at once, swapped folders,
forged logs, SIGKILL at every step, a full disk across file systems."""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from lookalike import Index
from lookalike import actions as act
from lookalike.actions import read_log

from .conftest import DEMO, LOOKALIKE, run_cli

run = run_cli


def one_line_error(out) -> str:
    """The run failed with exactly one error line (other lines are the report before it)."""
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = [s for s in out.stderr.strip().splitlines() if s.startswith("Error")]
    assert len(lines) == 1, out.stderr
    return lines[0]


def tree_state(*folders: Path) -> dict[str, tuple]:
    """Every entry under ``folders``: content hash and mtime, or symlink target."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def contents(*folders: Path) -> list[str]:
    """Content hashes of every regular file under ``folders`` (symlinks not followed)."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest()
                  for f in folders for p in Path(f).rglob("*")
                  if p.is_file() and not p.is_symlink() and p.name != act.SKIP_MARKER)


def sized(src: Path, dst: Path, scale: float) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))), Image.LANCZOS).save(dst, quality=90)


def pairs(folder: Path, names=("cat", "coffee", "rocket", "brick")) -> None:
    """Each picture twice: the original (the keeper) and a half-size copy in sub/."""
    for n in names:
        sized(DEMO / f"{n}.jpg", folder / f"{n}.jpg", 1.0)
        sized(DEMO / f"{n}.jpg", folder / "sub" / f"{n}_small.jpg", 0.5)


def indexed(idx: Path, *roots: Path) -> Path:
    for r in roots:
        run("index", r, "--index", idx, "-e", "phash", "-j", "1", "-q")
    return idx


def log_of(out) -> str:
    line = [s for s in out.stderr.splitlines() if "undo log:" in s][-1]
    return line.split("undo log: ")[1].split(" (")[0].strip()


# -- 1. destinations never collide, nothing is overwritten ---------------------------------

@pytest.mark.parametrize("op", ["--move-to", "--symlink"])
def test_roots_with_the_same_name_keep_apart_and_undo_restores_all(tmp_path, op):
    roots = [tmp_path / f"d{n}" / "Photos" for n in range(3)]
    for r, scale in zip(roots, (1.0, 0.8, 0.6)):
        sized(DEMO / "cat.jpg", r / "x.jpg", scale)  # one picture at three sizes, same name
    idx = indexed(tmp_path / "idx", *roots)
    before = tree_state(tmp_path / "d0", tmp_path / "d1", tmp_path / "d2")
    extra = [tmp_path / "mv"] if op == "--move-to" else []
    out = run("duplicates", "--index", idx, op, *extra, "--yes")
    assert "2 done, 0 not done" in out.stderr
    kept = tmp_path / "mv" if op == "--move-to" else idx / "trash"
    assert len(contents(kept)) == 2 and len(set(contents(kept))) == 2  # two different files, none lost
    assert sorted(contents(*roots, kept)) == sorted(h for h, _ in before.values())
    run("undo", log_of(out))
    assert tree_state(tmp_path / "d0", tmp_path / "d1", tmp_path / "d2") == before


def test_an_existing_destination_is_never_overwritten(tmp_path):
    photos = tmp_path / "photos"
    pairs(photos, ("cat",))
    idx = indexed(tmp_path / "idx", photos)
    [a] = [a for a in act.plan_actions(Index.open(idx), Index.open(idx).duplicates(), "move", str(tmp_path / "mv"))]
    Path(a.dest).parent.mkdir(parents=True)
    Path(a.dest).write_bytes(b"someone else's file")
    out = run("duplicates", "--index", idx, "--move-to", tmp_path / "mv", "--yes")
    assert "destination exists" in out.stderr
    assert Path(a.dest).read_bytes() == b"someone else's file" and os.path.isfile(a.path)


def test_a_destination_created_after_planning_is_not_overwritten(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    pairs(photos, ("cat",))
    with Index.open(indexed(tmp_path / "idx", photos)) as ix:
        [a] = act.plan_actions(ix, ix.duplicates(), "move", str(tmp_path / "mv"))

        def sneak(stage, n):
            if stage == "checked":
                Path(a.dest).parent.mkdir(parents=True, exist_ok=True)
                Path(a.dest).write_bytes(b"arrived late")

        monkeypatch.setattr(act, "_hook", sneak)
        _, entries = act.apply_actions(ix, [a])
    assert entries[0]["state"] == "failed" and "exists" in entries[0]["error"]
    assert Path(a.dest).read_bytes() == b"arrived late" and os.path.isfile(a.path)


# -- 2. two runs at once -------------------------------------------------------------------

def test_a_second_run_is_refused_while_one_acts(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    second = {}

    def race(stage, n):
        if stage == "after_intent" and n == 0:  # the first run holds the lock and has started
            second["mid"] = tree_state(photos)
            second["out"] = run("duplicates", "--index", idx, "--symlink", "--yes", check=False)
            second["after"] = tree_state(photos)

    with Index.open(idx) as ix:
        plan = act.plan_actions(ix, ix.duplicates(), "symlink", str(idx / "trash"))
        monkeypatch.setattr(act, "_hook", race)
        log, entries = act.apply_actions(ix, plan)
    assert "another lookalike process" in one_line_error(second["out"])
    assert second["after"] == second["mid"]  # the refused run changed nothing
    assert all(e["state"] == "done" for e in entries) and len(entries) == 4
    monkeypatch.setattr(act, "_hook", lambda *a: None)
    assert all(o.ok for o in act.undo(log))
    assert tree_state(photos) == before


def test_two_real_runs_started_together_lose_nothing(tmp_path):
    photos = tmp_path / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    procs = [subprocess.Popen([*LOOKALIKE, "duplicates", "--index", str(idx), "--symlink", "--yes"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for _, err in outs:
        assert "Traceback" not in err
    logs = sorted(glob.glob(str(idx / "undo" / "*.jsonl")), key=os.path.getmtime)
    assert 1 <= len(logs) <= 2 and len(set(logs)) == len(logs)  # never one shared log
    assert set(contents(photos, idx / "trash")) == {h for h, _ in before.values()}  # every picture still there
    for log in reversed(logs):
        run("undo", log)
    assert tree_state(photos) == before


def test_default_log_names_are_unique_within_one_second(tmp_path):
    names = set()
    for _ in range(20):
        j = act.Journal.create(str(tmp_path), {"index": str(tmp_path), "op": "move", "dest": None})
        j.close()
        names.add(j.path)
    assert len(names) == 20


# -- 3. time of check to time of use -------------------------------------------------------

@pytest.mark.parametrize("op", ["delete", "move"])
def test_a_folder_swapped_for_a_symlink_mid_run_redirects_nothing(tmp_path, monkeypatch, op):
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    outside.mkdir()
    for p in (photos / "sub").iterdir():  # same names, other files
        shutil.copy(DEMO / "hubble.jpg", outside / p.name)
    outside_before = tree_state(outside)

    def swap(stage, n):
        if stage == "after_intent" and n == 0:
            os.rename(photos / "sub", tmp_path / "sub.real")
            os.symlink(outside, photos / "sub")

    with Index.open(idx) as ix:
        plan = act.plan_actions(ix, ix.duplicates(), op, str(tmp_path / "mv") if op == "move" else None)
        assert len([a for a in plan if not a.skip]) == 4
        monkeypatch.setattr(act, "_hook", swap)
        _, entries = act.apply_actions(ix, plan)
    assert tree_state(outside) == outside_before
    assert all(e["state"] == "failed" and "symlink" in e["error"] for e in entries)
    assert len(list((tmp_path / "sub.real").iterdir())) == 4


def test_a_file_swapped_between_check_and_delete_survives(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    pairs(photos, ("cat",))
    idx = indexed(tmp_path / "idx", photos)
    victim = photos / "sub" / "cat_small.jpg"

    def swap(stage, n):
        if stage == "checked":
            os.rename(victim, tmp_path / "was.jpg")
            victim.write_bytes(b"a new file that nobody planned to delete")

    with Index.open(idx) as ix:
        plan = act.plan_actions(ix, ix.duplicates(), "delete")
        monkeypatch.setattr(act, "_hook", swap)
        _, entries = act.apply_actions(ix, plan)
    assert entries[0]["state"] == "failed"
    assert victim.read_bytes() == b"a new file that nobody planned to delete"
    assert not list((photos / "sub").glob(".*"))  # no staged leftovers


def test_a_keeper_gone_just_before_acting_stops_the_deletion(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    pairs(photos, ("cat",))
    idx = indexed(tmp_path / "idx", photos)

    def lose_keeper(stage, n):
        if stage == "after_intent":
            os.rename(photos / "cat.jpg", tmp_path / "elsewhere.jpg")

    with Index.open(idx) as ix:
        plan = act.plan_actions(ix, ix.duplicates(), "delete")
        monkeypatch.setattr(act, "_hook", lose_keeper)
        _, entries = act.apply_actions(ix, plan)
    assert "keeper" in entries[0]["error"] and (photos / "sub" / "cat_small.jpg").exists()


def test_a_destination_that_holds_a_root_is_refused(tmp_path):
    photos = tmp_path / "photos"
    pairs(photos, ("cat",))
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    line = one_line_error(run("duplicates", "--index", idx, "--move-to", tmp_path, "--yes", check=False))
    assert "contains the indexed folder" in line
    assert tree_state(photos) == before


# -- 5. undo trusts only its own logs --------------------------------------------------------

@pytest.fixture
def moved(tmp_path):
    """An index whose duplicates were moved: (idx, photos, log path, state before)."""
    photos = tmp_path / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    out = run("duplicates", "--index", idx, "--move-to", tmp_path / "mv", "--yes")
    return idx, photos, log_of(out), before


def test_a_forged_log_moves_nothing(moved, tmp_path):
    idx, photos, log, _ = moved
    secret, target = tmp_path / "secret" / "a.txt", tmp_path / "elsewhere" / "b.txt"
    secret.parent.mkdir()
    secret.write_text("keep me")
    records = [json.loads(x) for x in Path(log).read_text().splitlines()]
    records[1].update(path=str(target), dest=str(secret))  # a real log, one entry edited
    forged = tmp_path / "forged.jsonl"
    forged.write_text("".join(json.dumps(r) + "\n" for r in records))
    line = one_line_error(run("undo", forged, check=False))
    assert "not written by lookalike" in line and "nothing was undone" in line
    made = tmp_path / "made.jsonl"  # written from scratch, with made-up signatures
    made.write_text(json.dumps({"lookalike_undo_log": 2, "index": str(idx), "op": "move", "dest": "/",
                                "mac": "0" * 64}) + "\n")
    assert "not written by lookalike" in one_line_error(run("undo", made, check=False))
    assert secret.read_text() == "keep me" and not target.parent.exists()


def test_a_log_signed_for_another_index_is_refused(moved, tmp_path):
    idx, photos, log, _ = moved
    other = tmp_path / "other"
    pairs(other, ("coffee",))
    indexed(tmp_path / "idx2", other)
    run("duplicates", "--index", tmp_path / "idx2", "--delete", "--yes")  # makes idx2's key
    records = [json.loads(x) for x in Path(log).read_text().splitlines()]
    records[0]["index"] = str(tmp_path / "idx2")
    switched = tmp_path / "switched.jsonl"
    switched.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert "fails its signature" in one_line_error(run("undo", switched, check=False))


@pytest.mark.parametrize("body", [b"", b"\x00\xff garbage", b"[1, 2]\n", b'{"version": 1, "actions": []}',
                                  b'{"lookalike_undo_log": 2}\n', b'{"mac": "x"}\n{"mac": "y"}\n'])
def test_malformed_logs_give_one_line(tmp_path, body):
    log = tmp_path / "log.jsonl"
    log.write_bytes(body)
    line = one_line_error(run("undo", log, check=False))
    assert str(log) in line


def test_an_old_unsigned_log_says_how_to_restore_by_hand(tmp_path):
    log = tmp_path / "undo-old.json"
    log.write_text(json.dumps({"version": 1, "actions": [{"op": "move", "path": "/a", "dest": "/b"}]}, indent=2))
    line = one_line_error(run("undo", log, check=False))
    assert "older lookalike" in line and "'dest' back to its 'path'" in line


def test_undo_is_repeatable(moved):
    idx, photos, log, before = moved
    run("undo", log)
    again = run("undo", log)
    assert "in place" in again.stdout and tree_state(photos) == before


def test_undo_checks_paths_against_the_roots_now(moved, tmp_path):
    idx, photos, log, before = moved
    os.rename(photos, tmp_path / "photos.away")
    os.symlink(tmp_path / "elsewhere", photos)  # the root is now a symlink to another place
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    out = run("undo", log, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "no longer the folder that was indexed" in out.stderr
    assert not list((tmp_path / "elsewhere" / "sub").iterdir())


# -- 7. SIGKILL at every step; the log is written first ---------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    import lookalike.actions as act
    stage, n = sys.argv[1], int(sys.argv[2])
    def hook(s, i):
        if (s, i) == (stage, n):
            os.kill(os.getpid(), signal.SIGKILL)
    act._hook = hook
    from lookalike.cli import main
    sys.argv = ["lookalike"] + sys.argv[3:]
    main()
""")


def killed(stage: str, n: int, *args) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-c", KILLER, stage, str(n), *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL, out.stderr
    return out


@pytest.mark.parametrize("op,stage", [
    ("move", "after_intent"), ("move", "checked"), ("move", "moved"), ("move", "after_done"),
    ("symlink", "checked"), ("symlink", "moved"), ("symlink", "linked"),
    ("delete", "staged"),
])
def test_sigkill_at_any_step_then_undo_restores_everything(tmp_path, op, stage):
    photos = tmp_path / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    args = {"move": ["--move-to", tmp_path / "mv"], "symlink": ["--symlink"], "delete": ["--delete"]}[op]
    killed(stage, 1, "duplicates", "--index", idx, *args, "--yes")
    [log] = glob.glob(str(idx / "undo" / "*.jsonl"))
    entries = read_log(log)[1]
    # the second action's intent is on disk (and its outcome when killed after it)
    assert len(entries) == 2 and entries[1]["state"] == ("done" if stage == "after_done" else "intent")
    out = run("undo", log, check=False)
    assert "Traceback" not in out.stderr
    state = tree_state(photos)
    if op == "delete":  # the first deletion was done for good; the interrupted one comes back
        assert "cannot undo a deletion" in out.stderr and out.returncode == 1
        assert entries[1]["path"] in state and entries[0]["path"] not in state
        assert {p: v for p, v in before.items() if p != entries[0]["path"]} == state
    else:
        assert out.returncode == 0, out.stderr
        assert state == before


def test_sigkill_during_a_symlink_undo_then_undo_again(tmp_path):
    photos = tmp_path / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    log = log_of(run("duplicates", "--index", idx, "--symlink", "--yes"))
    killed("undo_unlinked", 2, "undo", log)  # killed after removing a symlink, before moving back
    run("undo", log)
    assert tree_state(photos) == before


def test_symlink_undo_keeps_the_symlink_when_the_trash_copy_is_gone(tmp_path):
    photos = tmp_path / "photos"
    pairs(photos, ("cat",))
    idx = indexed(tmp_path / "idx", photos)
    log = log_of(run("duplicates", "--index", idx, "--symlink", "--yes"))
    [entry] = read_log(log)[1]
    os.remove(entry["dest"])
    out = run("undo", log, check=False)
    assert out.returncode == 1 and "the symlink stays" in out.stderr
    assert os.path.islink(entry["path"])


# -- 8. across file systems, onto a full disk ------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not permitted in this sandbox?): {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_undo_across_file_systems_onto_a_full_disk_then_again(small_disk, tmp_path):
    photos = small_disk / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    mv = tmp_path / "mv"  # another file system than the photos
    assert os.stat(mv.parent).st_dev != os.stat(photos).st_dev
    log = log_of(run("duplicates", "--index", idx, "--move-to", mv, "--yes"))
    assert len(contents(mv)) == 4 and not list((photos / "sub").iterdir())
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    out = run("undo", log, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "No space left" in out.stderr
    for p in (photos / "sub").iterdir():  # nothing half-written at a real path, no part files left
        assert before.get(str(p), (None,))[0] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert len(contents(mv)) + len(list((photos / "sub").iterdir())) == 4
    filler.unlink()
    run("undo", log)
    assert tree_state(photos) == before and not contents(mv)


def test_check_names_an_interrupted_run_until_it_is_undone(tmp_path):
    photos = tmp_path / "photos"
    pairs(photos)
    idx = indexed(tmp_path / "idx", photos)
    before = tree_state(photos)
    killed("moved", 1, "duplicates", "--index", idx, "--symlink", "--yes")  # original in the trash, no symlink yet
    [log] = glob.glob(str(idx / "undo" / "*.jsonl"))
    out = run("check", idx, check=False)
    assert out.returncode == 1 and "was interrupted with 1 action(s) unfinished" in out.stderr
    assert f"lookalike undo {log}" in out.stderr
    run("undo", log)
    assert tree_state(photos) == before
    assert run("check", idx).stdout.strip().endswith("ok")
