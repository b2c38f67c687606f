"""``manifest.json``: what an index directory holds and how it was made."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class IndexStoreError(Exception):
    """Base class for problems with an index directory."""


class NotAnIndex(IndexStoreError):
    pass


class ExtractorMismatch(IndexStoreError):
    pass


class SchemaTooNew(IndexStoreError):
    pass


@dataclass
class Manifest:
    extractor: dict[str, Any]  # the extractor's spec
    dim: int
    dtype: str
    metric: str
    schema_version: int = SCHEMA_VERSION
    lookalike_version: str = ""
    vectors: str = "vectors.bin"
    catalog: str = "catalog.sqlite"
    files: dict[str, str] = field(default_factory=dict)  # extra files, name -> role
    ann: str = "auto"  # approximate search: auto, exact, hnsw or ivfpq (see lookalike.ann)
    local: dict[str, Any] | None = None  # keypoints stored for verification (see lookalike.local)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> None:
    """Write atomically: a reader sees the old or the new file, never half of one."""
    directory = Path(directory)
    tmp = directory / (MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST_NAME)


def read_manifest(directory: str | os.PathLike) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotAnIndex(f"{directory} is not a lookalike index (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as e:
        raise NotAnIndex(f"cannot read {path}: {e}") from None
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{directory} has index schema version {version}; this lookalike reads "
            f"up to {SCHEMA_VERSION}: upgrade lookalike"
        )
    known = {k: v for k, v in data.items() if k in Manifest.__dataclass_fields__}
    return Manifest(**known)


def spec_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable list of keys whose values differ between two specs."""
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        if stored.get(key) != wanted.get(key):
            diffs.append(f"{key}: index has {stored.get(key)!r}, asked for {wanted.get(key)!r}")
    return diffs


def check_extractor(manifest: Manifest, wanted: dict[str, Any], directory: str) -> None:
    diffs = spec_differences(manifest.extractor, wanted)
    if diffs:
        raise ExtractorMismatch(
            f"index {directory} was built with a different extractor:\n  " + "\n  ".join(diffs)
        )
