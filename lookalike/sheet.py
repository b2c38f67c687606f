"""Contact sheets: a query and its hits as a grid of thumbnails with scores."""

from __future__ import annotations

import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .thumbnails import square

THUMB = 160
LABEL = 34
PAD = 8


def contact_sheet(
    rows: Sequence[tuple[str, Sequence[tuple[str, float, bool]]]],
    out_path: str | os.PathLike,
    *,
    thumb: int = THUMB,
) -> str:
    """Write a PNG with one row per query: the query, then its hits.

    ``rows``: ``(query_path, [(hit_path, score, highlight), ...])``; a
    highlighted hit (e.g. the expected original) gets a green frame.
    Returns the path written.
    """
    cols = 1 + max((len(h) for _, h in rows), default=0)
    cell_w, cell_h = thumb + PAD, thumb + LABEL + PAD
    sheet = Image.new("RGB", (PAD + cols * cell_w, PAD + max(1, len(rows)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for r, (query, hits) in enumerate(rows):
        y = PAD + r * cell_h
        cells = [(query, "query", None)] + [(p, f"{s:.3f}", hl) for p, s, hl in hits]
        for c, (path, label, highlight) in enumerate(cells):
            x = PAD + c * cell_w
            sheet.paste(square(path, thumb), (x, y))
            if c == 0:
                draw.rectangle([x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=(40, 90, 200), width=3)
            elif highlight:
                draw.rectangle([x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=(30, 160, 60), width=3)
            name = os.path.basename(path)
            if len(name) > 24:
                name = name[:21] + "..."
            draw.text((x, y + thumb + 3), label, fill="black", font=font)
            draw.text((x, y + thumb + 18), name, fill=(90, 90, 90), font=font)
    out_path = os.fspath(out_path)
    sheet.save(out_path)
    return out_path
