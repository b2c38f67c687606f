"""HTTP API and web page for an index (``lookalike serve``), behind the ``server`` extra.

Importing this package needs nothing beyond lookalike itself;
:mod:`lookalike.server.app` needs FastAPI, uvicorn and python-multipart
(``pip install 'lookalike[server]'``). :func:`missing_dependencies` says which
of them cannot be imported, so callers can print a clear message first.
"""

from __future__ import annotations

import importlib

#: (import name, distribution name) of what the server needs.
REQUIREMENTS = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"))

INSTALL_HINT = "pip install 'lookalike[server]' (from a checkout: pip install -e '.[server]')"


def missing_dependencies() -> list[str]:
    """Distribution names of the server's requirements that cannot be imported."""
    missing = []
    for module, dist in REQUIREMENTS:
        try:
            importlib.import_module(module)
        except ImportError:
            if module == "python_multipart":  # releases before 0.0.13 only had the old name
                try:
                    importlib.import_module("multipart.multipart")
                    continue
                except ImportError:
                    pass
            missing.append(dist)
    return missing


def missing_message(missing: list[str]) -> str:
    return f"the HTTP server needs the 'server' extra: {INSTALL_HINT} (missing: {', '.join(missing)})"


__all__ = ["INSTALL_HINT", "REQUIREMENTS", "missing_dependencies", "missing_message"]
