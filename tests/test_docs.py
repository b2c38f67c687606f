"""The documentation cannot rot: every Python block in README.md and docs/ runs, and every
`lookalike ...` command line in them names a real subcommand with real options (issue 19)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lookalike.cli import main

from .conftest import DEMO, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            if m.group(1) == lang:
                out.append((doc.name, text[: m.start()].count("\n") + 1, m.group(2)))
    return out


def command_lines() -> list[tuple[str, int, list[str]]]:
    """``lookalike ...`` lines of the shell blocks (and of the text's inline commands in blocks)."""
    out = []
    for name, line, code in blocks("") + blocks("sh") + blocks("bash"):
        for n, raw in enumerate(code.splitlines()):
            text = raw.strip().removeprefix("$ ")
            if not text.startswith("lookalike "):
                continue
            text = text.split(" #", 1)[0].split(" | ", 1)[0].split(" < ", 1)[0].split(" > ", 1)[0]
            try:
                words = shlex.split(text)
            except ValueError:
                continue
            out.append((name, line + n + 1, words[1:]))
    return out


def test_the_docs_have_commands_and_python_to_check():
    assert len(command_lines()) > 40 and len(blocks("python")) >= 3


@pytest.mark.parametrize("where,line,args", command_lines(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_every_command_line_names_real_options(where, line, args):
    ctx = click.Context(main)
    name = args[0]
    command = main.get_command(ctx, name)
    assert command is not None, f"{where}:{line}: no subcommand {name!r}"
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in args[1:]:
        if word.startswith("-") and word != "-":
            option = word.split("=", 1)[0]
            assert option in known, f"{where}:{line}: `lookalike {name}` has no option {option}"


@pytest.fixture
def workdir(tmp_path) -> Path:
    """What the Python examples name: photos/, query.jpg, a.jpg, b.jpg."""
    (tmp_path / "photos").mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, tmp_path / "photos" / p.name)
    for name in ("query.jpg", "a.jpg", "b.jpg"):
        shutil.copy(DEMO / "cat.jpg", tmp_path / name)
    return tmp_path


def python_blocks():
    return [(n, line, code) for n, line, code in blocks("python")]


@pytest.mark.parametrize("where,line,code", python_blocks(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_every_python_block_runs(where, line, code, workdir):
    if "open_index(" in code or "labelled-photos" in code:
        pytest.importorskip("milvus_lite" if "pics.db" in code else "lookalike")
    if "labelled-photos" in code:  # a folder of class subfolders
        for label, names in (("animals", ("cat.jpg", "astronaut.jpg")), ("things", ("camera.jpg", "coffee.jpg"))):
            (workdir / "labelled-photos" / label).mkdir(parents=True)
            for n in names:
                shutil.copy(DEMO / n, workdir / "labelled-photos" / label / n)
    script = workdir / "example.py"
    script.write_text(code, encoding="utf-8")
    for _ in range(2):  # twice: an example must also run where its index already exists
        out = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{where}:{line}\n{out.stdout}\n{out.stderr}"


def test_links_between_the_documents_lead_somewhere():
    for doc in DOCS:
        for target in re.findall(r"\]\(((?:docs/)?[\w.-]+\.md)\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
