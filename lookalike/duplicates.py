"""Near-duplicates: the public names, gathered from the three modules that do the work.

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

from .actions import Action, apply_actions, plan_actions, undo
from .grouping import (
    CENTRE_MAX,
    COSINE_FALLBACK,
    DEFAULT_K,
    DEFAULT_THRESHOLDS,
    HAMMING_FALLBACK,
    Candidates,
    DuplicateGroup,
    Member,
    candidates,
    default_threshold,
    find_duplicates,
    group_pairs,
    keeper_rank,
)
from .reports import duplicates_sheet, report_html, report_json, write_report
from .thumbnails import data_uri as thumbnail_data_uri

__all__ = [
    "Action", "CENTRE_MAX", "COSINE_FALLBACK", "Candidates", "DEFAULT_K", "DEFAULT_THRESHOLDS",
    "DuplicateGroup", "HAMMING_FALLBACK", "Member", "apply_actions", "candidates", "default_threshold",
    "duplicates_sheet", "find_duplicates", "group_pairs", "keeper_rank", "plan_actions", "report_html",
    "report_json", "thumbnail_data_uri", "undo", "write_report",
]
