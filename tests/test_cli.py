"""The CLI end to end, as a user runs it: real subprocesses."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DEMO, ODD

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


def run(*args, check=True, **kw):
    out = subprocess.run([*LOOKALIKE, *map(str, args)], capture_output=True, text=True, timeout=300, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}")
    return out


def test_index_search_info(tmp_path, photos):
    idx = tmp_path / "idx"
    out = run("index", photos, "--index", idx)
    assert "8 added" in out.stdout and "0 skipped" in out.stdout
    again = run("index", photos, "--index", idx, "--json")
    report = json.loads(again.stdout)
    assert report["unchanged"] == 8 and report["added"] == 0

    text = run("search", DEMO / "cat.jpg", "--index", idx, "-k", "3").stdout.splitlines()
    assert text[0].endswith("cat.jpg")
    assert text[1].split()[0] == "1" and text[1].endswith(str(photos / "cat.jpg"))
    assert len(text) == 4

    js = json.loads(run("search", DEMO / "cat.jpg", "--index", idx, "-k", "2", "--json").stdout)
    assert [h["rank"] for h in js["hits"]] == [1, 2]
    assert js["hits"][0]["path"] == str(photos / "cat.jpg")
    assert js["hits"][0]["score"] > 0.999

    info = json.loads(run("info", idx, "--json").stdout)
    assert info["files"] == 8 and info["manifest"]["extractor"]["name"] == "cnn"
    assert info["manifest"]["dim"] == 1280 and info["manifest"]["metric"] == "cosine"
    assert "extractor:" in run("info", idx).stdout


def test_search_a_folder_of_queries_gives_json_lines(tmp_path, photos):
    idx = tmp_path / "idx"
    run("index", photos, "--index", idx, "-e", "phash", "-q")
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(DEMO / "rocket.jpg", queries / "a.jpg")
    shutil.copy(ODD / "text.jpg", queries / "b.jpg")
    lines = run("search", queries, "--index", idx, "-k", "1", "--json").stdout.splitlines()
    objs = [json.loads(line) for line in lines]
    assert [os.path.basename(o["query"]) for o in objs] == ["a.jpg", "b.jpg"]
    assert objs[0]["hits"][0]["path"] == str(photos / "rocket.jpg")
    assert objs[0]["hits"][0]["distance"] == 0
    assert objs[1]["error"] == "not_an_image" and objs[1]["hits"] == []


def test_info_lists_skipped_files(tmp_path):
    idx = tmp_path / "idx"
    out = run("index", ODD, "--index", idx, "-e", "phash")
    assert "5 skipped" in out.stdout and "truncated: 2" in out.stdout
    info = run("info", idx).stdout
    assert "truncated" in info and "text.jpg" in info and "not_an_image" in info


def test_clear_errors(tmp_path, photos):
    out = run("search", DEMO / "cat.jpg", "--index", tmp_path / "none", check=False)
    assert out.returncode == 1 and "not a lookalike index" in out.stderr
    assert "Traceback" not in out.stderr
    run("index", photos, "--index", tmp_path / "idx", "-e", "phash", "-q")
    out = run("index", photos, "--index", tmp_path / "idx", "-e", "cnn", check=False)
    assert out.returncode == 1 and "different extractor" in out.stderr and "phash" in out.stderr
    out = run("search", ODD / "truncated.jpg", "--index", tmp_path / "idx", check=False)
    assert out.returncode == 1 and "truncated" in out.stderr
    out = run("index", photos, "--index", tmp_path / "x", "-e", "surely-not", check=False)
    assert out.returncode == 1 and "unknown extractor" in out.stderr


def test_extractors_listing():
    rows = json.loads(run("extractors", "--json").stdout)
    names = {r["name"]: r for r in rows}
    assert names["cnn"]["dim"] == 1280 and names["phash"]["metric"] == "hamming"
    assert names["kaze-concat"]["dim"] == 2048


def test_demo_runs_and_writes_a_contact_sheet(tmp_path):
    out = run("demo", "--out", tmp_path / "demo").stdout
    assert "Original ranked first for 16 of 16 queries." in out
    sheet = Path(out.split("Contact sheet: ")[1].splitlines()[0])
    assert sheet.exists() and sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_is_installed():
    exe = shutil.which("lookalike", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("lookalike is not installed as a console script in this environment")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "lookalike" in out.stdout


def test_ann_option_and_neighbours(tmp_path, photos):
    idx = tmp_path / "idx"
    run("index", photos, "--index", idx, "-e", "phash", "--ann", "hnsw", "-q")
    assert (idx / "ann.faiss").exists()
    assert "search:     hnsw" in run("info", idx).stdout
    lines = [json.loads(x) for x in run("neighbours", "--index", idx, "-k", "2", "--json").stdout.splitlines()]
    assert len(lines) == 8 and all(len(x["neighbours"]) == 2 for x in lines)
    assert all(x["path"] not in {h["path"] for h in x["neighbours"]} for x in lines)
    run("index", photos, "--index", idx, "--ann", "exact", "-q")
    assert "search:     exact (setting: exact)" in run("info", idx).stdout
