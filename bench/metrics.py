"""Retrieval metrics for the benchmark scripts: now part of the package, in :mod:`lookalike.evaluate`.

Re-exported here so that ``from bench import metrics`` keeps working; the
definitions (Recall@k, AP, mAP, as in the benchmark's README) are documented there.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookalike.evaluate import (  # noqa: E402,F401
    OVERALL, average_precision, label_queries, mean_average_precision, percentile, precision_at, rank_of,
    recall_by_transform,
)
