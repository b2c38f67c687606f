"""Find extractors by name through the ``lookalike.extractors`` entry points.

Built-in extractors are declared in lookalike's own ``pyproject.toml`` under
that group, exactly as a third-party plugin would declare its own.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from typing import Any

from ..errors import LookalikeError
from .base import Extractor

GROUP = "lookalike.extractors"
DEFAULT = "cnn"


class UnknownExtractor(LookalikeError, ValueError):
    pass


def available() -> dict[str, Any]:
    """Name -> entry point, for every registered extractor."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def extractor_class(name: str) -> type[Extractor]:
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is lookalike installed with pip?)"
        raise UnknownExtractor(f"unknown extractor {name!r}; registered: {known}")
    return eps[name].load()


def parse(text: str) -> dict[str, Any]:
    """Extractor text as the CLI takes it -> spec dict.

    - a name: ``"cnn"``
    - a JSON spec: ``'{"name": "cnn", ...}'``
    - ``onnx:PATH``: your own ONNX model (``PATH`` made absolute)
    - ``fuse:A+B``: several extractors in one vector, each part itself any of
      these short forms; ``A*2`` weights a part (default 1). Use the JSON spec
      for parts whose text contains ``+``.
    """
    text = text.strip()
    if text.startswith("{"):
        spec = json.loads(text)
        if not isinstance(spec, dict) or "name" not in spec:
            raise UnknownExtractor("a JSON extractor spec needs a \"name\" key")
        return spec
    if text.startswith("onnx:"):
        path = text[len("onnx:") :].strip()
        if not path:
            raise UnknownExtractor("onnx needs the model file: onnx:PATH")
        return {"name": "onnx", "path": os.path.abspath(os.path.expanduser(path))}
    if text.startswith("fuse:"):
        terms = [t.strip() for t in text[len("fuse:") :].split("+")]
        if not any(terms) or not all(terms):
            raise UnknownExtractor("fuse needs parts joined by '+': fuse:A+B, e.g. fuse:cnn*2+phash")
        parts = []
        for term in terms:
            weight = 1.0
            head, star, tail = term.rpartition("*")
            if star:
                try:
                    weight = float(tail)
                except ValueError:
                    pass  # not a weight: the '*' belongs to the part's text
                else:
                    term = head.strip()
            parts.append({"extractor": parse(term), "weight": weight})
        return {"name": "fuse", "parts": parts}
    return {"name": text}


def create(spec: str | dict[str, Any] | Extractor, **runtime: Any) -> Extractor:
    """Build an extractor from a name, a short form (``onnx:PATH``, ``fuse:A+B``),
    a JSON string, a spec dict or an instance.

    ``runtime`` options (e.g. ``threads``) do not change the vectors and are
    passed to the constructor only when it accepts them.
    """
    if isinstance(spec, Extractor):
        return spec
    if isinstance(spec, str):
        spec = parse(spec)
    spec = dict(spec)
    name = spec.pop("name")
    cls = extractor_class(name)
    version = spec.pop("version", cls.version)
    if version != cls.version:
        raise UnknownExtractor(
            f"extractor {name!r} is version {cls.version}, the spec asks for version {version}"
        )
    return cls.from_spec(spec, **runtime) if hasattr(cls, "from_spec") else cls(**spec)
