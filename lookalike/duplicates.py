"""Duplicates: the public names, gathered from the modules that do the work.

- :mod:`lookalike.levels`: the levels ``exact``, ``near`` (the default) and
  ``edited``, and the pixel checks that tell them apart;
- :mod:`lookalike.grouping`: how groups are made (candidate pairs, connected
  components, the anchor check, the keeper rule :func:`keeper_rank`), cross-set
  mode, :class:`DuplicateGroup` and :class:`Member`;
- :mod:`lookalike.reports`: groups written as JSON, CSV, HTML or a contact sheet;
- :mod:`lookalike.actions`: moving, symlinking or deleting non-keepers as a
  signed journal, and undoing it.

The command line refuses actions in cross-set mode (``--against`` only
reports): there the keeper may be a file of the other set, and acting on this
index's files because of files elsewhere is not "safe by default".
"""

from __future__ import annotations

import os
from typing import Sequence

from .actions import Action, apply_actions, plan_actions, undo
from .errors import LookalikeError, UsageError
from .grouping import (
    CENTRE_MAX,
    COSINE_FALLBACK,
    DEFAULT_K,
    DEFAULT_THRESHOLDS,
    DEFAULT_KEEP,
    HAMMING_FALLBACK,
    KEEP_RULES,
    Candidates,
    DuplicateGroup,
    Member,
    candidates,
    check_keep_rule,
    default_threshold,
    exact_groups,
    find_duplicates,
    group_pairs,
    keeper_rank,
    level_threshold,
)
from .levels import DEFAULT_LEVEL, LEVELS
from .reports import duplicate_mapping, duplicates_sheet, report_html, report_json, totals, write_report
from .thumbnails import data_uri as thumbnail_data_uri

__all__ = [
    "Action", "CENTRE_MAX", "COSINE_FALLBACK", "Candidates", "DEFAULT_K", "DEFAULT_KEEP", "DEFAULT_LEVEL",
    "DEFAULT_THRESHOLDS", "DuplicateGroup", "HAMMING_FALLBACK", "KEEP_RULES", "LEVELS", "Member",
    "apply_actions", "candidates", "check_keep_rule", "default_threshold", "duplicates_sheet", "exact_groups",
    "find_duplicates", "group_pairs", "keeper_rank", "level_threshold", "plan_actions", "report_html",
    "report_json", "thumbnail_data_uri", "undo", "write_report", "duplicate_mapping", "totals",
    "NotADuplicate", "move_selected", "index_again",
]


class NotADuplicate(LookalikeError, ValueError):
    """A file asked to be acted on is not (or no longer) a duplicate at that level."""


def move_selected(index, ids: Sequence[int], dest: str, *, level: str = DEFAULT_LEVEL,
                  threshold: float | None = None, k: int = DEFAULT_K, keep: str = DEFAULT_KEEP):
    """Move the files ``ids`` (catalog ids a person picked, e.g. on the review page) under
    ``dest``, with the safety of every action (:mod:`lookalike.actions`): the groups are
    found again now at ``level``, and only members of a group are moved, never every
    member of one. Each moved file's group keeps its keeper, or the first member not
    moved when the keeper is picked. Returns ``(undo log, entries, skipped actions)``
    like :func:`apply_actions`; raises :class:`NotADuplicate` for an id in no group
    and :class:`UsageError` when a group would lose every member."""
    picked = {int(i) for i in ids}
    if not picked:
        raise UsageError("no files picked")
    groups = find_duplicates(index, threshold, k, level=level, keep=keep)
    where = {m.id: g for g in groups for m in g.members}
    lost = sorted(picked - set(where))
    if lost:
        raise NotADuplicate(f"not a duplicate at level {level} (any more): file id {', '.join(map(str, lost))}; "
                            "find the duplicates again")
    plan = []
    for g in {id(where[i]): where[i] for i in picked}.values():
        rest = [m for m in g.members if m.id not in picked]
        if not rest:
            raise UsageError(f"every file of the group of {g.keeper.path} is picked: keep at least one")
        keeper = g.keeper if g.keeper.id not in picked else rest[0]
        moved = [m for m in g.members if m.id in picked]
        plan.append(DuplicateGroup(keeper, [keeper, *moved], g.level))
    actions = plan_actions(index, plan, "move", dest)
    log, entries = apply_actions(index, actions)
    return log, entries, [a for a in actions if a.skip]


def index_again(index, paths: Sequence[str]) -> list[str]:
    """Index ``paths`` (files an undo put back) that the index does not list; returns them.

    Through the roots they lie under (an incremental run of each: only what is missing
    is embedded), never file by file: a file added on its own would become a root of
    its own, and a later action or undo on it would be refused once it moved."""
    from .roots import root_of

    known = {r.path for r in index.store.catalog.records(status="ok")}
    missing = [p for p in paths if p not in known and os.path.isfile(p)]
    roots = index.store.catalog.root_records()
    for root in sorted({r.path for p in missing if (r := root_of(p, roots)) is not None}):
        index.add(root)
    known = {r.path for r in index.store.catalog.records(status="ok")}
    return [p for p in missing if p in known]
