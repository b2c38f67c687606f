"""The package as a whole: its public names, what importing it costs, and the linters."""

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import lookalike
from lookalike import errors

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("onnxruntime", "cv2", "faiss", "fastapi", "pymilvus", "torch")


def test_every_name_in_all_exists():
    missing = [name for name in lookalike.__all__ if not hasattr(lookalike, name)]
    assert not missing, f"in lookalike.__all__ but not defined: {missing}"
    assert len(set(lookalike.__all__)) == len(lookalike.__all__), "lookalike.__all__ lists a name twice"


def test_every_public_class_and_function_is_in_all():
    public = {
        name for name, value in vars(lookalike).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public - set(lookalike.__all__) == set(), "exported by lookalike/__init__.py but not in __all__"


def test_version_has_one_home():
    from lookalike.version import __version__

    assert lookalike.__version__ == __version__
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == __version__


def test_every_error_is_a_lookalike_error():
    raised_on_purpose = [v for v in vars(lookalike).values() if inspect.isclass(v) and issubclass(v, Exception)]
    assert len(raised_on_purpose) > 10
    assert [e.__name__ for e in raised_on_purpose if not issubclass(e, lookalike.LookalikeError)] == []
    # callers that catch the built-in kinds keep working
    assert issubclass(lookalike.UsageError, ValueError)
    assert issubclass(lookalike.UnknownExtractor, ValueError)
    assert issubclass(lookalike.PathNotFound, FileNotFoundError)
    assert issubclass(lookalike.RootError, OSError)
    assert issubclass(lookalike.MilvusUnavailable, ImportError)
    assert issubclass(lookalike.NotTrained, RuntimeError)


def test_not_trained_has_one_class():
    from lookalike.extractors.keypoints import NotTrained

    assert NotTrained is errors.NotTrained is lookalike.NotTrained


@pytest.mark.parametrize("args, message", [
    (["index", "{tmp}/missing", "--index", "{tmp}/idx", "-e", "phash"], "no such file or folder"),  # PathNotFound
    (["index", "{tmp}", "--index", "{tmp}/idx", "-e", '{"name": "phash", "hash_size": 1}'], "hash_size"),  # UsageError
    (["info", "{tmp}/nothing"], "not a lookalike index"),  # NotAnIndex
])
def test_cli_says_a_lookalike_error_in_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from lookalike.cli import main

    result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_import_loads_nothing_heavy():
    code = f"import json, sys, lookalike; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == [], "`import lookalike` imports these; import them where they are used"


def test_py_typed_is_shipped():
    assert (ROOT / "lookalike" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


# -- linters ----------------------------------------------------------------------------
def _tool(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")


def _files_with_findings(output: str, finding: str) -> str:
    """``lookalike/x.py (3), ...``: the files with lines of ``output`` that match ``finding``."""
    counts = Counter(m.group(1) for m in re.finditer(r"^(lookalike/\S+?\.py):\d+:" + finding, output, re.M))
    return ", ".join(f"{path} ({n})" for path, n in sorted(counts.items())) or output[-2000:]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NO_COLOR": "1"})


def test_ruff_finds_nothing():
    _tool("ruff")
    done = _run(["ruff", "check", "--no-cache", "--output-format", "concise", "lookalike"])
    assert done.returncode == 0, "ruff findings remain in: " + _files_with_findings(done.stdout + done.stderr, r"\d+: ")


def test_mypy_finds_nothing():
    """On failure the message names every file with findings and how many (settings: pyproject.toml)."""
    _tool("mypy")
    done = _run(["mypy", "--cache-dir", os.devnull, "--no-error-summary", "--hide-error-context", "lookalike"])
    assert done.returncode == 0, "mypy findings remain in: " + _files_with_findings(done.stdout + done.stderr, " error: ")
