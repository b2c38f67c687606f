"""Time duplicate actions and their undo on many files (the journal's cost).

    .venv/bin/python bench/actions.py --files 10000 [--dir /some/disk/folder]

Makes ``--files`` small files plus one keeper in a fresh folder, records them
in a phash index as if they had been indexed (one group: the keeper and all
the others), then times ``plan_actions``, ``apply_actions`` (move into a
destination on the same file system; one fsync of the journal per action) and
``undo``. Everything is made under ``--dir`` (default: a temporary folder),
so the figures are those of that file system.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from lookalike import Index
from lookalike.actions import apply_actions, plan_actions, undo
from lookalike.duplicates import DuplicateGroup, Member
from lookalike.roots import identify
from lookalike.store import FileRecord


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lookalike-actions-", dir=args.dir)
    try:
        root = os.path.join(work, "photos")
        os.makedirs(root)
        paths = [os.path.join(root, f"f{i:06d}.jpg") for i in range(args.files + 1)]
        records = []
        for i, p in enumerate(paths):
            with open(p, "wb") as f:
                f.write(i.to_bytes(4, "little") * 64)
            st = os.stat(p)
            records.append(FileRecord(None, p, st.st_size, st.st_mtime_ns, None, 8, 8, "ok"))
        ix = Index.create(os.path.join(work, "idx"), "phash")
        with ix.store.writing():
            ix.store.commit(vectors=np.zeros((len(records), 8), np.uint8), records=records, root=identify(root))
        members = [Member(p, None, 1.0, 8, 8, 256) for p in paths]
        group = DuplicateGroup(members[0], members)

        t0 = time.perf_counter()
        plan = plan_actions(ix, [group], "move", os.path.join(work, "moved"))
        t1 = time.perf_counter()
        log, entries = apply_actions(ix, plan)
        t2 = time.perf_counter()
        outcomes = undo(log)
        t3 = time.perf_counter()
        ix.close()
        assert all(e["state"] == "done" for e in entries) and len(entries) == args.files
        assert all(o.ok for o in outcomes) and all(os.path.exists(p) for p in paths)
        print(f"| files | plan s | move s | undo s | per move ms |\n| ---: | ---: | ---: | ---: | ---: |\n"
              f"| {args.files} | {t1 - t0:.1f} | {t2 - t1:.1f} | {t3 - t2:.1f} | {(t2 - t1) / args.files * 1e3:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
