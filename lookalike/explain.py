"""Present a verified match: the query beside the matched image, with the matched
keypoints joined by lines and the query's outline drawn where it lies in the match."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from . import decode
from .verify import Match

HEIGHT = 480  # both images are drawn this tall
PAD = 16


def _fit(pixels: np.ndarray) -> tuple[Image.Image, float]:
    img = Image.fromarray(pixels)
    scale = HEIGHT / img.height
    return img.resize((max(1, round(img.width * scale)), HEIGHT), Image.Resampling.LANCZOS), scale


def draw_match(query: np.ndarray, match_pixels: np.ndarray, match: Match) -> Image.Image:
    """An RGB picture of ``match`` between ``query`` and ``match_pixels`` (both RGB arrays)."""
    left, sq = _fit(query)
    right, sm = _fit(match_pixels)
    outline = match.outline(query.shape[1], query.shape[0])
    if outline is not None:  # drawn on the match's own panel, so it is clipped to it
        points = [(x * sm, y * sm) for x, y in outline]
        ImageDraw.Draw(right).line(points + points[:1], fill=(255, 64, 64), width=3)
    canvas = Image.new("RGB", (left.width + right.width + 3 * PAD, HEIGHT + 2 * PAD), (32, 32, 32))
    canvas.paste(left, (PAD, PAD))
    x0 = left.width + 2 * PAD
    canvas.paste(right, (x0, PAD))
    draw = ImageDraw.Draw(canvas)
    step = max(1, len(match.query_points) // 150)  # at most ~150 lines stay readable
    for (qx, qy), (mx, my) in list(zip(match.query_points, match.candidate_points))[::step]:
        a = (PAD + qx * sq, PAD + qy * sq)
        b = (x0 + mx * sm, PAD + my * sm)
        draw.line([a, b], fill=(80, 220, 120), width=1)
        for x, y in (a, b):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=(255, 255, 0))
    label = f"{match.inliers} inliers" if match.inliers else "no geometric match"
    draw.text((PAD + 4, PAD + 4), label, fill=(255, 255, 255))
    return canvas


def explain_match(query: np.ndarray, match_path: str, match: Match, out: str | os.PathLike) -> str:
    """Decode the matched file, draw :func:`draw_match`, save it as PNG at ``out``."""
    pixels = decode.decode_file(match_path).pixels
    draw_match(query, pixels, match).save(out, format="PNG")
    return os.fspath(out)
