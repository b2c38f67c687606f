"""Fuzz lookalike's decoder and query path with mutated image bytes.

Every input is a seed image (``tests/data/odd/`` by default) changed by one
to four mutations: bit flips, byte overwrites with boundary values, a
truncation, a duplicated, deleted or inserted chunk, or a header field set to
a boundary value (width, height, bit depth, colour type, component count...:
PNG IHDR, JPEG SOF, GIF screen and frame descriptors, WebP VP8/VP8L/VP8X),
optionally with the PNG chunk CRCs recomputed so that the mutation gets past
the CRC check and reaches the decoder.

Each input goes through :func:`lookalike.decode.decode_bytes`; with
``--query`` also through ``Index.search`` as a temporary file and, when it
decodes, as a pixel array. The contract being checked: the only exception
that may come out is ``DecodeError`` (``QueryError`` for a search), and a
decoded image is an ``(H, W, 3) uint8`` array. Anything else is counted as a
crash and the input saved under ``--crash-dir``.

Run from the repository root::

    .venv/bin/python bench/fuzz.py                      # 60 s, plain seeded mutator loop
    .venv/bin/python bench/fuzz.py --seconds 120 --query
    .venv/bin/python bench/fuzz.py --engine atheris     # coverage-guided, if atheris is installed
    .venv/bin/python bench/fuzz.py --replay 1234        # re-run input number 1234 of --seed

Input number ``i`` of a plain run is a pure function of ``--seed`` and ``i``,
so any input can be replayed on its own. The report (inputs tried, decoded,
refused by reason, slowest input, peak memory, crashes) goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):  # run as a script: make `lookalike` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from lookalike import decode

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SEEDS = REPO / "tests" / "data" / "odd"

#: Boundary values used by byte, field and header mutations.
INTERESTING = (0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 127, 128, 255, 256, 4096, 0x7FFF, 0x8000, 0xFFFF,
               0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)

Op = tuple[str, int, int]


# -- mutators ------------------------------------------------------------------
# Each takes the bytes and two arbitrary non-negative ints (reduced modulo
# whatever range they index), so a mutation is plain data: easy to draw from
# `random`, from hypothesis or from atheris, and to print.
def _bitflip(d: bytearray, a: int, b: int) -> bytearray:
    if d:
        d[a % len(d)] ^= 1 << (b % 8)
    return d


def _byte(d: bytearray, a: int, b: int) -> bytearray:
    if d:
        d[a % len(d)] = INTERESTING[b % len(INTERESTING)] & 0xFF if b % 2 else b % 256
    return d


def _truncate(d: bytearray, a: int, b: int) -> bytearray:
    return d[: a % (len(d) + 1)]


def _duplicate(d: bytearray, a: int, b: int) -> bytearray:
    if not d:
        return d
    start = a % len(d)
    size = 1 + b % min(256, len(d) - start)
    chunk = d[start : start + size]
    at = (a + b) % (len(d) + 1)
    return d[:at] + chunk + d[at:]


def _delete(d: bytearray, a: int, b: int) -> bytearray:
    if not d:
        return d
    start = a % len(d)
    return d[:start] + d[start + 1 + b % 64 :]


def _insert(d: bytearray, a: int, b: int) -> bytearray:
    at = a % (len(d) + 1)
    return d[:at] + bytes([b % 256]) * (1 + (b >> 8) % 64) + d[at:]


def _set_int(d: bytearray, offset: int, size: int, value: int, big_endian: bool) -> bytearray:
    if offset + size <= len(d):
        fmt = (">" if big_endian else "<") + {1: "B", 2: "H", 4: "I"}[size]
        d[offset : offset + size] = struct.pack(fmt, value & ((1 << (8 * size)) - 1))
    return d


def _png_fields(d: bytes) -> list[tuple[int, int, bool]]:
    # IHDR data starts at 16: width, height (4 bytes), depth, colour type, compression, filter, interlace
    return [(16, 4, True), (20, 4, True), (24, 1, True), (25, 1, True), (26, 1, True), (27, 1, True), (28, 1, True)]


def _jpeg_fields(d: bytes) -> list[tuple[int, int, bool]]:
    fields, i = [], 2
    while i + 4 <= len(d) and d[i] == 0xFF:
        marker = d[i + 1]
        length = struct.unpack(">H", d[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            fields += [(i + 4, 1, True), (i + 5, 2, True), (i + 7, 2, True), (i + 9, 1, True),
                       (i + 11, 1, True), (i + 12, 1, True)]  # precision, h, w, components, sampling, table
        elif marker in (0xDB, 0xC4, 0xDD, 0xDA):  # DQT, DHT, DRI, SOS: the first bytes of each
            fields += [(i + 2, 2, True), (i + 4, 1, True), (i + 5, 1, True)]
        if marker == 0xDA:
            break
        i += 2 + length
    return fields


def _gif_fields(d: bytes) -> list[tuple[int, int, bool]]:
    fields = [(6, 2, False), (8, 2, False), (10, 1, False)]  # screen width, height, flags
    at = d.find(b"\x2c", 13)  # the first image descriptor (good enough for a mutator)
    if at > 0:
        fields += [(at + 1, 2, False), (at + 3, 2, False), (at + 5, 2, False), (at + 7, 2, False), (at + 9, 1, False)]
    return fields


def _webp_fields(d: bytes) -> list[tuple[int, int, bool]]:
    fields = [(4, 4, False)]  # RIFF size
    for tag, offs in ((b"VP8X", [(12 + 8, 1, False), (12 + 12, 2, False), (12 + 15, 2, False)]),
                      (b"VP8L", [(4, 4, False), (9, 4, False)]), (b"VP8 ", [(4, 4, False), (14, 2, False), (16, 2, False)])):
        at = d.find(tag, 12)
        if at > 0:
            fields += [(o if tag == b"VP8X" else at + o, n, be) for o, n, be in offs]
    return fields


def _header(d: bytearray, a: int, b: int) -> bytearray:
    """Set one header field (chosen by ``a``) to a boundary value (chosen by ``b``)."""
    if d.startswith(b"\x89PNG"):
        fields = _png_fields(d)
    elif d.startswith(b"\xff\xd8"):
        fields = _jpeg_fields(d)
    elif d.startswith(b"GIF8"):
        fields = _gif_fields(d)
    elif d.startswith(b"RIFF"):
        fields = _webp_fields(d)
    else:
        fields = []
    if not fields:  # unknown format: a 16- or 32-bit int somewhere in the first 64 bytes
        size = 2 if a % 2 else 4
        fields = [((a >> 1) % max(1, min(64, len(d) - size + 1)), size, bool(a & 4))]
    offset, size, big_endian = fields[a % len(fields)]
    value = INTERESTING[b % len(INTERESTING)]
    if b % 3 == 0 and offset + size <= len(d):  # or nudge the current value
        current = int.from_bytes(d[offset : offset + size], "big" if big_endian else "little")
        value = current + (b // 3) % 5 - 2
    return _set_int(d, offset, size, value, big_endian)


def fix_png_crcs(d: bytearray, a: int = 0, b: int = 0) -> bytearray:
    """Recompute every PNG chunk CRC so mutations get past Pillow's CRC check."""
    if not d.startswith(b"\x89PNG\r\n\x1a\n"):
        return d
    i = 8
    while i + 12 <= len(d):
        length = struct.unpack(">I", d[i : i + 4])[0]
        end = i + 8 + length
        if end + 4 > len(d):
            break
        d[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(d[i + 4 : end])))
        i = end + 4
    return d


MUTATORS: dict[str, Callable[[bytearray, int, int], bytearray]] = {
    "bitflip": _bitflip,
    "byte": _byte,
    "truncate": _truncate,
    "duplicate": _duplicate,
    "delete": _delete,
    "insert": _insert,
    "header": _header,
    "crc": fix_png_crcs,
}
MUTATOR_NAMES = tuple(MUTATORS)


def mutate(data: bytes, ops: Sequence[Op]) -> bytes:
    """Apply ``ops`` (``(mutator name, a, b)``) in order."""
    d = bytearray(data)
    for name, a, b in ops:
        d = MUTATORS[name](d, a, b)
    return bytes(d)


def random_ops(rng: random.Random) -> list[Op]:
    ops = [(rng.choice(MUTATOR_NAMES[:-1]), rng.getrandbits(32), rng.getrandbits(32))
           for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4)))]
    if rng.random() < 0.5:
        ops.append(("crc", 0, 0))
    return ops


def load_seeds(folder: Path) -> list[tuple[str, bytes]]:
    seeds = [(p.name, p.read_bytes()) for p in sorted(Path(folder).iterdir())
             if p.is_file() and p.suffix.lower() not in (".md", ".py", ".txt")]
    seeds = [(n, b) for n, b in seeds if b]
    if not seeds:
        raise SystemExit(f"no seed files in {folder}")
    return seeds


def nth_input(seeds: Sequence[tuple[str, bytes]], seed: int, i: int) -> tuple[str, list[Op], bytes]:
    """Input number ``i`` of run ``seed``: (seed file name, mutations, bytes)."""
    rng = random.Random(f"{seed}:{i}")
    name, data = seeds[rng.randrange(len(seeds))]
    ops = random_ops(rng)
    return name, ops, mutate(data, ops)


# -- the contract ----------------------------------------------------------------
class ContractBroken(AssertionError):
    """A decoder or query result broke the contract (not an expected refusal)."""


def check_decode(data: bytes, max_pixels: int = decode.DEFAULT_MAX_PIXELS) -> tuple[str, object]:
    """``("ok", Decoded)`` or ``(reason, None)``; anything else raises."""
    try:
        d = decode.decode_bytes(data, max_pixels=max_pixels)
    except decode.DecodeError as e:
        if not isinstance(e.reason, decode.SkipReason):
            raise ContractBroken(f"DecodeError without a SkipReason: {e!r}") from None
        return e.reason.value, None
    px = d.pixels
    if not (isinstance(px, np.ndarray) and px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3
            and px.shape[0] > 0 and px.shape[1] > 0 and d.width > 0 and d.height > 0):
        raise ContractBroken(f"bad decoded image: {type(px)} {getattr(px, 'shape', None)} "
                             f"{getattr(px, 'dtype', None)} {d.width}x{d.height}")
    return "ok", d


def check_query(index, data: bytes, decoded, workdir: str, k: int = 3) -> None:
    """Search ``data`` as a temporary file and, if it decoded, as an array."""
    from lookalike import QueryError

    path = os.path.join(workdir, "query.img")
    with open(path, "wb") as f:
        f.write(data)
    queries = [path] + ([decoded.pixels] if decoded is not None else [])
    for q in queries:
        try:
            hits = index.search(q, k=k)
        except QueryError:
            if decoded is not None:
                raise ContractBroken("a decodable image was refused as a query") from None
            continue
        if decoded is None:
            raise ContractBroken("an undecodable file gave search results")
        scores = [h.score for h in hits]
        if scores != sorted(scores, reverse=True) or len(hits) != min(k, len(index)):
            raise ContractBroken(f"bad hits: {hits}")


# -- engines --------------------------------------------------------------------
class Stats:
    def __init__(self) -> None:
        self.tried = 0
        self.outcomes: Counter = Counter()
        self.crashes: list[tuple[str, str]] = []
        self.slowest = (0.0, "")
        self.started = time.perf_counter()

    def record(self, label: str, data: bytes, run: Callable[[], str], crash_dir: Path | None) -> None:
        t = time.perf_counter()
        try:
            outcome = run()
        except Exception as e:  # the contract: nothing but DecodeError / QueryError
            outcome = "CRASH"
            text = "".join(traceback.format_exception(e))
            self.crashes.append((label, text))
            if crash_dir is not None:
                crash_dir.mkdir(parents=True, exist_ok=True)
                name = f"crash-{len(self.crashes):03d}"
                (crash_dir / f"{name}.bin").write_bytes(data)
                (crash_dir / f"{name}.txt").write_text(f"{label}\n\n{text}")
        dt = time.perf_counter() - t
        if dt > self.slowest[0]:
            self.slowest = (dt, label)
        self.tried += 1
        self.outcomes[outcome] += 1

    def report(self, title: str) -> str:
        secs = time.perf_counter() - self.started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        refused = {k: v for k, v in self.outcomes.items() if k not in ("ok", "CRASH")}
        lines = [
            f"# {title}",
            f"inputs tried:  {self.tried} in {secs:.1f} s ({self.tried / max(secs, 1e-9):.0f}/s)",
            f"decoded:       {self.outcomes['ok']}",
            f"refused:       {sum(refused.values())}  " + ", ".join(f"{k} {v}" for k, v in sorted(refused.items())),
            f"crashed:       {len(self.crashes)}",
            f"slowest input: {self.slowest[0] * 1000:.1f} ms ({self.slowest[1]})",
            f"peak RSS:      {peak:.0f} MB",
        ]
        for label, text in self.crashes[:5]:
            lines += ["", f"CRASH {label}", text]
        return "\n".join(lines)


def _make_index(extractor: str, workdir: str):
    from PIL import Image

    from lookalike import Index

    folder = Path(workdir) / "gallery"  # a dozen small distinct images to search
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((64, 64), Image.NEAREST).save(folder / f"img{i:02d}.png")
    ix = Index.create(Path(workdir) / f"idx-{extractor}", extractor=extractor)
    ix.add(folder, jobs=1)
    return ix


def run_plain(args, seeds, index, workdir) -> Stats:
    stats = Stats()
    end = time.perf_counter() + args.seconds
    i = args.start
    while time.perf_counter() < end and (args.max_inputs is None or stats.tried < args.max_inputs):
        name, ops, data = nth_input(seeds, args.seed, i)
        label = f"#{i} {name} {ops}"

        def one(data=data) -> str:
            outcome, decoded = check_decode(data)
            if index is not None:
                check_query(index, data, decoded, workdir)
            return outcome

        stats.record(label, data, one, args.crash_dir)
        i += 1
    return stats


def run_atheris(args, seeds, index, workdir) -> None:
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris is not installed (pip install atheris); use --engine plain") from None

    stats = Stats()
    end = time.perf_counter() + args.seconds

    def test_one(raw: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(raw)
        name, data = seeds[fdp.ConsumeIntInRange(0, len(seeds) - 1)]
        ops = [(MUTATOR_NAMES[fdp.ConsumeIntInRange(0, len(MUTATOR_NAMES) - 1)],
                fdp.ConsumeUInt(4), fdp.ConsumeUInt(4)) for _ in range(fdp.ConsumeIntInRange(1, 4))]
        mutated = mutate(data, ops)

        def one() -> str:
            outcome, decoded = check_decode(mutated)
            if index is not None:
                check_query(index, mutated, decoded, workdir)
            return outcome

        stats.record(f"{name} {ops}", mutated, one, args.crash_dir)
        if time.perf_counter() >= end:  # atheris.Fuzz() never returns: report and leave
            print(stats.report(f"atheris, {args.seconds:.0f} s"))
            sys.stdout.flush()
            os._exit(1 if stats.crashes else 0)

    if hasattr(atheris, "instrument_all"):  # coverage of the Python side (Pillow's plugins, our decode)
        atheris.instrument_all()
    atheris.Setup([sys.argv[0], "-rss_limit_mb=4096", "-max_len=65536"], test_one)
    atheris.Fuzz()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="run seed (plain engine)")
    ap.add_argument("--start", type=int, default=0, help="first input number (plain engine)")
    ap.add_argument("--max-inputs", type=int, default=None, help="stop after this many inputs")
    ap.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS, help="folder of seed images")
    ap.add_argument("--engine", choices=("plain", "atheris"), default="plain")
    ap.add_argument("--query", action="store_true", help="also search each input with Index.search")
    ap.add_argument("--extractor", default="phash", help="the query index's extractor (default phash)")
    ap.add_argument("--crash-dir", type=Path, default=None, help="save crashing inputs here")
    ap.add_argument("--replay", type=int, default=None, help="decode input number N of --seed and show it")
    args = ap.parse_args(argv)

    seeds = load_seeds(args.seeds)
    if args.replay is not None:
        name, ops, data = nth_input(seeds, args.seed, args.replay)
        print(f"input #{args.replay}: seed file {name}, mutations {ops}, {len(data)} bytes")
        outcome, decoded = check_decode(data)
        shape = f" -> {decoded.pixels.shape} ({decoded.width}x{decoded.height})" if decoded is not None else ""
        print(f"{outcome}{shape}")
        return 0
    with tempfile.TemporaryDirectory(prefix="lookalike-fuzz-") as workdir:
        index = _make_index(args.extractor, workdir) if args.query else None
        if args.engine == "atheris":
            run_atheris(args, seeds, index, workdir)
            return 0
        stats = run_plain(args, seeds, index, workdir)
        where = f", query path on a {args.extractor} index" if index is not None else ""
        print(stats.report(f"plain mutator loop, seed {args.seed}, {args.seconds:.0f} s, "
                           f"{len(seeds)} seed files from {args.seeds}{where}"))
        if index is not None:
            index.close()
    return 1 if stats.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
