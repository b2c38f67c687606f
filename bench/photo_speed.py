"""Camera-sized photos: lookalike's indexing rate against the decode floor and the
inference-only limit, with the default configuration (``bench/speed.py --photos``).

For each set of ``bench/make_photos.py`` (``1mp/``, ``12mp/``, ``heic/``, ``mixed/``):

* **decode floor**: the fastest way to get each file's pixels at the size the
  extractor needs (its ``min_side``), bytes already in memory, one thread: the
  best of every decoder that reads the file (Pillow with a reduced DCT scale,
  OpenCV's reduced-size JPEG decoding, simplejpeg where it is installed, and
  lookalike's own ``decode_bytes`` as its indexing workers run it, which also
  checks and orients); the mean
  over the set of each file's best time (best of 3 tries);
* **inference-only limit**: ``embed_prepared`` of the extractor alone on the
  set's images already decoded and prepared, in batches of 64, with every core
  (best of 3 passes after a warm-up);
* **floor**: the rate if the machine did nothing but those two, decoding on
  every core: ``1 / (decode_ms / 1000 / cores + 1 / inference_rate)``;
* **lookalike**: ``Index.add`` of the folder in a fresh index in a process of
  its own, as ``lookalike index FOLDER`` runs it (default extractor, default
  keypoints, default ``--jobs``): images/s over the whole run, and steady (the
  files between a quarter and three quarters of the way, over the time between
  them: start-up, the first chunks and the tail left out), with the peak memory
  of the indexing process and of its largest worker.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lookalike import decode
from lookalike.extractors import registry

PHOTO_SETS = ("1mp", "12mp", "heic", "mixed")
#: images/s with the default configuration on 2 cores (issue targets), and the share of the floor
TARGETS = {"1mp": 120.0, "12mp": 45.0}
FLOOR_SHARE_TARGET = 0.7
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff", ".dng"}


def photo_sets(photos: Path) -> list[tuple[str, Path]]:
    """``(name, folder)`` for each set under ``photos``, else the folder itself."""
    found = [(name, photos / name) for name in PHOTO_SETS if (photos / name).is_dir()]
    return found or [(photos.name, photos)]


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def decoders(min_side: int) -> dict[str, Callable[[bytes], Any]]:
    """Ways to get pixels at (at least) ``min_side`` on the shorter side; each raises on
    a file it cannot read."""
    import cv2
    from PIL import Image

    def pillow_draft(data: bytes):
        im = Image.open(io.BytesIO(data))
        if im.format != "JPEG":
            raise ValueError("not a JPEG")
        w, h = im.size
        scale = min_side / min(w, h)
        im.draft("RGB", (int(w * scale) + 1, int(h * scale) + 1))
        return np.asarray(im.convert("RGB"))

    def opencv_reduced(data: bytes):
        if data[:2] != b"\xff\xd8":
            raise ValueError("not a JPEG")
        with Image.open(io.BytesIO(data)) as im:
            shorter = min(im.size)
        flag = cv2.IMREAD_COLOR
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if shorter / factor >= min_side:
                flag = reduced
                break
        out = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if out is None:
            raise ValueError("OpenCV cannot read it")
        return out

    def as_in_a_worker(data: bytes):  # what the indexing workers run (OpenCV for JPEGs)
        decode.QUIET_NATIVE_STDERR, before = True, decode.QUIET_NATIVE_STDERR
        try:
            return decode.decode_bytes(data, min_side=min_side).pixels
        finally:
            decode.QUIET_NATIVE_STDERR = before

    ways: dict[str, Callable[[bytes], Any]] = {
        "lookalike": as_in_a_worker,
        "pillow-draft": pillow_draft,
        "opencv-reduced": opencv_reduced,
    }
    try:
        import simplejpeg

        def simple(data: bytes):
            if not simplejpeg.is_jpeg(data):
                raise ValueError("not a JPEG")
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_side, min_width=min_side,
                                          min_factor=1)

        ways["simplejpeg"] = simple
    except ImportError:
        pass
    return ways


def decode_floor(files: list[Path], min_side: int, tries: int = 3) -> dict[str, Any]:
    """Mean ms per file of the fastest decoder for it, and each decoder's mean on the
    files it reads."""
    import cv2

    cv2.setNumThreads(1)
    ways = decoders(min_side)
    best: list[float] = []
    per_way: dict[str, list[float]] = {name: [] for name in ways}
    for f in files:
        data = f.read_bytes()
        times = {}
        for name, way in ways.items():
            try:
                way(data)  # warm-up; raises if this decoder cannot read the file
            except Exception:
                continue
            spent = []
            for _ in range(tries):
                t = time.perf_counter()
                way(data)
                spent.append(time.perf_counter() - t)
            times[name] = 1000 * min(spent)
            per_way[name].append(times[name])
        if times:
            best.append(min(times.values()))
    return {"ms": float(np.mean(best)) if best else float("nan"),
            "by_decoder": {n: float(np.mean(v)) for n, v in per_way.items() if len(v) == len(files)}}


def inference_limit(spec: dict, files: list[Path], batch: int = 64, passes: int = 3) -> float:
    """images/s of ``embed_prepared`` alone on the files decoded and prepared beforehand."""
    extractor = registry.create(spec)
    prepared = []
    for f in (files * (batch // max(1, len(files)) + 1))[:batch]:
        prepared.append(extractor.prepare(decode.decode_file(f, min_side=extractor.min_side).pixels))
    extractor.embed_prepared(prepared)  # warm-up: session start-up, first allocations
    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        extractor.embed_prepared(prepared)
        best = min(best, time.perf_counter() - t)
    return batch / best


#: ``Index.add`` in a process of its own; prints one JSON line.
_INDEX_RUN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from lookalike import Index
marks = {}
def progress(done, total):  # when the files a quarter and three quarters of the way through are back
    now = time.perf_counter()
    if done >= max(1, total // 4) and "first" not in marks:
        marks["first"], marks["first_n"] = now, done
    if done <= max(1, 3 * total // 4):
        marks["last"], marks["last_n"] = now, done
started = time.perf_counter()
with Index.create(sys.argv[2]) as ix:
    r = ix.add(sys.argv[1], progress=progress)
    spec = ix.extractor.spec()
seconds = time.perf_counter() - started
span = marks.get("last", 0) - marks.get("first", 0)
middle = marks.get("last_n", 0) - marks.get("first_n", 0)
print(json.dumps({"seconds": seconds, "embedded": r.added + r.updated, "processed": r.processed,
                  "skipped": r.skipped, "steady": middle / span if span > 0 and middle > 0 else None,
                  "extractor": spec["name"],
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def index_run(folder: Path, index_dir: Path) -> dict[str, Any]:
    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", _INDEX_RUN, str(folder), str(index_dir), repo],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["images_per_s"] = result["processed"] / result["seconds"]
    return result


def median_megapixels(files: list[Path]) -> float:
    from PIL import Image

    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.width * im.height / 1e6)
    return float(np.median(sizes)) if sizes else float("nan")


def photo_rows(photos: Path, workdir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    spec = registry.default_spec()
    extractor = registry.create(spec)
    cores = os.cpu_count() or 1
    rows = []
    for name, folder in photo_sets(photos):
        files = files_of(folder)
        if not files:
            continue
        log(f"[photos {name}] decode floor over {len(files)} files")
        floor = decode_floor(files, extractor.min_side or 224)
        log(f"[photos {name}] inference-only limit")
        inference = inference_limit(spec, files)
        log(f"[photos {name}] lookalike index, a process of its own")
        run = index_run(folder, workdir / f"photos-{name}")
        floor_rate = 1.0 / (floor["ms"] / 1000 / cores + 1.0 / inference)
        rows.append({"set": name, "files": len(files), "mp": median_megapixels(files),
                     "mb": float(np.median([f.stat().st_size for f in files])) / 1e6,
                     "decode_ms": floor["ms"], "by_decoder": floor["by_decoder"], "inference": inference,
                     "floor": floor_rate, "run": run, "target": TARGETS.get(name)})
    return rows


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or x != x else f"{x:,.{digits}f}"


def photos_table(rows: list[dict[str, Any]]) -> str:
    header = ["set", "files", "median MP", "median MB", "decode floor ms", "inference only images/s",
              "floor images/s", "lookalike images/s", "steady images/s", "of floor", "of inference",
              "target", "met", "peak MB (main / worker)"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for r in rows:
        run = r["run"]
        rate = run["steady"] or run["images_per_s"]
        target = r["target"]
        met = "-" if target is None else ("yes" if rate >= target and rate / r["floor"] >= FLOOR_SHARE_TARGET
                                          else "no")
        lines.append("| " + " | ".join([
            r["set"], str(r["files"]), _f(r["mp"], 2), _f(r["mb"], 2), _f(r["decode_ms"]), _f(r["inference"]),
            _f(r["floor"]), _f(run["images_per_s"]), _f(run["steady"]), f"{rate / r['floor']:.2f}",
            f"{rate / r['inference']:.2f}", "-" if target is None else _f(target, 0), met,
            f"{run['peak_mb']:,.0f} / {run['worker_peak_mb']:,.0f}"]) + " |")
    return "\n".join(lines)


def decoders_table(rows: list[dict[str, Any]]) -> str:
    names = sorted({n for r in rows for n in r["by_decoder"]})
    lines = ["| set | " + " | ".join(f"{n} ms" for n in names) + " |", "| --- |" + " ---: |" * len(names)]
    for r in rows:
        lines.append("| " + " | ".join([r["set"]] + [_f(r["by_decoder"].get(n), 2) for n in names]) + " |")
    return "\n".join(lines)
