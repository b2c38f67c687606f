"""The ``lookalike`` command: a thin shell over the Python API (parse, call, print)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from contextlib import contextmanager

import click

from . import decode
from .errors import LookalikeError, PathNotFound, UsageError
from .extractors import registry
from .grouping import DEFAULT_KEEP
from .index import Index, default_index_dir
from .levels import DEFAULT_LEVEL, LEVELS
from .indexer import IndexInterrupted, IndexReport
from .sources import walk
from .version import __version__


class _NoteHandler(logging.Handler):
    """Notes of the ``lookalike`` logger (e.g. a search structure rebuilt) as ``note: ...`` on stderr;
    warnings of its children (``lookalike.server``) as Python would print them without a handler."""

    def emit(self, record: logging.LogRecord) -> None:
        text = f"note: {record.getMessage()}" if record.name == "lookalike" else self.format(record)
        click.echo(text, err=True)  # the current stderr (CliRunner swaps it)


def _show_notes() -> None:
    logger = logging.getLogger("lookalike")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler(logging.WARNING))


@contextmanager
def _errors():
    """Turn expected failures into one clear line on stderr and exit status 1."""
    try:
        yield
    except LookalikeError as e:
        raise click.ClickException(str(e)) from None
    except sqlite3.Error as e:  # e.g. "database or disk is full"
        raise click.ClickException(f"index catalog: {e}") from None
    except BrokenPipeError:  # the reader went away (lookalike search ... | head): stop quietly
        sys.stderr.close()
        os._exit(0)
    except OSError as e:  # e.g. no space left on device, read-only file system
        where = f": {e.filename}" if e.filename else ""
        raise click.ClickException(f"{e.strerror or e}{where}") from None


def _progress(quiet: bool, desc: str):
    if quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="img", desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return update, bar


def _summary(r: IndexReport) -> str:
    rate = r.processed / r.seconds if r.seconds > 0 else 0.0  # what the progress bar counts: files processed
    parts = [
        f"{r.added} added", f"{r.updated} updated", f"{r.renamed} renamed", f"{r.reused} copies reused",
        f"{r.unchanged} unchanged", f"{r.removed} removed", f"{r.skipped} skipped",
    ]
    text = f"{r.root}: {r.seen} image files in {r.seconds:.1f} s ({rate:.0f} img/s): " + ", ".join(parts)
    if r.skip_reasons:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(r.skip_reasons.items())) + ")"
    return text


def _report_dict(r: IndexReport) -> dict:
    d = dict(vars(r))
    d["skip_reasons"] = dict(r.skip_reasons)
    return d


def backend_options(command):
    """``--milvus URI``, ``--milvus-token``, ``--collection``: keep the vectors in Milvus.

    The command receives them as ``**backend`` and opens its index with :func:`_open_index`.
    """
    command = click.option("--collection", default=None, help="Milvus collection (default: lookalike).")(command)
    command = click.option("--milvus-token", envvar="LOOKALIKE_MILVUS_TOKEN", default=None,
                           help="Milvus token: 'user:password' or an API key (default: env LOOKALIKE_MILVUS_TOKEN).")(command)
    command = click.option("--milvus", "milvus_uri", default=None, metavar="URI",
                           help="Vectors and search in Milvus: ./file.db (Milvus Lite) or http://host:19530 "
                                "(server or cluster); --index DIR is then the local catalog (optional).")(command)
    return command


def _location(index_dir, backend: dict) -> tuple[str, dict]:
    """``(location, options)`` for :func:`lookalike.backends.open_index` from ``--index`` and ``--milvus``."""
    if backend.get("milvus_uri"):
        return backend["milvus_uri"], {"token": backend.get("milvus_token"), "collection": backend.get("collection"),
                                       "local": index_dir}
    if not index_dir:
        index_dir = default_index_location()
        if not os.path.exists(os.path.join(index_dir, "manifest.json")) and not _creating():
            raise click.UsageError(f"no index named: give --index DIR (or --milvus URI), or set LOOKALIKE_INDEX; "
                                   f"the default, {index_dir}, holds no index yet (lookalike index FOLDER makes it)")
        click.echo(f"index: {index_dir} (the default; --index DIR or LOOKALIKE_INDEX to choose)", err=True)
    return index_dir, {}


def _creating() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.info_name == "index"


def _one_index(positional, option):
    """``info`` and ``check`` take the index as INDEX_DIR or as --index, like every other command."""
    if positional and option and os.path.abspath(os.path.expanduser(positional)) != \
            os.path.abspath(os.path.expanduser(option)):
        raise click.UsageError(f"two indexes named: {positional} and --index {option}; give one")
    return positional or option


def default_index_location() -> str:
    """The index used when a command names none: ``$LOOKALIKE_INDEX``, else the per-user
    ``$XDG_DATA_HOME/lookalike/index`` (default ``~/.local/share/lookalike/index``)."""
    if os.environ.get("LOOKALIKE_INDEX"):
        return os.path.expanduser(os.environ["LOOKALIKE_INDEX"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "lookalike", "index")


def _check_index_dir(index_dir) -> None:
    """``--index`` must name a folder (new or an index), not a file."""
    if index_dir is not None:
        path = os.path.expanduser(os.fspath(index_dir))
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"--index {index_dir} is a file, not an index folder: give a folder "
                             "(a new one is made)")


def _open_index(index_dir, backend: dict, extractor=None, *, create: bool = False, **kw) -> Index:
    """The index named by ``--index DIR`` and/or the ``--milvus`` options (see :func:`backend_options`)."""
    from .backends import open_index

    location, options = _location(index_dir, backend)
    return open_index(location, extractor, create=create, **options, **kw)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lookalike")
def main() -> None:
    """Find images that look alike: index folders, then search by example."""
    _show_notes()


def run() -> None:
    """The `lookalike` command: :func:`main`, and quiet when its reader goes away
    (`lookalike extractors | head`)."""
    try:
        main()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error while Python flushes stdout at exit
        sys.exit(0)


@main.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@click.option("--index", "index_dir", default=None, type=click.Path(), help="Index folder (created if new).")
@click.option("--extractor", "-e", default=None, help="Extractor name or JSON spec (default: `default`, SSCD copies first with the sscd extra, else cnn). See `lookalike extractors`.")
@click.option("--jobs", "-j", type=int, default=None, help="Decoding processes (default: CPU count; 1 = none).")
@click.option("--threads", type=int, default=None, help="Inference threads (default: CPU count).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images embedded and committed together.")
@click.option("--hidden", is_flag=True, help="Include hidden files and folders.")
@click.option("--max-pixels", type=int, default=decode.DEFAULT_MAX_PIXELS, show_default=True, help="Refuse images with more pixels (decompression-bomb guard).")
@click.option("--ann", type=click.Choice(["auto", "exact", "hnsw", "ivfpq"]), default=None,
              help="Search structure (default auto: exact below 50k images, HNSW above, IVF-PQ past 5M).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--shard", default=None, metavar="I/N",
              help="Index only shard I of N (0-based) of the files: N indexers, one per shard, fill one Milvus collection.")
@click.option("--keypoints", type=click.Choice(["auto", "sift", "none"]), default=None,
              help="Store SIFT keypoints for `search --verify` (default auto: with the cnn extractor only). New indexes only.")
@backend_options
def index(folders, index_dir, extractor, jobs, threads, batch_size, hidden, max_pixels, ann, as_json, quiet, shard,
          keypoints, **backend):
    """Index the images in FOLDERS (incremental: reruns only process changes)."""
    from .backends import parse_shard

    with _errors():
        shard = parse_shard(shard)
        for folder in folders:  # before an index folder is made for them
            if not os.path.exists(os.path.expanduser(folder)):
                raise PathNotFound(f"no such file or folder: {folder}")
        _check_index_dir(index_dir)
    new = extractor is None and index_dir is not None and not (Path(index_dir).expanduser() / "manifest.json").exists()
    with _errors(), _open_index(index_dir, backend, extractor, create=True, threads=threads, max_pixels=max_pixels,
                                ann=ann, shard=shard, keypoints=keypoints) as ix:
        if new and not quiet:
            click.echo(f"note: new index with the default extractor: {default_description()}", err=True)
        if ann and ix.store.manifest.ann != ann:
            ix.set_ann(ann)
        for folder in folders:
            report = _add_folder(ix, folder, quiet, jobs=jobs, batch_size=batch_size, include_hidden=hidden,
                                 **({"shard": shard} if shard else {}))
            if as_json:
                click.echo(json.dumps(_report_dict(report)))
            elif not quiet:
                click.echo(_summary(report))
            if not report.seen and not as_json:
                click.echo(f"note: no image files under {folder} (lookalike reads JPEG, PNG, WebP, GIF, BMP, "
                           "TIFF, HEIC/HEIF, AVIF and, with the 'raw' extra, camera RAW; hidden files only with --hidden)", err=True)


def _size(n: int) -> str:
    """Bytes for people: 0 B, 512 B, 3.4 MB, 1.2 GB (powers of 1000)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _add_folder(ix, folder: str, quiet: bool, **kw) -> IndexReport:
    """``ix.add(folder)`` with a progress bar; on Ctrl-C, say how to resume and exit 130."""
    update, bar = _progress(quiet, os.path.basename(os.path.abspath(folder)) or folder)
    try:
        return ix.add(folder, progress=update, **kw)
    except IndexInterrupted as e:
        if bar:
            bar.close()
            bar = None
        click.echo(f"Interrupted: {e.report.processed} files committed; run the same command again to resume.",
                   err=True)
        sys.exit(130)
    finally:
        if bar:
            bar.close()


def _index_folder_for_duplicates(folder: str, index_dir, backend: dict) -> str:
    """Index ``folder`` (incrementally) for `lookalike duplicates FOLDER`; returns the index
    folder: ``--index`` when given, else one kept for ``folder`` under the cache folder."""
    from .backends import open_index

    if backend.get("milvus_uri"):
        raise click.UsageError("give FOLDER or --milvus, not both: index the folder into Milvus with `lookalike index`")
    path = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(path):
        raise PathNotFound(f"no such folder: {folder}")
    if index_dir is None:
        index_dir = default_index_dir(path)
    new = not (Path(index_dir) / "manifest.json").exists()
    click.echo(f"index: {index_dir} ({'new' if new else 'updated'}; `--index DIR` to choose)", err=True)
    with open_index(index_dir, None, create=True) as ix:
        if new:
            click.echo(f"note: new index with the default extractor: {default_description()}", err=True)
        click.echo(_summary(_add_folder(ix, path, False)), err=True)
    return index_dir


def _hit_line(h) -> str:
    extra = f"  ({h.distance} bits)" if h.distance is not None else ""
    if h.copy_score is not None:
        extra += f"  copy score {h.copy_score:.3f}"
    if h.inliers is not None:
        extra += f"  [{h.inliers} inliers]" if h.inliers else "  [no geometric match]"
    return f"{h.rank:4d}  {h.score:.4f}  {h.path}{extra}"


def _hits_json(hits) -> list[dict]:
    out = []
    for h in hits:
        d = {"rank": h.rank, "score": round(h.score, 6), "path": h.path, "id": h.id}
        if h.distance is not None:
            d["distance"] = h.distance
        if h.copy_score is not None:
            d["copy_score"] = h.copy_score
        if h.inliers is not None:
            d["inliers"] = h.inliers
            d["region"] = [list(p) for p in h.region] if h.region else None
        out.append(d)
    return out


@main.command()
@click.argument("query", type=click.Path())
@click.option("--index", "index_dir", default=None, type=click.Path(), help="Index folder.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of hits.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query (JSON lines).")
@click.option("--threads", type=int, default=None, help="Inference threads (default: CPU count).")
@click.option("--max-pixels", type=int, default=decode.DEFAULT_MAX_PIXELS, show_default=True)
@click.option("--sheet", type=click.Path(), default=None, help="Also write a contact sheet PNG here.")
@click.option("--verify", is_flag=True,
              help="Re-rank the best candidates by matching keypoints (copy detection); shows inlier counts.")
@click.option("--candidates", type=int, default=None, help="Candidates re-ranked by --verify (default: 50).")
@click.option("--augment/--no-augment", default=None,
              help="Also search the query's quarter turns, mirror images and regions (default: on with --verify).")
@click.option("--explain", type=click.Path(), default=None,
              help="With --verify: draw the query beside its best match, the matched keypoints and the outline (PNG).")
@click.option("--min-score", type=float, default=None,
              help="Only hits scoring at least this (cosine, or 1 - Hamming distance / bits).")
@backend_options
def search(query, index_dir, k, as_json, threads, max_pixels, sheet, verify, candidates, augment, explain, min_score,
           **backend):
    """Find the indexed images most like QUERY (an image file, an indexed path, or a folder of queries)."""
    if explain and not verify:
        raise click.UsageError("--explain needs --verify")
    if explain and os.path.isdir(os.path.expanduser(query)):
        raise click.UsageError("--explain draws one query and its best match: give one image, not a folder")
    options = {"verify": (candidates or True) if verify else False, "augment": augment}
    with _errors():
        the_query = _query_argument(query, max_pixels)
    with _errors(), _open_index(index_dir, backend, threads=threads, max_pixels=max_pixels) as ix:
        empty = click.ClickException(
            f"the index {ix.path} holds no images yet: index a folder into it (`lookalike index FOLDER "
            "--index DIR`); a first indexing run still going shows its images as each batch is committed")
        if os.path.isdir(query):
            paths = [e.path for e in walk(os.path.expanduser(query))]
            if not paths:
                raise click.ClickException(f"no images in the folder {query}")
            if not len(ix):
                raise empty
            results = _search_folder(ix, paths, k, options, as_json, min_score)
        else:
            results = ix.search_many([the_query], k=k, **options)
            if results[0].error and not as_json:
                raise click.ClickException(f"{results[0].query}: {results[0].error}: {results[0].detail}")
            if query == "-":
                results[0] = replace(results[0], query="-")
        if not len(ix) and not any(r.error for r in results):
            raise empty
        if min_score is not None and not os.path.isdir(query):
            results = [replace(r, hits=[h for h in r.hits if h.score >= min_score]) for r in results]
            if not as_json and len(results) == 1 and not results[0].error and not results[0].hits:
                click.echo(f"no hits scoring {min_score:g} or more", err=True)
        if not os.path.isdir(query):  # a folder's results were printed as they came
            for res in results:
                _print_result(res, as_json)
        failed = sum(bool(r.error) for r in results)
        if sheet:
            from .sheet import contact_sheet

            rows = [(r.query, [(h.path, h.score, False) for h in r.hits]) for r in results if not r.error]
            path = contact_sheet(rows, sheet)
            click.echo(f"contact sheet: {path}", err=True)
        if explain and not os.path.isdir(query) and results[0].hits:
            from .explain import explain_match

            best = results[0].hits[0]
            if best.match is not None:  # kept by the search: no second verification
                pixels, match = ix.query_pixels(query), best.match
            else:
                pixels, match = ix.verify_pair(query, best.path)
            path = explain_match(pixels, best.path, match, explain)
            click.echo(f"explanation ({match.inliers} inliers): {path}", err=True)
        if failed == len(results) and results:
            sys.exit(1)


def _print_result(res, as_json: bool) -> None:
    if as_json:
        obj = {"query": res.query, "hits": _hits_json(res.hits)}  # the HTTP API's name
        if res.error:
            obj["error"], obj["detail"] = res.error, res.detail
        click.echo(json.dumps(obj))
    elif res.error:
        click.echo(f"{res.query}: skipped ({res.error}: {res.detail})", err=True)
    else:
        click.echo(res.query)
        for h in res.hits:
            click.echo(_hit_line(h))


def _search_folder(ix, paths: list[str], k, options: dict, as_json: bool, min_score) -> list:
    """Search a folder's images in chunks, printing each chunk's results as it is done,
    with a progress bar (its rate: queries a second) when stderr is a terminal."""
    update, bar = _progress(False, "search")
    step = 8 if options.get("verify") or options.get("augment") or ix.extractor.copies_first else 64
    out: list = []
    try:
        for start in range(0, len(paths), step):
            chunk = ix.search_many(paths[start : start + step], k=k, **options)
            if min_score is not None:
                chunk = [replace(r, hits=[h for h in r.hits if h.score >= min_score]) for r in chunk]
            for res in chunk:
                _print_result(res, as_json)
            out.extend(chunk)
            if update:
                update(len(out), len(paths))
    finally:
        if bar:
            bar.close()
    return out


def _query_argument(query: str, max_pixels: int):
    """What `lookalike search QUERY` searches with: the path, or for ``-`` the image read
    from standard input; one clear line for a URL or a path that does not exist."""
    if query == "-":
        if sys.stdin.isatty():
            raise click.UsageError("QUERY '-' reads an image from standard input, which is a terminal: "
                                   "pipe an image in (lookalike search - < photo.jpg)")
        data = sys.stdin.buffer.read()
        if not data:
            raise click.UsageError("QUERY '-': standard input is empty; pipe an image in (lookalike search - < photo.jpg)")
        try:
            return decode.decode_bytes(data, max_pixels=max_pixels, raw=None).pixels  # stdin: no name
        except decode.DecodeError as e:
            raise click.ClickException(f"-: the image on standard input: {e}") from None
    if "://" in query.split("/", 3)[0] + "//" and query.split("://", 1)[0].isalpha():
        raise click.UsageError(f"{query}: URLs are not supported; download the image and search with the "
                               "file, or pipe it in (curl -s URL | lookalike search - --index DIR)")
    if not os.path.exists(os.path.expanduser(query)):
        raise PathNotFound(f"no such file or folder: {query}")
    return query


@main.command()
@click.argument("index_arg", metavar="[INDEX_DIR]", type=click.Path(), required=False)
@click.option("--index", "index_dir", default=None, type=click.Path(), help="Index folder (or give it as INDEX_DIR).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "show_all", is_flag=True, help="List every skipped file (default: the first 20).")
@backend_options
def info(index_arg, index_dir, as_json, show_all, **backend):
    """Show an index's manifest, counts and skipped files with reasons."""
    index_dir = _one_index(index_arg, index_dir)
    with _errors(), _open_index(index_dir, backend) as ix:
        data = ix.info()
        skipped = ix.skipped()
        if as_json:
            d = data.to_dict()
            d["skipped_files"] = [{"path": s.path, "reason": s.reason, "detail": s.detail} for s in skipped]
            click.echo(json.dumps(d, indent=2))
            return
        m = data.manifest
        click.echo(f"index:      {data.path}")
        click.echo(f"extractor:  {json.dumps(m['extractor'], sort_keys=True)}")
        click.echo(f"vectors:    {m['dim']}-d {m['dtype']}, metric {m['metric']}, {data.vector_rows} rows")
        click.echo(f"search:     {ix.ann_kind()} (setting: {m.get('ann', 'auto')})")
        local = m.get("local")
        click.echo("keypoints:  " + (f"{local.get('detector')}, up to {local.get('max_keypoints')} per image: "
                                     "--verify and keypoint checks of duplicates work" if local else
                                     "none stored: no --verify (an index made with --keypoints sift has them)"))
        if "milvus" in m:
            mv = m["milvus"]
            click.echo(f"milvus:     {mv['uri']} collection {mv['collection']}: {mv['entities']} entities, "
                       f"vectors as {mv['encoding']}")
        click.echo(f"schema:     {m['schema_version']} (lookalike {m['lookalike_version']})")
        click.echo(f"roots:      {', '.join(data.roots) or '-'}")
        click.echo(f"files:      {data.files} indexed, {data.skipped} skipped")
        click.echo(f"disk:       {data.bytes_on_disk / 1e6:.1f} MB")
        if data.copy_threshold is not None:
            click.echo(f"copies:     hits with a copy score of {data.copy_threshold:.3f} or more are copies")
        if skipped:
            click.echo("skipped:    " + ", ".join(f"{k} {v}" for k, v in data.skip_reasons.items()))
            shown = skipped if show_all else skipped[:20]
            for s in shown:
                click.echo(f"  {s.reason:13s} {s.path}  ({s.detail})")
            if len(shown) < len(skipped):
                click.echo(f"  ... {len(skipped) - len(shown)} more (--all to list them)")


@main.command()
@click.option("--index", "index_dir", default=None, type=click.Path(), help="Index folder.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="Neighbours per image.")
@click.option("--exact", is_flag=True, help="Exact search instead of the index's ANN structure.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one object per image.")
@backend_options
def neighbours(index_dir, k, exact, as_json, **backend):
    """Each indexed image's K nearest other images (batched; never an n x n matrix)."""
    with _errors(), _open_index(index_dir, backend) as ix:
        for path, hits in ix.neighbours(k, exact=exact):
            if as_json:
                click.echo(json.dumps({"path": path, "neighbours": _hits_json(hits)}))
            else:
                click.echo(path)
                for h in hits:
                    click.echo(_hit_line(h))


@main.command()
@click.argument("folder", required=False, type=click.Path())
@click.option("--index", "index_dir", default=None, type=click.Path(),
              help="Index folder (default with FOLDER: one kept for that folder under the cache folder).")
@click.option("--against", default=None, type=click.Path(),
              help="Another index (same extractor) or an image folder: report only matches between the two sets.")
@click.option("--level", type=click.Choice(LEVELS), default=DEFAULT_LEVEL, show_default=True,
              help="exact: the same bytes; near: re-encoded, resized or mildly recoloured, never cropped, "
                   "mirrored or rotated; edited: also crops, mirrors, rotations, overlays, borders.")
@click.option("--keep", "keep", default=DEFAULT_KEEP, show_default=True, metavar="RULE",
              help="Which member of a group is kept: largest, oldest, newest, shortest-path, or in:FOLDER "
                   "(a file inside FOLDER, e.g. your reference copies).")
@click.option("--threshold", "-t", type=float, default=None,
              help="Minimum pair score (default: the copy threshold with a copy descriptor, else per extractor).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours considered per image.")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON, with a mapping file -> its duplicates.")
@click.option("--report", type=click.Path(), default=None, help="Write a report: .json, .csv or .html (thumbnails).")
@click.option("--sheet", type=click.Path(), default=None, help="Write a contact sheet PNG (one row per group).")
@click.option("--move-to", type=click.Path(), default=None, help="Move non-keepers under this folder.")
@click.option("--symlink", is_flag=True, help="Replace non-keepers by symlinks to their keeper (originals kept in a trash folder).")
@click.option("--delete", is_flag=True, help="Delete non-keepers for good (cannot be undone).")
@click.option("--trash", type=click.Path(), default=None, help="Where --symlink keeps the originals (default: INDEX/trash).")
@click.option("--undo-log", type=click.Path(), default=None, help="Undo log path, a new file (default: INDEX/undo/undo-<time>-<pid>-<random>.jsonl).")
@click.option("--yes", is_flag=True, help="Really act (without it, actions are a dry run).")
@backend_options
def duplicates(folder, index_dir, against, level, keep, threshold, k, as_json, report, sheet, move_to, symlink,
               delete, trash, undo_log, yes, **backend):
    """Groups of duplicate images in FOLDER (indexed first, incrementally) or in an index,
    each with a keeper; optional safe actions on the others."""
    from . import actions as act, duplicates as dup

    ops = [o for o, on in (("move", move_to), ("symlink", symlink), ("delete", delete)) if on]
    if len(ops) > 1:
        raise click.UsageError("choose one of --move-to, --symlink, --delete")
    if ops and against:
        raise click.UsageError("--against only reports matches; actions (--move-to, --symlink, --delete) "
                               "work on one index's own duplicates")
    with _errors():
        dup.check_keep_rule(keep)
        if folder is not None:
            index_dir = _index_folder_for_duplicates(folder, index_dir, backend)
    with _errors(), _open_index(index_dir, backend) as ix:
        spec = ix.store.manifest.extractor
        thr = None if level == "exact" else threshold if threshold is not None else dup.level_threshold(ix, level)
        groups = ix.duplicates(threshold=thr, k=k, against=against, level=level, keep=keep)
        meta = {"index": ix.path, "level": level, "keep": keep, "threshold": thr, "k": k,
                "extractor": spec.get("name")}
        if against:
            meta["against"] = os.path.abspath(against)
        n_dup = sum(len(g.members) - 1 for g in groups)
        freed = sum(m.size or 0 for g in groups for m in g.others)
        if as_json:
            click.echo(dup.report_json(groups, meta))
        else:
            for n, g in enumerate(groups, 1):
                click.echo(f"group {n}: {len(g.members)} files ({g.level})")
                for m in g.members:
                    role = "keep" if m is g.keeper else f"{m.score:.4f}"
                    res = f"{m.width}x{m.height}" if m.width else "?"
                    click.echo(f"  {role:>6s}  {res:>11s}  {m.size or 0:>10d}  {m.path}")
            at = "" if thr is None or thr <= -1 else f", threshold {thr:g}"  # -1: no bar, the pixel checks decide
            click.echo(f"{len(groups)} groups, {n_dup} duplicates, {_size(freed)} in files that are not keepers "
                       f"(level {level}{at}, keeper rule {keep})", err=True)
        if report:
            click.echo(f"report: {dup.write_report(groups, report, meta)}", err=True)
        if sheet:
            click.echo(f"contact sheet: {dup.duplicates_sheet(groups, sheet)}", err=True)
        if not ops:
            return
        op = ops[0]
        dest = move_to if op == "move" else (trash or os.path.join(ix.path, "trash")) if op == "symlink" else None
        actions = act.plan_actions(ix, groups, op, dest)
        todo = [a for a in actions if not a.skip]
        for a in actions:
            if a.skip:
                click.echo(f"skip {a.path}: {a.skip}", err=True)
        if not yes:
            for a in todo:
                where = f" -> {a.dest}" if op == "move" else f" (original to {a.dest}) -> symlink to {a.keeper}" \
                    if op == "symlink" else ""
                click.echo(f"would {op} {a.path}{where}")
            note = " Deletion cannot be undone; --move-to DIR is the reversible way." if op == "delete" else ""
            would = sum(a.ident[2] for a in todo if a.ident) if op != "symlink" else 0
            space = f", freeing {_size(would)}" if op == "delete" else f" ({_size(would)})" if op == "move" else ""
            click.echo(f"dry run: {len(todo)} files would be acted on{space}, nothing changed. Add --yes to do it.{note}",
                       err=True)
            return
        try:
            log_path, entries = act.apply_actions(ix, actions, undo_log)
        except act.ActionsInterrupted as e:
            raise click.ClickException(f"interrupted after {e.done} actions; every change is in the undo log "
                                       f"{e.log_path}") from None
        failed = [entry for entry in entries if entry.get("error")]
        for entry in failed:
            click.echo(f"not done {entry['path']}: {entry['error']}", err=True)
        click.echo(f"{op}: {len(entries) - len(failed)} done, {len(failed)} not done, "
                   f"{len(actions) - len(todo)} skipped; undo log: {log_path or '-'}"
                   + (" (deletions cannot be undone)" if op == "delete" else ""), err=True)
        if len(entries) > len(failed):
            click.echo("The index no longer lists the files acted on; `lookalike undo LOG` puts them back "
                       "and indexes them again.", err=True)
        if failed:
            sys.exit(1)


@main.command()
@click.argument("log", type=click.Path(exists=True, dir_okay=False))
def undo(log):
    """Reverse the actions recorded in an undo LOG written by `lookalike duplicates --yes`
    (repeatable: files already back are left alone)."""
    from .actions import read_log, undo as undo_log

    with _errors():
        outcomes = undo_log(log)
    for o in outcomes:
        click.echo(o.message, err=not o.ok)
    back = sorted({o.path for o in outcomes if o.ok and o.path})
    if back:
        _index_again(read_log(log)[0]["index"], back)
    if any(not o.ok for o in outcomes):
        sys.exit(1)


def _index_again(index_dir: str, paths: list[str]) -> None:
    """After an undo: index the files that are back (those the index forgot when acting)."""
    from .duplicates import index_again

    try:
        with Index.open(index_dir) as ix:
            missing = index_again(ix, paths)
    except LookalikeError as e:
        click.echo(f"the files are back, but could not be indexed again ({e}); "
                   f"run `lookalike index` on their folder", err=True)
        return
    if missing:
        click.echo(f"indexed again: {len(missing)} files", err=True)


@main.command()
@click.argument("index_arg", metavar="[INDEX_DIR]", type=click.Path(), required=False)
@click.option("--index", "index_dir", default=None, type=click.Path(), help="Index folder (or give it as INDEX_DIR).")
@click.option("--repair", is_flag=True,
              help="Fix what the check finds where possible (files it forgets are indexed again by the next "
                   "`lookalike index`); prints what it did.")
@backend_options
def check(index_arg, index_dir, repair, **backend):
    """Check an index's integrity (manifest, catalog, vector rows, keypoints, search structure);
    exit 1 if anything is wrong."""
    index_dir = _one_index(index_arg, index_dir)
    local_only = {} if backend.get("milvus_uri") else {"validate": False}  # open a damaged one to check it
    with _errors(), _open_index(index_dir, backend, **local_only) as ix:
        if repair:
            done = ix.repair()
            for line in done:
                click.echo(f"repaired: {line}")
            if not done:
                click.echo("nothing to repair")
        problems = ix.check()
        where = ix.path
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{index_dir or where}: ok")


@main.command(name="eval")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--extractor", "-e", default=None,
              help="Extractor name or JSON spec for a new index (default: cnn; an existing --index keeps its own).")
@click.option("--index", "index_dir", default=None, type=click.Path(),
              help="Build the index here and keep it; reused (incrementally) when it exists. Default: a temporary one.")
@click.option("--k", "ks", type=int, multiple=True,
              help="Cut-off for Recall@k / precision@k; repeatable (default: 1 and 10; 1, 5 and 10 for class folders).")
@click.option("--limit", type=int, default=None, help="At most N queries of each kind, spread evenly (a quick run).")
@click.option("--verify/--no-verify", default=None, help="Geometric re-ranking of the top hits (default: the index's).")
@click.option("--augment/--no-augment", default=None, help="Query-side test-time augmentation (default: the index's).")
@click.option("--jobs", "-j", type=int, default=None, help="Decoding processes while indexing (default: CPU count).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@backend_options
def eval_command(folder, extractor, index_dir, ks, limit, verify, augment, jobs, as_json, quiet, **backend) -> None:
    """Measure retrieval on FOLDER: a benchmark folder (originals/, distractors/, queries/,
    ground_truth.csv, labels.csv) or one subfolder per class (root/cat/*.jpg, root/dog/*.jpg)."""
    from .evaluate import evaluate

    options = {name: value for name, value in (("verify", verify), ("augment", augment)) if value is not None}
    current: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if current.get("stage") != stage:
            if current.get("bar"):
                current["bar"].close()
            current["stage"] = stage
            current["update"], current["bar"] = _progress(quiet, stage)
        if current["update"]:
            current["update"](done, total)

    opened = None
    try:
        with _errors():
            if backend.get("milvus_uri"):  # evaluate the Milvus index (filled incrementally, kept)
                opened = _open_index(index_dir, backend, extractor, create=True)
            report = evaluate(folder, extractor, index=opened or index_dir, search_options=options,
                              ks=ks or None, limit=limit, jobs=jobs, progress=progress)
    finally:
        if opened is not None:
            opened.close()
        if current.get("bar"):
            current["bar"].close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.to_text())


@main.command()
@click.option("--json", "as_json", is_flag=True)
def extractors(as_json):
    """List the registered extractors."""
    rows = []
    for name in sorted(registry.available()):
        cls = registry.extractor_class(name)
        usage = getattr(cls, "usage", None)  # set by extractors that need settings (a path, parts)
        ext, missing = None, None
        if usage is None:
            try:
                ext = registry.create(name)
            except ImportError as e:  # an extra that is not installed: say which
                missing = str(e).split(";")[0]
            except (TypeError, ValueError, OSError, LookalikeError):  # needs settings or is unavailable here
                pass
        description = f"{cls.description} (use {usage})" if usage else cls.description
        if missing:
            description += f" [not installed here: {missing}]"
        rows.append({"name": name, "dim": ext.dim if ext else None,
                     "dtype": ext.dtype if ext else getattr(cls, "dtype", None),
                     "metric": ext.metric if ext else getattr(cls, "metric", None),
                     "speed": cls.speed, "description": description, "spec": ext.spec() if ext else None,
                     "usable": getattr(cls, "usable", True) and not missing})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        if not getattr(registry.extractor_class(r["name"]), "usable", True):
            continue
        dim = f"{r['dim']:5d}-d" if r["dim"] is not None else f"{'-':>5s}  "
        click.echo(f"{r['name']:12s} {dim} {r['metric'] or '-':8s} {r['speed']:6s} {r['description']}")
    never = [r for r in rows if not getattr(registry.extractor_class(r["name"]), "usable", True)]
    for r in never:
        click.echo(f"not usable: {r['name']} ({r['description']})")
    click.echo(f"default (-e default): {default_description()}")


def default_description() -> str:
    """What the default extractor is here, and how to get the better one where it is not installed."""
    from .extractors import registry

    pinned = os.environ.get(registry.DEFAULT_ENV, "").strip()
    if pinned and pinned != "default":
        return f"{pinned} (from ${registry.DEFAULT_ENV})"
    if registry.sscd_installed():
        return ("sscd copies first (calibrated copy score), then similar pictures by a mean weighted "
                "1:3 towards cnn: " + json.dumps(registry.COPY_DEFAULT, separators=(",", ":")))
    return f"cnn, with SIFT keypoints for --verify; {registry.COPY_DEFAULT_HINT}"


@main.command()
@click.option("--index", "index_dir", default=None, type=click.Path(), help="Index folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback only by default).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--token", envvar="LOOKALIKE_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on every request (default: env LOOKALIKE_TOKEN).")
@click.option("--max-upload", default="20MB", show_default=True, help="Largest accepted upload (bytes, or with a K/M/G suffix).")
@click.option("--max-pixels", type=int, default=decode.DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse uploaded images with more pixels (decompression-bomb guard).")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow cross-origin requests from this origin (repeatable; none by default).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
@backend_options
def serve(index_dir, host, port, token, max_upload, max_pixels, cors_origins, access_log, **backend):
    """Serve the HTTP API and web page for an index (needs the 'server' extra)."""
    from .server import missing_dependencies, missing_message

    missing = missing_dependencies()
    if missing:
        raise click.ClickException(missing_message(missing))
    from .server.app import check_token, parse_size, run

    if token is None:  # click reads an empty LOOKALIKE_TOKEN as unset: that must not turn the token off
        token = os.environ.get("LOOKALIKE_TOKEN")
    location, options = _location(index_dir, backend)
    with _errors():
        token = check_token(token)
        run(location, host=host, port=port, token=token, max_upload=parse_size(max_upload),
            max_pixels=max_pixels, cors_origins=cors_origins, access_log=access_log, echo=click.echo,
            **({"backend": options} if options else {}))


@main.command()
@click.option("--out", type=click.Path(), default=None, help="Work folder (default: a new temporary folder).")
@click.option("--extractor", "-e", default="cnn", show_default=True)
def demo(out, extractor):
    """Index the bundled sample photos, search edited copies, write a contact sheet."""
    from .demo import run_demo

    workdir = out or tempfile.mkdtemp(prefix="lookalike-demo-")
    with _errors():
        result = run_demo(workdir, extractor=extractor)
    click.echo(f"Indexed {len(os.listdir(result.gallery))} bundled photos into {result.index_path}")
    click.echo(f"Searching {len(result.queries)} edited copies (top 3 each):\n")
    for q in result.queries:
        mark = "ok  " if q.found_first else "MISS"
        hits = "  ".join(f"{os.path.basename(h.path)} {h.score:.3f}" for h in q.hits)
        click.echo(f"{mark} {os.path.basename(q.query):24s} -> {hits}")
    n_ok = sum(q.found_first for q in result.queries)
    click.echo(f"\nOriginal ranked first for {n_ok} of {len(result.queries)} queries.")
    click.echo(f"Contact sheet: {result.sheet}")
    click.echo(f"Try: lookalike search {result.queries[0].query} --index {result.index_path} -k 5")


if __name__ == "__main__":
    run()
