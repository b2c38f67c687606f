"""The built-in demo: bundled photos, edited copies made on the fly, searched."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..index import Index
from ..sheet import contact_sheet

IMAGES = Path(__file__).resolve().parent / "images"


def _crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.crop((w // 6, h // 6, w - w // 6, h - h // 6))


#: Edits applied to the bundled photos to make queries: name -> function.
EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop": _crop,
    "rotate10": lambda im: im.rotate(10, expand=True, resample=Image.Resampling.BICUBIC),
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "small": lambda im: im.resize((max(1, im.width // 4), max(1, im.height // 4)), Image.Resampling.LANCZOS),
    "mirror": ImageOps.mirror,
    "bright": lambda im: ImageEnhance.Brightness(im).enhance(1.4),
}


def bundled_images() -> list[Path]:
    return sorted(p for p in IMAGES.iterdir() if p.suffix.lower() == ".jpg")


def make_queries(out_dir: str | os.PathLike, per_image: int = 2) -> list[tuple[Path, Path, str]]:
    """Write edited copies of the bundled photos; returns ``(query, original, edit)``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(EDITS)
    made = []
    for i, original in enumerate(bundled_images()):
        with Image.open(original) as opened:
            im = opened.convert("RGB")
            for j in range(per_image):
                edit = names[(i * per_image + j) % len(names)]
                query = out_dir / f"{original.stem}-{edit}.jpg"
                EDITS[edit](im).save(query, quality=75)
                made.append((query, original, edit))
    return made


@dataclass
class DemoQuery:
    query: str
    original: str
    edit: str
    hits: list  # SearchResult
    found_first: bool


@dataclass
class DemoResult:
    index_path: str
    gallery: str
    queries: list[DemoQuery]
    sheet: str

    @property
    def recall_at_1(self) -> float:
        return float(np.mean([q.found_first for q in self.queries])) if self.queries else 0.0


def run_demo(workdir: str | os.PathLike, *, extractor: str = "cnn", k: int = 3, progress=None) -> DemoResult:
    """Index the bundled photos in ``workdir``, search edited copies, draw a contact sheet."""
    workdir = Path(workdir)
    gallery = workdir / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    for p in bundled_images():
        (gallery / p.name).write_bytes(p.read_bytes())
    made = make_queries(workdir / "queries")
    with Index.create(workdir / "index", extractor=extractor) as index:
        index.add(gallery, jobs=1, progress=progress)
        results = index.search_many([q for q, _, _ in made], k=k)
    queries = []
    for (q, original, edit), res in zip(made, results):
        expected = str(gallery / original.name)
        first = bool(res.hits) and res.hits[0].path == expected
        queries.append(DemoQuery(str(q), expected, edit, res.hits, first))
    rows = [(q.query, [(h.path, h.score, h.path == q.original) for h in q.hits]) for q in queries]
    sheet = contact_sheet(rows, workdir / "contact-sheet.png", thumb=120)
    return DemoResult(str(workdir / "index"), str(gallery), queries, sheet)
