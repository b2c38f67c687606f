"""Helpers shared by the benchmark scripts: paths, machine description, tables."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

#: The repository root (this file is ``<repo>/bench/common.py``).
REPO = Path(__file__).resolve().parent.parent

#: Where the public benchmark lives unless ``--bench`` says otherwise.
DEFAULT_BENCH = REPO.parent / "shared" / "bench"


def command_line() -> str:
    """The command exactly as it was typed (interpreter included), shell-quoted."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return " ".join(shlex.quote(a) for a in argv)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU and library versions that the numbers depend on."""
    import cv2
    import numpy
    import onnxruntime
    import PIL

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "lookalike": _version("lookalike"),
    }


def print_header(title: str, machine: dict[str, Any]) -> None:
    print(f"# {title}\n")
    print(f"Command: `{command_line()}`\n")
    print(
        f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs "
        f"({machine['cpus_usable']} usable), {machine['platform']}; "
        f"Python {machine['python']}, onnxruntime {machine['onnxruntime']}, "
        f"OpenCV {machine['opencv']}, NumPy {machine['numpy']}, Pillow {machine['pillow']}, "
        f"lookalike {machine['lookalike']}\n"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """A Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def extractor_label(spec: str) -> str:
    """A short name for an ``--extractor`` value (a name or a JSON spec)."""
    from lookalike.extractors import registry

    if not spec.lstrip().startswith("{"):
        return spec  # a name or a short form such as fuse:cnn+color
    parsed = registry.parse(spec)
    extra = {k: v for k, v in parsed.items() if k != "name"}
    if not extra:
        return parsed["name"]
    return parsed["name"] + "(" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + ")"


def slug(text: str) -> str:
    """``text`` made safe as a folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"
