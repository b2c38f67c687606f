"""Where a query may hold another picture: rectangles outlined by its edges.

A picture pasted into a larger one (a photo on a web page, in a screenshot,
on another photo) leaves straight edges along its border. :func:`rectangles`
finds boxes whose four sides lie mostly on edges; the copy descriptor then
looks at each box on its own. Pure OpenCV on pixels: no model, no I/O.
"""

from __future__ import annotations

import numpy as np

#: A box counts when its second-weakest side lies on edges for at least this share.
SIDE_ON_EDGES = 0.5
#: Boxes smaller than this share of the shorter image side, either way, are ignored.
MIN_SIDE_SHARE = 0.15


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def rectangles(image: np.ndarray, limit: int = 8) -> list[tuple[int, int, int, int]]:
    """Up to ``limit`` boxes ``(x, y, w, h)`` of ``image`` (``(H, W, 3) uint8`` RGB) outlined by
    edges, largest and best outlined first; none covering 90% of the image or more, no two
    overlapping by 70% or more (intersection over union)."""
    import cv2

    h, w = image.shape[:2]
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    edges = cv2.dilate(cv2.Canny(grey, 40, 120), np.ones((3, 3), np.uint8)) > 0
    contours, _ = cv2.findContours(edges.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    side = min(h, w)
    found = []
    for contour in contours:
        x, y, bw, bh = cv2.boundingRect(contour)
        if bw < MIN_SIDE_SHARE * side or bh < MIN_SIDE_SHARE * side or bw * bh >= 0.9 * h * w:
            continue
        right, bottom = min(w - 1, x + bw - 1), min(h - 1, y + bh - 1)
        sides = sorted([edges[y, x : x + bw].mean(), edges[bottom, x : x + bw].mean(),
                        edges[y : y + bh, x].mean(), edges[y : y + bh, right].mean()])
        if sides[1] >= SIDE_ON_EDGES:
            found.append((sides[1] * bw * bh, (x, y, bw, bh)))
    found.sort(reverse=True)
    out: list[tuple[int, int, int, int]] = []
    for _, box in found:
        if all(_overlap(box, kept) < 0.7 for kept in out):
            out.append(box)
            if len(out) >= limit:
                break
    return out


def copy_windows(image: np.ndarray, min_side: int) -> list[np.ndarray]:
    """Regions of ``image`` a copy descriptor looks at on their own: windows of 40% and 60%
    of each side, overlapping by half, and the :func:`rectangles` outlined by its edges;
    each at least ``min_side`` pixels on its shorter side. A picture pasted into a larger
    one meets its original at about its own scale in one of them."""
    h, w = image.shape[:2]
    windows = []
    for fraction in (0.4, 0.6):
        ch, cw = round(h * fraction), round(w * fraction)
        if min(ch, cw) < min_side:
            continue
        steps = max(1, round((1 - fraction) / (fraction / 2)))
        for i in range(steps + 1):
            for j in range(steps + 1):
                top, left = round(i * (h - ch) / steps), round(j * (w - cw) / steps)
                windows.append(np.ascontiguousarray(image[top : top + ch, left : left + cw]))
    for x, y, bw, bh in rectangles(image):
        if min(bw, bh) >= min_side:
            windows.append(np.ascontiguousarray(image[y : y + bh, x : x + bw]))
    return windows
