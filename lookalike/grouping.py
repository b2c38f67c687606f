"""Near-duplicate groups and cross-collection matching: the grouping core.

How groups are made
-------------------
1. **Candidate pairs** come from :meth:`Index.neighbours` (each file's ``k``
   nearest others, default 10, through the index's own search structure):
   a pair is kept when its score is at least the threshold. Time is linear in
   the collection and memory ``O(n x k)``; no n x n matrix is ever formed.
2. **Connected components** of those pairs (union-find, done by
   ``scipy.sparse.csgraph`` in linear time and memory). Simple and
   order-independent, but transitive: A~B and B~C put A and C together even
   when A and C are not alike (a "chain" through gradual edits or a series of
   similar shots).
3. **Anchor check** (the mitigation; a complete-link-like test against one
   representative). In each component the *centre* -- the member with the
   highest summed similarity to the others (components over ``CENTRE_MAX``
   members, 256, use the keeper instead, to bound the n^2 block) -- is the
   anchor, and every member must score at least ``keeper_threshold``
   (default: the threshold) against it. A group is therefore a star of
   radius ``threshold`` around its centre rather than a chain of any length.
   Members that fail are taken out and grouped again among themselves (same
   rules), so nothing above threshold is silently lost; a member left without
   a partner is dropped. Every member is thus above the threshold to at least
   one other member (its pair) *and* to the centre. Why the centre and not the
   keeper: the keeper is chosen by resolution, and the largest file is often
   the most edited one (a rotated copy on an expanded canvas); anchoring on it
   split true groups (on the benchmark, cnn at 0.825: copies grouped with their
   original 0.51 with the keeper as anchor, 0.60 with the centre; pairwise F1
   0.427 vs 0.470). ``keeper_threshold=-inf`` (API) switches the check off
   (plain connected components: pairwise precision 0.06 at cnn 0.825 on the
   benchmark -- chains merge hundreds of images).
4. **Keeper** (:func:`keeper_rank`, the one rule): members are ranked by
   largest resolution (width x height), then largest file, then oldest mtime,
   then path; the first is the keeper.

Every member's ``score`` is its similarity to the keeper (the keeper's is 1);
it can be a little below the threshold when the keeper is not the centre.

Default thresholds (per extractor, override with ``threshold=``/``--threshold``)
were chosen once per extractor on the public benchmark by ``bench/dedup.py
--sweep`` (the best pairwise F1 over a grid: cosine steps of 0.025, Hamming
steps of one bit; nothing else was tuned); see docs/duplicates.md. Hash
thresholds are ``1 - bits/64`` for the default 64-bit hashes; other hash sizes
and extractors without a calibrated value use 0.90 (cosine) or 0.85 (Hamming,
about 10 of 64 bits).

Cross-set mode
--------------
``against`` is another index directory (it must have the same extractor spec)
or a folder (its images are embedded with this index's extractor, one at a
time through :meth:`Index.embed`, and nothing is written anywhere). Only pairs
between the two sets are candidates, so every group mixes both sets. Members
carry ``side`` ``"index"`` or ``"against"``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import levels
from .errors import PathNotFound, UsageError
from .sources import display_path, walk

#: Default threshold per extractor name (score = cosine, or 1 - Hamming bits / bits).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "cnn": 0.825,
    "phash": 1 - 8 / 64,  # 0.875: at most 8 of 64 bits differ
    "dhash": 1 - 7 / 64,  # 0.890625
    "ahash": 1 - 3 / 64,  # 0.953125
    "whash": 1 - 2 / 64,  # 0.96875
}
COSINE_FALLBACK = 0.90
HAMMING_FALLBACK = 0.85
DEFAULT_K = 10
#: components up to this size are anchored on their centre (an n^2 similarity block);
#: larger ones on their keeper
CENTRE_MAX = 256


@dataclass(frozen=True)
class Member:
    path: str
    id: int | None  # catalog id in its own index (None for a folder image in cross-set mode)
    score: float  # similarity to the group's keeper (1.0 for the keeper)
    width: int | None
    height: int | None
    size: int | None
    mtime_ns: int | None = None
    side: str = "index"  # "index" or "against" (cross-set mode)


@dataclass(frozen=True)
class DuplicateGroup:
    keeper: Member
    members: list[Member]  # keeper first, then the others by score (best first), then path
    level: str = "edited"  # the level that made the group (lookalike.levels)

    @property
    def others(self) -> list[Member]:
        return [m for m in self.members if m is not self.keeper]

    def to_dict(self) -> dict[str, Any]:
        return {"keeper": self.keeper.path, "level": self.level, "members": [asdict(m) for m in self.members]}


def default_threshold(spec: dict, metric: str) -> float:
    name = spec.get("name") if isinstance(spec, dict) else None
    settings = {k: v for k, v in spec.items() if k != "name"} if isinstance(spec, dict) else {}
    if name in DEFAULT_THRESHOLDS and not (name != "cnn" and settings.get("hash_size", 8) != 8):
        return DEFAULT_THRESHOLDS[name]
    return HAMMING_FALLBACK if metric == "hamming" else COSINE_FALLBACK


# -- the grouping core (pure arrays; used by the API and by the 1M synthetic benchmark) --

#: Keeper rules (:func:`keeper_rank`); ``in:FOLDER`` is the fifth.
KEEP_RULES = ("largest", "oldest", "newest", "shortest-path")
DEFAULT_KEEP = "largest"


def check_keep_rule(rule: str) -> str:
    """``rule`` if it names a keeper rule, else :class:`UsageError` listing them."""
    if rule in KEEP_RULES or (rule.startswith("in:") and len(rule) > 3):
        return rule
    raise UsageError(f"unknown keeper rule {rule!r}; choose one of {', '.join(KEEP_RULES)} or in:FOLDER")


def keeper_rank(area: np.ndarray, size: np.ndarray, mtime: np.ndarray,
                paths: Sequence[str] | None = None, rule: str = DEFAULT_KEEP) -> np.ndarray:
    """``rank[i]``: position of node ``i`` in keeping order (0 = the keeper).

    ``largest`` (the default): largest ``area`` (width x height, pixels) first,
    then largest ``size`` (bytes), then oldest ``mtime`` (ns), then ``paths`` in
    order. ``oldest`` / ``newest``: by ``mtime``, then as ``largest``.
    ``shortest-path``: the shortest path, then as ``largest``. ``in:FOLDER``: files
    under FOLDER first, then as ``largest``. Without ``paths``, ties go by node
    number (so number the nodes in path order). Inputs are ``(n,)`` arrays;
    returns ``(n,) int64``.
    """
    rule = check_keep_rule(rule)
    n = len(area)
    ties = np.arange(n) if paths is None else _path_positions(paths)
    keys = [ties, np.asarray(mtime), -np.asarray(size), -np.asarray(area)]  # np.lexsort: last key first
    if rule == "oldest":
        keys.append(np.asarray(mtime))
    elif rule == "newest":
        keys.append(-np.asarray(mtime))
    elif rule == "shortest-path":
        if paths is None:
            raise UsageError("the shortest-path keeper rule needs the paths")
        keys.append(np.array([len(p) for p in paths], np.int64))
    elif rule.startswith("in:"):
        if paths is None:
            raise UsageError("the in:FOLDER keeper rule needs the paths")
        folder = os.path.join(os.path.abspath(os.path.expanduser(rule[3:])), "")
        keys.append(np.array([not os.path.abspath(p).startswith(folder) for p in paths], np.int8))
    order = np.lexsort(tuple(keys))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return rank


def _path_positions(paths: Sequence[str]) -> np.ndarray:
    """``pos[i]``: place of ``paths[i]`` in sorted order (equal paths: by node number)."""
    n = len(paths)
    order = np.argsort(np.array(paths, dtype=object), kind="stable") if n else np.zeros(0, np.int64)
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    return pos


def group_pairs(
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    s: np.ndarray,
    threshold: float,
    rank: np.ndarray,
    similarity: Callable[[int, np.ndarray], np.ndarray],
    keeper_threshold: float | None = None,
    anchor: str = "centre",
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Groups of nodes ``0..n-1`` from scored pairs ``(a, b, s)``.

    Returns ``[(keeper, members, scores_to_keeper)]`` with ``members`` starting
    with the keeper. ``rank``: keeping order (:func:`keeper_rank`).
    ``similarity(i, js)`` scores node ``i`` against nodes ``js``.
    Memory is linear in ``n + len(a)``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    kt = threshold if keeper_threshold is None else keeper_threshold
    keep = s >= threshold
    a, b = np.asarray(a[keep], np.int64), np.asarray(b[keep], np.int64)
    out: list[tuple[int, np.ndarray, np.ndarray]] = []
    active = np.zeros(n, bool)
    active[a] = True
    active[b] = True
    while len(a):
        graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)).tocsr()
        _, labels = connected_components(graph, directed=False)
        nodes = np.flatnonzero(active)
        order = np.lexsort((rank[nodes], labels[nodes]))
        nodes = nodes[order]
        cuts = np.flatnonzero(np.diff(labels[nodes])) + 1
        peeled = []
        for comp in np.split(nodes, cuts):
            if len(comp) < 2:
                continue
            centre = 0
            if anchor == "centre" and len(comp) <= CENTRE_MAX:
                sims = np.stack([np.asarray(similarity(int(i), comp), np.float64) for i in comp])
                centre = int(np.argmax(sims.sum(axis=1)))  # first in keeping order on ties
            c = int(comp[centre])
            sc = np.asarray(similarity(c, comp), np.float64)
            ok = sc >= kt
            ok[centre] = True
            if ok.sum() >= 2:
                members = comp[ok]  # still in keeping order: the first is the keeper
                keeper = int(members[0])
                scores = np.asarray(similarity(keeper, members), np.float64)
                scores[0] = 1.0
                out.append((keeper, members, scores))
            else:  # the anchor matches nobody well enough: it leaves, the rest regroup
                ok[:] = False
                ok[centre] = True
            peeled.append(comp[~ok])
        still = np.zeros(n, bool)
        for p in peeled:
            still[p] = True
        if not still.any():
            break
        both = still[a] & still[b]
        a, b = a[both], b[both]
        active = np.zeros(n, bool)
        active[a] = True
        active[b] = True
    return out


# -- from an index ---------------------------------------------------------------------

@dataclass
class _Nodes:
    paths: list[str]
    ids: list[int | None]
    width: np.ndarray
    height: np.ndarray
    size: np.ndarray
    mtime: np.ndarray
    vectors: "_Vectors"
    side: list[str] = field(default_factory=list)
    hashes: list[str | None] = field(default_factory=list)  # content hashes (the exact level)


class _Vectors:
    """Node vectors read on demand from one or more (matrix, rows) parts: the index's
    memory-mapped matrix is never copied as a whole."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(r) for _, r in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, idx) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx, np.int64))
        part = np.searchsorted(self.offsets, idx, "right") - 1
        m0 = self.parts[0][0]
        out = np.empty((len(idx), m0.shape[1]), m0.dtype)
        for p, (matrix, rows) in enumerate(self.parts):
            sel = part == p
            if sel.any():
                out[sel] = matrix[rows[idx[sel] - self.offsets[p]]]
        return out


def _similarity_fn(vectors: _Vectors, metric: str, bits: int):
    if metric == "hamming":
        def sim(i, js):
            d = np.bitwise_count(vectors.take(js) ^ vectors.take(i)).sum(axis=1)
            return 1.0 - d / bits
    else:
        def sim(i, js):
            return vectors.take(js).astype(np.float32) @ vectors.take(i)[0].astype(np.float32)
    return sim


def _index_nodes(index, side: str = "index") -> _Nodes:
    live = index.live()
    return _catalog_nodes(live.ids, live.paths, live.rows, live.matrix, index.store.catalog, side)


def _catalog_nodes(ids, paths: list[str], rows, matrix: np.ndarray, catalog, side: str) -> _Nodes:
    """Nodes for files ``(ids, paths, rows)`` whose vectors are ``matrix[rows]``; resolution,
    size and mtime from ``catalog``."""
    recs = {r.path: r for r in catalog.records(status="ok")}
    rs = [recs.get(p) for p in paths]
    vec = _Vectors([(matrix, np.asarray(rows, np.int64))])
    return _Nodes(
        list(paths), [int(i) for i in ids],
        np.array([r.width or 0 if r else 0 for r in rs], np.int64),
        np.array([r.height or 0 if r else 0 for r in rs], np.int64),
        np.array([r.size if r else 0 for r in rs], np.int64),
        np.array([r.mtime_ns if r else 0 for r in rs], np.int64),
        vec, [side] * len(rs), [r.content_hash if r else None for r in rs],
    )


def _folder_nodes(index, folder: str) -> _Nodes:
    """Embed every image under ``folder`` with ``index``'s extractor; writes nothing.

    One image at a time through :meth:`Index.embed` (an indexed, unchanged file
    reuses its stored vector); images it cannot decode are left out.
    """
    from PIL import Image

    from .query import QueryError

    from .decode import DecodeError, read_file
    from .sources import content_hash

    paths, vecs, widths, heights, sizes, mtimes = [], [], [], [], [], []
    hashes: list[str | None] = []
    for e in walk(folder):
        try:
            vecs.append(index.embed(e.path))
            hashes.append(content_hash(read_file(e.path), index.store.manifest.content_hash))
        except (QueryError, DecodeError):
            if len(vecs) > len(hashes):
                vecs.pop()
            continue
        try:
            with Image.open(e.path) as im:
                w, h = im.size
        except Exception:
            w = h = 0
        paths.append(display_path(e.path))
        widths.append(w)
        heights.append(h)
        sizes.append(e.size)
        mtimes.append(e.mtime_ns)
    dim = index.store.matrix().shape[1]
    dtype = np.uint8 if index.store.manifest.metric == "hamming" else np.float32
    vec = _Vectors([(np.asarray(vecs, dtype) if vecs else np.zeros((0, dim), dtype), np.arange(len(vecs)))])
    return _Nodes(paths, [None] * len(paths), np.array(widths, np.int64), np.array(heights, np.int64),
                  np.array(sizes, np.int64), np.array(mtimes, np.int64), vec, ["against"] * len(paths), hashes)


def find_duplicates(index, threshold: float | None = None, k: int = DEFAULT_K, against=None,
                    keeper_threshold: float | None = None, level: str = levels.DEFAULT_LEVEL,
                    keep: str = DEFAULT_KEEP) -> list[DuplicateGroup]:
    """Duplicate groups of ``index`` at ``level`` (or, with ``against``, matches between the sets).

    ``level``: ``exact``, ``near`` (the default) or ``edited`` (:mod:`lookalike.levels`).
    ``threshold``: the minimum pair score (default: :func:`level_threshold`).
    ``against``: an :class:`Index`, an index directory or an image folder.
    ``keep``: the keeper rule (:func:`keeper_rank`). Groups are ordered by keeper path.
    """
    level, keep = levels.check_level(level), check_keep_rule(keep)
    if level == "exact":
        return exact_groups(index, against, keep)
    if threshold is None:
        threshold = level_threshold(index, level)
    cand = candidates(index, threshold, k, against, level=level, keep=keep)
    return cand.groups(threshold, keeper_threshold)


def level_threshold(index, level: str = "edited") -> float:
    """The default minimum pair score at ``level``. At ``edited``: the calibrated copy
    threshold for an extractor with a copy score, else :func:`default_threshold`. At
    ``near``, where the pixel checks decide: :data:`levels.NEAR_COPY_BAR` for a copy
    score, else no bar (-1: any of the ``k`` nearest is a candidate)."""
    if level == "near":
        return levels.NEAR_COPY_BAR if index.extractor.has_copy_score() else -1.0
    if index.extractor.has_copy_score():
        return float(index.extractor.copy_threshold())
    return default_threshold(index.store.manifest.extractor, index.store.manifest.metric)


def exact_groups(index, against=None, keep: str = DEFAULT_KEEP) -> list[DuplicateGroup]:
    """Groups of files with the same content hash (byte-identical files)."""
    nodes = _index_nodes(index)
    cross = against is not None
    if cross:
        nodes = _concat(nodes, _against_nodes(index, against))
    rank = keeper_rank(nodes.width * nodes.height, nodes.size, nodes.mtime, nodes.paths, keep)
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(nodes.hashes):
        if h:
            by_hash.setdefault(h, []).append(i)
    groups = []
    for members in by_hash.values():
        if len(members) < 2 or (cross and len({nodes.side[m] for m in members}) < 2):
            continue
        members.sort(key=lambda m: rank[m])
        ms = [_member(nodes, m, 1.0) for m in members]
        groups.append(DuplicateGroup(ms[0], [ms[0], *sorted(ms[1:], key=lambda m: m.path)], "exact"))
    groups.sort(key=lambda g: g.keeper.path)
    return groups


@dataclass
class Candidates:
    """Scored candidate pairs over numbered nodes; :meth:`groups` applies a threshold."""

    nodes: _Nodes
    a: np.ndarray
    b: np.ndarray
    s: np.ndarray
    rank: np.ndarray
    similarity: Callable[[int, np.ndarray], np.ndarray]
    cross: bool
    level: str = "edited"
    check: "PairCheck | None" = None

    def groups(self, threshold: float, keeper_threshold: float | None = None) -> list[DuplicateGroup]:
        nodes = self.nodes
        s = self.s
        if self.check is not None and len(s):  # the level's checks, on candidate pairs only
            s = s.copy()
            bar = threshold if self.check.verify_bar is None else min(threshold, self.check.verify_bar)
            self.check.confirmed_from = threshold
            above = np.flatnonzero(s >= bar)
            self.check.prefetch(np.unique(np.concatenate([self.a[above], self.b[above]])))
            for i in above:
                a, b = int(self.a[i]), int(self.b[i])
                if not self.check.ok(a, b):
                    s[i] = NOT_A_PAIR
                elif s[i] < threshold:  # under the threshold: a candidate only if its keypoints match
                    s[i] = threshold if self.check.verified(a, b) else NOT_A_PAIR
        raw = group_pairs(len(nodes.paths), self.a, self.b, s, threshold, self.rank,
                          self.similarity, keeper_threshold)
        groups = []
        for keeper, members, scores in raw:
            if self.cross and len({nodes.side[m] for m in members}) < 2:
                continue  # a regrouped remainder from one set only
            ms = [_member(nodes, int(m), float(sc)) for m, sc in zip(members, scores)]
            rest = sorted(ms[1:], key=lambda m: (-m.score, m.path))
            groups.append(DuplicateGroup(ms[0], [ms[0], *rest], self.level))
        groups.sort(key=lambda g: g.keeper.path)
        return groups


#: The score a pair gets when the level's pixel checks turn it down.
NOT_A_PAIR = -2.0


class PairCheck:
    """The level's tests of a pair beyond its score, on small thumbnails read from the
    files (once each, and only for files in pairs above the threshold): neither image
    is low-information, and at ``near`` the two agree pixel by pixel
    (:mod:`lookalike.levels`). A file that cannot be read is in no pair."""

    def __init__(self, nodes: _Nodes, level: str, features: Callable[[int], Any] | None = None,
                 verify_bar: float | None = None):
        self.nodes, self.level = nodes, level
        self._thumbs: dict[int, levels.Thumb | None] = {}
        #: with stored keypoints (``features(i)``: node i's, or None), at ``edited``: pairs
        #: scoring from ``verify_bar`` up to the threshold count when their keypoints match
        self.features, self.verify_bar = features, verify_bar
        self.confirmed_from: float | None = None  # the threshold of the current grouping
        self._verified: dict[tuple[int, int], bool] = {}

    def verified(self, i: int, j: int) -> bool:
        """Whether the stored keypoints of nodes ``i`` and ``j`` match under one homography
        (:func:`lookalike.verify.verify`, the mirror image tried too), as ``--verify`` does."""
        if self.features is None:
            return False
        key = (min(i, j), max(i, j))
        if key not in self._verified:
            from .verify import MIN_INLIERS, mirrored, verify

            fa, fb = self.features(key[0]), self.features(key[1])
            ok = False
            if fa is not None and fb is not None:
                ok = verify(fa, fb).inliers >= MIN_INLIERS or \
                    verify(mirrored(fa), fb, mirrored=True).inliers >= MIN_INLIERS
            self._verified[key] = ok
        return self._verified[key]

    def prefetch(self, nodes: np.ndarray) -> None:
        """Read the thumbnails of ``nodes`` now, on a thread per core (decoding releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        todo = [int(i) for i in nodes if int(i) not in self._thumbs]
        if len(todo) > 1:
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                for i, t in zip(todo, pool.map(self._read, todo)):
                    self._thumbs[i] = t

    def thumb(self, i: int) -> "levels.Thumb | None":
        if i not in self._thumbs:
            self._thumbs[i] = self._read(i)
        return self._thumbs[i]

    def _read(self, i: int) -> "levels.Thumb | None":
        from .decode import DecodeError, decode_file

        try:
            d = decode_file(os.path.expanduser(self.nodes.paths[i]), min_side=levels.THUMB)
        except (DecodeError, OSError):
            return None
        t = levels.thumb(d.pixels, min(d.width, d.height))
        return None if levels.low_information(t) else t

    def ok(self, i: int, j: int) -> bool:
        if i == j:
            return True
        a, b = self.thumb(i), self.thumb(j)
        if a is None or b is None:
            return False
        return self.level != "near" or levels.near_pair(a, b)

    def masked(self, similarity: Callable[[int, np.ndarray], np.ndarray]) -> Callable[[int, np.ndarray], np.ndarray]:
        """``similarity`` with :data:`NOT_A_PAIR` where a pair fails the checks."""
        def sim(i, js):
            out = np.array(similarity(i, js), np.float64)
            for n, j in enumerate(np.atleast_1d(js)):
                if not self.ok(int(i), int(j)):
                    out[n] = NOT_A_PAIR
                elif self.confirmed_from is not None and self.features is not None and int(i) != int(j) \
                        and out[n] < self.confirmed_from:
                    out[n] = self.confirmed_from if self.verified(int(i), int(j)) else NOT_A_PAIR
            return out
        return sim


def candidates(index, min_score: float, k: int = DEFAULT_K, against=None, *, level: str = "edited",
               keep: str = DEFAULT_KEEP) -> Candidates:
    """Pairs scoring at least ``min_score`` among each file's ``k`` nearest neighbours
    (or, with ``against``, between each ``against`` image and its ``k`` nearest in ``index``).

    For an extractor with a calibrated copy score the neighbours are those of the
    copy descriptor alone and a pair's score is its copy score, held to the higher
    bar of the two images (their similarity minus the larger of their two offsets);
    otherwise the index's own score. ``level`` adds :class:`PairCheck`. With stored
    keypoints, at ``edited``, pairs under ``min_score`` down to :data:`VERIFY_BAR` (a
    copy score of 0 with a copy descriptor) are kept too: they count when their
    keypoints match (geometric verification, as ``--verify``).
    """
    metric, bits = index.store.manifest.metric, index.extractor.dim
    ext = index.extractor
    copy = ext.has_copy_score()
    bar = None  # with stored keypoints, at edited: pairs from here up count when their keypoints match
    if level == "edited" and index.store.manifest.local and metric != "hamming":
        bar = levels.NEAR_COPY_BAR if copy else VERIFY_BAR
        min_score = min(min_score, bar)
    nodes = _index_nodes(index)
    other = _against_nodes(index, against) if against is not None else None
    allnodes = nodes if other is None else _concat(nodes, other)
    n_a = len(nodes.paths)
    pos = {i: j for j, i in enumerate(nodes.ids)}
    if copy:
        offsets = _copy_offsets(ext, allnodes.vectors)
        base = _copy_similarity_fn(ext, allnodes.vectors, offsets)
    else:
        base = _similarity_fn(allnodes.vectors, metric, bits)
    a: list[int] = []  # pair i: nodes a[i], b[i], score s[i]
    b: list[int] = []
    s: list[float] = []
    if other is None:
        queries = range(n_a)
        found = _copy_neighbours(index, nodes, k) if copy else (hits for _, hits in index.neighbours(k))
    else:
        queries = range(n_a, n_a + len(other.paths))
        found = _search_nodes(index, other, k, copy)
    with _duplicates_ef(index.vector_search()):
        for j, hits in zip(queries, found):
            for h in hits:
                # h.id not in pos: a file only the search backend knows (another shard's, in Milvus)
                if h.id in pos and h.path != allnodes.paths[j]:
                    a.append(j)
                    b.append(pos[h.id])
                    s.append(h.score)
    pa, pb, ps = np.array(a, np.int64), np.array(b, np.int64), np.array(s, np.float64)
    if copy:
        ps = _pair_copy_scores(ext, allnodes.vectors, offsets, pa, pb)
    keep_pairs = ps >= min_score
    pa, pb, ps = pa[keep_pairs], pb[keep_pairs], ps[keep_pairs]
    rank = keeper_rank(allnodes.width * allnodes.height, allnodes.size, allnodes.mtime, allnodes.paths, keep)
    features = _stored_features(index, allnodes) if bar is not None else None
    check = PairCheck(allnodes, level, features, bar)
    return Candidates(allnodes, pa, pb, ps, rank, check.masked(base), other is not None, level, check)


#: With stored keypoints, at ``edited``: a pair among the ``k`` nearest with a cosine from
#: this up to the threshold is a candidate that counts if its keypoints match (as many
#: as ``--verify`` asks of a copy); verification decides, so the bar only saves work.
VERIFY_BAR = 0.5


def _stored_features(index, nodes: _Nodes, cache: int = 4096) -> Callable[[int], Any]:
    """``features(i)``: node ``i``'s stored keypoints (``None`` for a node of another set
    or a file without them), read when first asked, the last ``cache`` kept."""
    from functools import lru_cache

    from .query import candidate_features

    live = index.live()

    @lru_cache(maxsize=cache)
    def features(i: int):
        if nodes.side[i] != "index":
            return None
        return candidate_features(index, [nodes.paths[i]], live)[0]

    return features


def _copy_offsets(ext, vectors: "_Vectors", batch: int = 4096) -> np.ndarray:
    """Every node's copy-score offset (its similarity to the background set)."""
    n = len(vectors)
    out = np.zeros(n, np.float64)
    for start in range(0, n, batch):
        rows = np.arange(start, min(n, start + batch))
        out[rows] = ext.copy_offsets(ext.copy_vectors(vectors.take(rows)))
    return out


#: HNSW efSearch for the neighbours of duplicates: copies are a file's nearest neighbours
#: by far, found with a short candidate list; searches keep the index's own (512), which
#: made this step about 14 times slower (bench/dedup_scale.py: 204 s against 14.8 s at
#: 100,000 vectors at 64; at 1M, 128 found 99.5% of the planted groups whole, 64 97.8%).
DUPLICATES_EF = 128


@contextmanager
def _duplicates_ef(search):
    """``search`` (an HNSW structure, or anything else: then nothing changes) with efSearch
    :data:`DUPLICATES_EF` inside the block."""
    before = getattr(search, "ef_search", None)
    if before is None or getattr(search, "kind", None) != "hnsw":
        yield
        return
    search.ef_search = min(before, DUPLICATES_EF)
    try:
        yield
    finally:
        search.ef_search = before


def _pair_copy_scores(ext, vectors: "_Vectors", offsets: np.ndarray, a: np.ndarray, b: np.ndarray,
                      batch: int = 1 << 16) -> np.ndarray:
    """Copy scores of pairs ``(a[i], b[i])``, in batches."""
    out = np.empty(len(a), np.float64)
    for start in range(0, len(a), batch):
        x, y = a[start : start + batch], b[start : start + batch]
        sims = np.einsum("ij,ij->i", ext.copy_vectors(vectors.take(x)), ext.copy_vectors(vectors.take(y)))
        out[start : start + batch] = sims - np.maximum(offsets[x], offsets[y])
    return out


def _copy_similarity_fn(ext, vectors: "_Vectors", offsets: np.ndarray):
    def sim(i, js):
        js = np.atleast_1d(np.asarray(js, np.int64))
        q = ext.copy_vectors(vectors.take(i))[0]
        return ext.copy_vectors(vectors.take(js)) @ q - np.maximum(offsets[js], offsets[i])
    return sim


def _copy_neighbours(index, nodes: _Nodes, k: int, batch: int = 1024):
    """Each index node's ``k + 1`` nearest by the copy descriptor alone, in node order."""
    search = index.vector_search()
    for start in range(0, len(nodes.paths), batch):
        rows = np.arange(start, min(len(nodes.paths), start + batch))
        yield from search.hits(index.extractor.copy_query(nodes.vectors.take(rows)), k + 1)


def _search_nodes(index, other: _Nodes, k: int, copy: bool, batch: int = 1024):
    """Each ``against`` node's ``k`` nearest in ``index`` (by the copy descriptor alone with ``copy``)."""
    metric = index.store.manifest.metric
    for start in range(0, len(other.paths), batch):
        vq = other.vectors.take(np.arange(start, min(start + batch, len(other.paths))))
        if copy:
            yield from index.vector_search().hits(index.extractor.copy_query(vq), k)
        else:
            yield from index.search_vectors(vq if metric == "hamming" else vq.astype(np.float32), k)


def _member(nodes: _Nodes, i: int, score: float) -> Member:
    w, h = int(nodes.width[i]), int(nodes.height[i])
    return Member(nodes.paths[i], nodes.ids[i], round(min(score, 1.0), 6), w or None, h or None,
                  int(nodes.size[i]), int(nodes.mtime[i]), nodes.side[i])


def _concat(x: _Nodes, y: _Nodes) -> _Nodes:
    vec = _Vectors(x.vectors.parts + y.vectors.parts)
    return _Nodes(x.paths + y.paths, x.ids + y.ids, np.concatenate([x.width, y.width]),
                  np.concatenate([x.height, y.height]), np.concatenate([x.size, y.size]),
                  np.concatenate([x.mtime, y.mtime]), vec, x.side + y.side, x.hashes + y.hashes)


def _against_nodes(index, against) -> _Nodes:
    """``against`` as nodes: an open index, an index directory or an image folder."""
    if not isinstance(against, (str, os.PathLike)):  # an open index
        if against.store.manifest.extractor != index.store.manifest.extractor:
            from .store.manifest import ExtractorMismatch, spec_differences

            diff = spec_differences(against.store.manifest.extractor, index.store.manifest.extractor)
            raise ExtractorMismatch(f"{against.path} was built with another extractor: {'; '.join(diff)}")
        return _index_nodes(against, "against")
    path = os.path.abspath(os.path.expanduser(os.fspath(against)))
    if os.path.exists(os.path.join(path, "manifest.json")):
        return _directory_nodes(path, index.store.manifest.extractor)
    if not os.path.isdir(path):
        raise PathNotFound(f"--against: {path} is neither an index nor a folder")
    return _folder_nodes(index, path)


def _directory_nodes(path: str, spec: dict) -> _Nodes:
    """The files of another index directory, read from its store (this module comes before
    the :class:`Index` facade and never opens one); :class:`ExtractorMismatch` if it was
    built with another extractor than ``spec``. Nothing is written."""
    from .store import IndexStore

    store = IndexStore.open(path, spec)
    try:
        ids, paths, rows = store.catalog.live()
        matrix = np.array(store.matrix()[np.asarray(rows, np.int64)])  # a copy: the store is closed next
        return _catalog_nodes(ids, paths, np.arange(len(rows)), matrix, store.catalog, "against")
    finally:
        store.close()
