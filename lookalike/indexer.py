"""The indexer: the one place where sources, decode, extract and store meet.

Files are listed, compared with the catalog (size + mtime, then content hash),
read and decoded in worker processes, embedded in batches in this process,
and committed batch by batch: vectors first (fsync), then one SQLite
transaction that makes them visible. A kill at any moment leaves an index that
opens, and the next run resumes with the files not yet committed.
"""

from __future__ import annotations

import multiprocessing
import os
import logging
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generator

import numpy as np

from . import decode
from .errors import LookalikeError, PathNotFound
from .verify import detect as detect_keypoints
from .extractors import Extractor, registry
from .roots import Root, identify
from .sources import DEFAULT_CONTENT_HASH, FileEntry, content_hash, display_path, is_raw_name, walk
from .store import FileRecord, IndexStore

#: Skip reasons worth retrying on the next run even if the file did not change.
RETRY_REASONS = {"unreadable", "vanished", "too_large"}

ProgressFn = Callable[[int, int], None]
#: What :func:`_worker_init` is called with: extractor spec, max_pixels, known hashes,
#: keypoints spec, the index's content hash.
WorkerArgs = tuple[dict, int, frozenset[str], dict | None, str]


@dataclass
class IndexReport:
    """What one :func:`index_folder` run did. Counts are numbers of files."""

    root: str
    seen: int = 0  # image files found under root
    unchanged: int = 0  # already indexed, same size and mtime
    added: int = 0  # embedded for the first time
    updated: int = 0  # content changed, embedded again
    renamed: int = 0  # moved or renamed: vector reused
    reused: int = 0  # same content as an indexed file: vector reused
    skipped: int = 0  # could not be indexed (see skip_reasons)
    removed: int = 0  # gone from disk, removed from the index
    skip_reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def processed(self) -> int:
        return self.added + self.updated + self.renamed + self.reused + self.skipped


class IndexInterrupted(LookalikeError):
    """Indexing stopped by Ctrl-C; everything committed before it is kept."""

    def __init__(self, report: IndexReport):
        super().__init__("indexing interrupted")
        self.report = report


# -- worker side -----------------------------------------------------------
_worker: dict[str, Any] = {}


def _exit_with_parent(parent: int) -> None:
    """Worker side: exit as soon as the indexing process is gone (e.g. kill -9)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_init(
    spec: dict, max_pixels: int, known_hashes: frozenset[str], local_spec: dict | None = None,
    hash_name: str = DEFAULT_CONTENT_HASH, in_worker: bool = True,
) -> None:
    if in_worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
        # A killed parent never closes the task queue (every worker holds its
        # write end), so workers would wait forever: watch the parent instead.
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from the worker processes
        decode.QUIET_NATIVE_STDERR = True  # a bad file's reason comes back as one line; no C library's own
    _worker["extractor"] = registry.create(spec)
    _worker["max_pixels"] = max_pixels
    _worker["known"] = known_hashes
    _worker["local"] = local_spec
    _worker["hash"] = hash_name


def _load(entry: FileEntry) -> tuple:
    """Read, hash, decode and prepare one file.

    Returns ``(entry, hash, width, height, prepared, reason, detail, features)``;
    ``prepared`` is ``None`` when the file failed (``reason`` says why) or its
    hash is already known (its vector can be reused without decoding);
    ``features``: its keypoints when the index stores them (else ``None``).
    """
    extractor: Extractor = _worker["extractor"]
    digest = None
    try:
        data = decode.read_file(entry.path)
        digest = content_hash(data, _worker["hash"])
        if digest in _worker["known"]:
            return entry, digest, None, None, None, None, None, None
        img = decode.decode_bytes(data, min_side=extractor.min_side, max_pixels=_worker["max_pixels"],
                                  raw=is_raw_name(entry.path))
        prepared = extractor.prepare(img.pixels)
        features = detect_keypoints(img.pixels, _worker["local"], (img.width, img.height)) if _worker.get("local") else None
        return entry, digest, img.width, img.height, prepared, None, None, features
    except decode.DecodeError as e:
        return entry, digest, None, None, None, e.reason.value, e.detail, None
    except Exception as e:  # an extractor bug on one odd image must not stop the run
        return entry, digest, None, None, None, decode.SkipReason.DECODE_ERROR.value, f"{type(e).__name__}: {e}", None


def _load_chunk(entries: list[FileEntry]) -> list[tuple]:
    return [_load(e) for e in entries]


def _loaded(
    entries: list[FileEntry], jobs: int, init_args: WorkerArgs, chunk: int = 8
) -> Generator[tuple, None, None]:
    """Results of :func:`_load` in input order, from ``jobs`` worker processes.

    At most ``4 * jobs`` chunks are in flight, so memory stays flat however
    slow the consumer is.
    """
    if jobs <= 1:
        _worker_init(*init_args, in_worker=False)
        for e in entries:
            yield _load(e)
        return
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding ORT threads
    chunks = [entries[i : i + chunk] for i in range(0, len(entries), chunk)]
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=init_args) as pool:
        inflight: deque = deque()
        todo = iter(chunks)
        try:
            for c in todo:
                inflight.append(pool.submit(_load_chunk, c))
                if len(inflight) >= 4 * jobs:
                    break
            while inflight:
                results = inflight.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    inflight.append(pool.submit(_load_chunk, nxt))
                yield from results
        finally:
            for f in inflight:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


# -- main side -------------------------------------------------------------
class _StopAfterBatch:
    """Ctrl-C while indexing: the first one asks to stop once the batch in hand is committed
    (said at once, as a note); a second one stops the process now, as a kill would
    (committed batches are safe either way; the decoding workers are ended first). Only
    where Python would raise KeyboardInterrupt (the main thread, SIGINT not ignored:
    ``nohup`` and background jobs keep ignoring it)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopAfterBatch":
        import threading

        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._first)
        return self

    def _first(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._second)
        logging.getLogger("lookalike").warning(
            "stopping after the current batch (Ctrl-C again to stop at once; committed files are kept)")

    @staticmethod
    def _second(signum, frame) -> None:
        import multiprocessing

        for child in multiprocessing.active_children():
            child.kill()
        os.write(2, b"stopped at once; the files committed so far are kept: run the same command again "
                    b"to resume\n")
        os._exit(130)

    def __exit__(self, *exc) -> None:
        if self._previous is not None and not self.requested:
            signal.signal(signal.SIGINT, self._previous)
        # after a first Ctrl-C the process is on its way out: a second one still stops it at once


def index_folder(
    store: IndexStore,
    extractor: Extractor,
    root: str | os.PathLike,
    *,
    jobs: int | None = None,
    batch_size: int = 64,
    include_hidden: bool = False,
    max_pixels: int = decode.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    select: Callable[[str], bool] | None = None,
) -> IndexReport:
    """Bring the index up to date with the image files under ``root``.

    New and changed files are embedded, renamed or copied files reuse their
    vector (same content hash), files that disappeared are removed, and files
    that cannot be decoded are recorded with a reason. ``jobs``: decoding
    processes (default: the number of CPUs; 1 = decode in this process).
    Raises :class:`IndexInterrupted` on Ctrl-C after keeping all committed batches.
    """
    started = time.perf_counter()
    root = os.path.abspath(os.fspath(root))
    report = IndexReport(root=display_path(root))
    if not os.path.exists(root):
        raise PathNotFound(f"no such file or folder: {display_path(root)}")
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    spec = extractor.spec()
    hash_name = store.manifest.content_hash

    with store.writing():
        entries = list(walk(root, include_hidden=include_hidden))
        if select is not None:  # e.g. one shard of several indexers (``select(display path)``)
            entries = [e for e in entries if select(display_path(e.path))]
        report.seen = len(entries)
        key_of = {e.path: display_path(e.path) for e in entries}
        existing = {r.path: r for r in store.catalog.records(under=report.root) if select is None or select(r.path)}
        todo = []
        for e in entries:
            rec = existing.get(key_of[e.path])
            if (
                rec is not None
                and rec.size == e.size
                and rec.mtime_ns == e.mtime_ns
                and not (rec.status == "skipped" and rec.reason in RETRY_REASONS)
            ):
                report.unchanged += 1
            else:
                todo.append(e)
        walked = set(key_of.values())
        missing = {p: r for p, r in existing.items() if p not in walked}
        movable = {r.content_hash: r for r in missing.values() if r.status == "ok" and r.content_hash}

        if extractor.trainable and not extractor.is_trained() and todo:
            _train(store, extractor, todo, jobs, (spec, max_pixels, frozenset(), None, hash_name))
        local_spec = store.manifest.local
        batch = _Batch(store, extractor, report, max_pixels, local_spec)
        total = len(todo)
        if progress:
            progress(0, total)
        try:
            init_args = (spec, max_pixels, frozenset(movable), local_spec, hash_name)
            with _StopAfterBatch() as stop:
                loaded = _loaded(todo, jobs, init_args)
                try:
                    for done, result in enumerate(loaded, 1):
                        batch.take(result, key_of[result[0].path], existing, movable, missing)
                        if batch.full(batch_size) or stop.requested:
                            batch.flush()
                        if progress:
                            progress(done, total)
                        if stop.requested:
                            raise KeyboardInterrupt
                finally:
                    loaded.close()  # stop the decoding workers now, not when the generator is collected
            batch.flush()
            store.commit(deletes=list(missing), root=_root_record(root, report.root))
            report.removed = len(missing)
        except KeyboardInterrupt:
            report.interrupted = True
            report.seconds = time.perf_counter() - started
            raise IndexInterrupted(report) from None
    report.seconds = time.perf_counter() - started
    return report


def _root_record(root: str, key: str) -> Root | str:
    """The root as recorded in the catalog: its catalog prefix with its real path and identity now."""
    try:
        r = identify(root)
    except OSError:
        return key
    return Root(key, r.real, r.dev, r.ino)


def _train(store: IndexStore, extractor: Extractor, todo: list[FileEntry], jobs: int, init_args: WorkerArgs) -> None:
    """Learn the extractor's state (e.g. a vocabulary) from an even sample of ``todo``."""
    n = min(len(todo), getattr(extractor, "train_images", 300))
    sample = [todo[round(i * (len(todo) - 1) / max(1, n - 1))] for i in range(n)] if n > 1 else todo[:1]
    prepared = [r[4] for r in _loaded(sample, jobs, init_args) if r[4] is not None]
    extractor.fit(prepared)
    store.save_state(extractor.state())


class _Batch:
    """Records and prepared images waiting for one commit."""

    def __init__(
        self, store: IndexStore, extractor: Extractor, report: IndexReport, max_pixels: int, local_spec: dict | None
    ):
        self.store, self.extractor, self.report = store, extractor, report
        self.max_pixels = max_pixels
        self.local_spec = local_spec
        self.features: list = []  # local features per prepared image, when the index stores them
        self.records: list[FileRecord] = []
        self.renames: list[tuple[str, FileRecord]] = []
        self.prepared: list[np.ndarray] = []
        self.pending: dict[str, int] = {}  # content hash -> position in prepared
        self.twins: list[tuple[FileRecord, int]] = []  # copies of a file in this batch
        self.counts: Counter = Counter()
        self.reasons: Counter = Counter()

    def full(self, size: int) -> bool:
        return len(self.prepared) >= size or len(self.records) >= 4 * size

    def take(self, result: tuple, key: str, existing: dict, movable: dict, missing: dict) -> None:
        entry, digest, width, height, prepared, reason, detail, features = result
        old = existing.get(key)
        base = dict(path=key, size=entry.size, mtime_ns=entry.mtime_ns, content_hash=digest)
        if reason is not None:
            self.records.append(FileRecord(None, **base, width=None, height=None,
                                           status="skipped", reason=reason, detail=detail))
            self.counts["skipped"] += 1
            self.reasons[reason] += 1
            return
        if digest in movable:  # renamed or moved: same id, same vector
            src = movable.pop(digest)
            missing.pop(src.path, None)
            self.renames.append((src.path, FileRecord(None, **base, width=src.width, height=src.height,
                                                      status="ok", row=src.row)))
            self.counts["renamed"] += 1
            return
        if old is not None and old.status == "ok" and old.content_hash == digest:
            self.records.append(FileRecord(None, **base, width=old.width, height=old.height,
                                           status="ok", row=old.row))  # touched only
            self.counts["unchanged"] += 1
            return
        twins = self.store.catalog.by_hash(digest) if digest else []
        if twins:  # a copy of an indexed file
            t = twins[0]
            self.records.append(FileRecord(None, **base, width=t.width, height=t.height,
                                           status="ok", row=t.row))
            self.counts["reused"] += 1
            return
        if digest in self.pending:  # a copy of a file waiting in this batch
            self.twins.append((FileRecord(None, **base, width=width, height=height, status="ok"),
                               self.pending[digest]))
            self.counts["reused"] += 1
            return
        if prepared is None:  # hash was known to the worker but its entry moved meanwhile
            try:
                img = decode.decode_file(entry.path, min_side=self.extractor.min_side, max_pixels=self.max_pixels)
            except decode.DecodeError as e:
                return self.take((entry, digest, None, None, None, e.reason.value, e.detail, None),
                                 key, existing, {}, missing)
            prepared, width, height = self.extractor.prepare(img.pixels), img.width, img.height
            features = detect_keypoints(img.pixels, self.local_spec, (img.width, img.height)) if self.local_spec else None
        self.records.append(FileRecord(None, **base, width=width, height=height, status="ok"))
        if digest:
            self.pending[digest] = len(self.prepared)
        self.prepared.append(prepared)
        self.features.append(features)
        self.counts["updated" if old is not None else "added"] += 1

    def flush(self) -> None:
        if not (self.records or self.renames):
            return
        vectors = self.extractor.embed_prepared(self.prepared) if self.prepared else None
        first_row = self.store.catalog.n_rows()  # where store.commit appends these vectors
        twins = [replace(rec, row=first_row + i) for rec, i in self.twins]
        self.store.commit(vectors=vectors, records=self.records + twins, renames=self.renames,
                          local=self.features if self.local_spec else None)
        r = self.report
        r.added += self.counts["added"]
        r.updated += self.counts["updated"]
        r.renamed += self.counts["renamed"]
        r.reused += self.counts["reused"]
        r.unchanged += self.counts["unchanged"]
        r.skipped += self.counts["skipped"]
        r.skip_reasons.update(self.reasons)
        self.records, self.renames, self.prepared, self.features = [], [], [], []
        self.pending, self.twins = {}, []
        self.counts, self.reasons = Counter(), Counter()
