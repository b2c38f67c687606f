"""The query pipeline: from a query image to ranked, optionally verified hits.

Plain search embeds the query and asks the index's vector search for the top k.
Robust search (``verify`` and/or ``augment``) runs these steps, each a function
here, on one snapshot of the index:

1. **views** (:func:`query_views`): the query, its quarter turns and five
   regions of it, embedded in one batch;
2. **candidates**: the best hits of every view, merged (each file keeps its best score);
3. **regional candidates** (:func:`region_candidates`): regional vectors of the
   query (an extractor's ``embed_regions``) nominate a few more files. For an
   extractor that ranks copies first (the default with the sscd extra) this
   step runs on every default search, not only when verifying: the files whose
   calibrated copy score makes them copies join the hits, and copies go first
   (:func:`lookalike.search.copies_first`);
4. **verification** (:func:`verified`): the stored keypoints of the candidates
   (read by vector row from the snapshot) are matched against the query's
   (:mod:`lookalike.verify`); verified hits go first, by inlier count, and carry
   their :class:`~lookalike.verify.Match`;
5. **merge**: verified hits, then the unverified rest by score; nominated files
   are kept only if they verify.

The functions take the :class:`~lookalike.index.Index` they search (its
extractor, store, snapshot and vector search); nothing here writes anything.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from . import decode
from .errors import LookalikeError
from .search import COPY_CANDIDATES, LiveSet, SearchResult, copies_first, copy_paths
from .sources import display_path
from .verify import Features, Match, detect, verify_query

if TYPE_CHECKING:
    from .index import Index, Query

#: Candidates of the vector search that geometric verification re-ranks.
VERIFY_CANDIDATES = 50
#: Query regions smaller than this (pixels, shorter side) carry too little of a
#: picture to search with: the CNN would see a blur enlarged from a few pixels.
MIN_REGION_SIDE = 112
#: The same for the regions a copy descriptor searches (an extractor that ranks
#: copies first). A copy descriptor is trained on copies shrunk to a fraction of
#: their size, so a picture pasted small into a small query is still worth
#: looking at; under this it is a few blocks of colour.
MIN_COPY_REGION_SIDE = 32


class QueryError(LookalikeError):
    """A query image could not be used; ``reason`` is a :class:`decode.SkipReason`."""

    def __init__(self, query: str, error: decode.DecodeError):
        super().__init__(f"{query}: {error}")
        self.query = query
        self.reason = error.reason
        self.detail = error.detail


class NoKeypoints(LookalikeError, ValueError):
    """Verification asked of an index built without keypoints."""


def query_name(q: "Query", i: int) -> str:
    return display_path(os.fspath(q)) if isinstance(q, (str, os.PathLike)) else f"<image {i}>"


def decode_query(query: "Query", max_pixels: int, min_side: int | None = None) -> tuple[np.ndarray, str]:
    """Decoded RGB pixels of a query and its display name, or :class:`QueryError`.

    ``min_side``: a JPEG may be decoded at reduced size down to this (see :func:`decode.decode_file`).
    """
    if isinstance(query, (Image.Image, np.ndarray)):
        name = f"<{type(query).__name__}>"
        try:
            return decode.pixels_of(query, max_pixels=max_pixels), name
        except decode.DecodeError as e:
            raise QueryError(name, e) from None
    path = os.path.abspath(os.path.expanduser(os.fspath(query)))
    try:
        return decode.decode_file(path, min_side=min_side, max_pixels=max_pixels).pixels, display_path(path)
    except decode.DecodeError as e:
        raise QueryError(display_path(path), e) from None


def prepare(extractor, pixels: np.ndarray, name: str) -> np.ndarray:
    """The extractor's input for one decoded query; :class:`QueryError` if it fails on it."""
    try:
        return extractor.prepare(pixels)
    except Exception as e:  # as when indexing: an extractor failing on one odd image is that image's problem
        error = decode.DecodeError(decode.SkipReason.DECODE_ERROR, f"{type(e).__name__}: {e}")
        raise QueryError(name, error) from None


def query_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The query, its three quarter turns, and five regions of it.

    Regions (the four corners and the centre, each 60% of the width and height)
    let a picture framed inside a larger one, or a picture in a picture, meet
    its original at a similar scale; they are made only when at least
    :data:`MIN_REGION_SIDE` pixels on their shorter side. Mirror images are
    not needed here: the CNN vector of a mirror image is nearly that of the
    image (an ImageNet model learns with mirrored images), and verification
    matches mirrored keypoints itself.
    """
    views = [pixels, *(np.rot90(pixels, t) for t in (1, 2, 3))]
    h, w = pixels.shape[:2]
    ch, cw = max(1, round(h * 0.6)), max(1, round(w * 0.6))
    if min(ch, cw) >= MIN_REGION_SIDE:
        for top, left in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)):
            views.append(pixels[top : top + ch, left : left + cw])
    return [np.ascontiguousarray(v) for v in views]


def require_keypoints(index: "Index") -> None:
    """Raise :class:`NoKeypoints` unless ``index`` stores keypoints (verification needs them)."""
    if not index.store.manifest.local:
        raise NoKeypoints(
            "this index stores no keypoints, so it cannot verify matches; "
            "make a new index with keypoints (lookalike index FOLDER --index NEW_DIR --keypoints sift)"
        )


def _best_per_file(found: list[list[SearchResult]], taken: frozenset[str] | set[str] = frozenset()) -> list[SearchResult]:
    """One hit per file over several views' hits: its best score, and its best copy score."""
    best: dict[str, SearchResult] = {}
    copy: dict[str, float] = {}
    for hits in found:
        for h in hits:
            if h.path in taken:
                continue
            if h.path not in best or h.score > best[h.path].score:
                best[h.path] = h
            if h.copy_score is not None and h.copy_score > copy.get(h.path, -np.inf):
                copy[h.path] = h.copy_score
    merged = (replace(h, copy_score=copy[p]) if p in copy and h.copy_score != copy[p] else h for p, h in best.items())
    return sorted(merged, key=lambda h: (-h.score, h.path))


def robust_search(index: "Index", query: "Query", k: int | None, verify: bool | int,
                  augment: bool, copy_regions: bool = False) -> list[SearchResult]:
    """Steps 1-5 of the module docstring for one query.

    ``copy_regions`` (or ``augment``), for an extractor that ranks copies first:
    regions of the query are also searched by its copy descriptor, and the files
    whose copy score makes them copies join the hits.
    """
    if verify:
        require_keypoints(index)
    pixels, name = decode_query(query, index.max_pixels)
    views = query_views(pixels) if augment else [pixels]
    spec = index.store.manifest.local or {}
    with ThreadPoolExecutor(1) as pool:  # the query's keypoints are measured while the CNN runs
        keypoints = pool.submit(detect, pixels, spec) if verify else None
        vectors = index.extractor.embed_prepared([prepare(index.extractor, v, name) for v in views])
    checked = (VERIFY_CANDIDATES if verify is True else int(verify)) if verify else 0
    n = None if k is None else max(k, checked)
    hits = _best_per_file(index.search_vectors(vectors, n))[:n]
    ext = index.extractor
    if (augment or copy_regions) and ext.copies_first:
        # regions of the query searched by the copy descriptor alone: the files they
        # find are kept when the copy scores say they are copies
        threshold = ext.copy_threshold()
        regions = region_views(index, pixels, COPY_CANDIDATES)
        copies = copy_paths([hits, *regions], threshold, ext.best_of_view())
        found = _best_per_file(regions)
        hits = copies_first(_best_per_file([hits, [h for h in found if h.path in copies]]), threshold, copies)
    if not verify:
        return _ranked(hits, k)
    # only the best candidates are verified, whatever k is; regions of the
    # query nominate a few more, kept only if they verify
    extra = region_candidates(index, pixels, {h.path for h in hits[:checked]}, max(1, checked // 2)) if augment else []
    nominated = {h.path for h in extra}
    assert keypoints is not None  # measured whenever verify is on
    checked_hits = verified(index, pixels, hits[:checked] + extra, keypoints.result())
    checked_hits = [h for h in checked_hits if h.inliers or h.path not in nominated]
    kept = {h.path for h in checked_hits}
    return _ranked(checked_hits + [h for h in hits[checked:] if h.path not in kept], k)


def _ranked(hits: list[SearchResult], k: int | None) -> list[SearchResult]:
    return [replace(h, rank=i) for i, h in enumerate(hits[:k] if k is not None else hits, 1)]


def region_views(index: "Index", pixels: np.ndarray, n: int) -> list[list[SearchResult]]:
    """The best ``n`` hits of each regional vector of the query (an extractor's
    ``embed_regions``; none without)."""
    regions = getattr(index.extractor, "embed_regions", None)
    if regions is None:
        return []
    vectors = regions(pixels, MIN_COPY_REGION_SIDE if index.extractor.copies_first else MIN_REGION_SIDE)
    return index.search_vectors(vectors, n) if len(vectors) else []


def region_candidates(index: "Index", pixels: np.ndarray, taken: set[str], n: int) -> list[SearchResult]:
    """Up to ``n`` files, not in ``taken``, best matched by regional vectors of the query."""
    return _best_per_file(region_views(index, pixels, n + len(taken)), taken)[:n]


def candidate_features(index: "Index", paths: Sequence[str], live: LiveSet | None = None) -> list[Features | None]:
    """Stored keypoints of indexed files (``None`` where there are none), found by their
    vector rows in the snapshot ``live`` (default: the index's current one)."""
    live = index.live() if live is None else live
    rows = [live.row_of(p) for p in paths]
    stored = index.store.catalog.keypoints(r for r in rows if r is not None)
    out: list[Features | None] = []
    for r in rows:
        blob = stored.get(r) if r is not None else None
        out.append(Features.from_blobs(blob[2], blob[3], blob[0], blob[1]) if blob else None)
    return out


def verified(index: "Index", pixels: np.ndarray, hits: list[SearchResult],
             keypoints: Features | None = None) -> list[SearchResult]:
    """``hits`` verified against ``pixels`` (the query), verified ones first by inliers."""
    features = candidate_features(index, [h.path for h in hits])
    matches = verify_query(pixels, features, index.store.manifest.local or {}, keypoints)
    h, w = pixels.shape[:2]
    out = []
    for hit, m in zip(hits, matches):
        outline = m.outline(w, h)
        region = None if outline is None else tuple((round(float(x), 1), round(float(y), 1)) for x, y in outline)
        out.append(replace(hit, inliers=m.inliers, region=region, match=m))
    return sorted(out, key=lambda x: (x.inliers == 0, -(x.inliers or 0), -x.score, x.path))


def verify_pair(index: "Index", query: "Query", path: str) -> tuple[np.ndarray, Match]:
    """Verification of ``query`` against one indexed file: ``(query pixels, match)``."""
    require_keypoints(index)
    pixels, _ = decode_query(query, index.max_pixels)
    return pixels, verify_query(pixels, candidate_features(index, [path]), index.store.manifest.local or {})[0]
