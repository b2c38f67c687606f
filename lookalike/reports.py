"""Duplicate groups written out: JSON, CSV, an HTML page with thumbnails, a contact sheet.

The groups come from :func:`lookalike.grouping.find_duplicates`; nothing here
changes them.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from typing import Sequence

from .grouping import DuplicateGroup
from .thumbnails import data_uri, square
from .errors import UsageError


def duplicate_mapping(groups: Sequence[DuplicateGroup]) -> dict[str, list[dict]]:
    """Every grouped file -> the other members of its group, each with its score (its
    similarity to the keeper; 1.0 for the keeper) and whether it is the keeper."""
    out: dict[str, list[dict]] = {}
    for g in groups:
        for m in g.members:
            out[m.path] = [{"path": o.path, "score": o.score, "keeper": o is g.keeper}
                           for o in g.members if o is not m]
    return out


def totals(groups: Sequence[DuplicateGroup]) -> dict[str, int]:
    """Groups, duplicates (members that are not keepers) and their bytes: what acting on them frees."""
    others = [m for g in groups for m in g.others]
    return {"groups": len(groups), "duplicates": len(others), "duplicate_bytes": sum(m.size or 0 for m in others)}


def report_json(groups: Sequence[DuplicateGroup], meta: dict | None = None) -> str:
    """The groups, their totals, and :func:`duplicate_mapping`, as one JSON object."""
    return json.dumps({**(meta or {}), **totals(groups), "groups": [g.to_dict() for g in groups],
                       "mapping": duplicate_mapping(groups)}, indent=2)


def write_report(groups: Sequence[DuplicateGroup], out: str, meta: dict | None = None) -> str:
    """Write ``out`` as JSON, CSV or HTML, chosen by its extension."""
    ext = os.path.splitext(out)[1].lower()
    if ext == ".json":
        text = report_json(groups, meta)
    elif ext == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["group", "level", "role", "path", "id", "score", "width", "height", "size", "side"])
        for n, g in enumerate(groups, 1):
            for m in g.members:
                w.writerow([n, g.level, "keep" if m is g.keeper else "duplicate", m.path, m.id, m.score,
                            m.width, m.height, m.size, m.side])
        text = buf.getvalue()
    elif ext in (".html", ".htm"):
        text = report_html(groups, meta)
    else:
        raise UsageError(f"report {out}: use a .json, .csv or .html file name")
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return out


def report_html(groups: Sequence[DuplicateGroup], meta: dict | None = None, thumb: int = 160) -> str:
    """One self-contained page: a section per group, thumbnails inlined as ``data:`` URIs
    (``thumb`` px, longest side), the keeper outlined."""
    esc = html.escape
    meta = meta or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lookalike duplicates</title><style>",
        "body{font-family:sans-serif;margin:1em}section{border-top:1px solid #ccc;padding:.5em 0}",
        "figure{display:inline-block;vertical-align:top;margin:.3em;width:%dpx;font-size:12px}" % thumb,
        "figure img{max-width:%dpx;max-height:%dpx;display:block}.keep{outline:3px solid #1a9e3c}" % (thumb, thumb),
        "figcaption{word-break:break-all}</style></head><body>",
        f"<h1>{len(groups)} duplicate groups</h1>",
        "<p>" + esc(", ".join(f"{k}: {v}" for k, v in meta.items())) + "</p>",
    ]
    for n, g in enumerate(groups, 1):
        parts.append(f"<section><h2>Group {n} ({len(g.members)} files, level {esc(g.level)})</h2>")
        for m in g.members:
            uri = data_uri(m.path, thumb)
            img = f"<img src='{uri}' alt=''>" if uri else "<div>(no preview)</div>"
            role = "keep" if m is g.keeper else f"score {m.score:.3f}"
            res = f"{m.width}x{m.height}" if m.width else "?"
            size = f"{m.size / 1024:.0f} KiB" if m.size is not None else "?"
            cls = " class='keep'" if m is g.keeper else ""
            parts.append(f"<figure{cls}>{img}<figcaption><b>{esc(role)}</b><br>{res}, {size}"
                         f"{' (' + esc(m.side) + ')' if m.side != 'index' else ''}<br>{esc(m.path)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def duplicates_sheet(groups: Sequence[DuplicateGroup], out_path: str, thumb: int = 160) -> str:
    """A contact sheet (the layout of :mod:`lookalike.sheet`): one row per group,
    keeper first (green frame, "keep"), then the others with their scores."""
    from PIL import Image, ImageDraw, ImageFont

    from .sheet import LABEL, PAD

    cols = max((len(g.members) for g in groups), default=1)
    cell_w, cell_h = thumb + PAD, thumb + LABEL + PAD
    sheet = Image.new("RGB", (PAD + cols * cell_w, PAD + max(1, len(groups)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for r, g in enumerate(groups):
        y = PAD + r * cell_h
        for c, m in enumerate(g.members):
            x = PAD + c * cell_w
            sheet.paste(square(m.path, thumb), (x, y))
            if m is g.keeper:
                draw.rectangle([x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=(30, 160, 60), width=3)
            label = "keep" if m is g.keeper else f"{m.score:.3f}"
            if m.width:
                label += f"  {m.width}x{m.height}"
            name = os.path.basename(m.path)
            name = name if len(name) <= 24 else name[:21] + "..."
            draw.text((x, y + thumb + 3), label, fill="black", font=font)
            draw.text((x, y + thumb + 18), name, fill=(90, 90, 90), font=font)
    sheet.save(out_path)
    return os.fspath(out_path)
