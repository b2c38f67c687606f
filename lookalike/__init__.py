"""lookalike: find images that look alike.

>>> from lookalike import Index                       # doctest: +SKIP
>>> index = Index.create("pics.idx", extractor="cnn")  # doctest: +SKIP
>>> index.add("photos/")                               # doctest: +SKIP
>>> for hit in index.search("query.jpg", k=5):         # doctest: +SKIP
...     print(hit.rank, hit.score, hit.path)
"""

from .actions import ActionsInterrupted, UndoLogError
from .backends import create_index, open_index
from .backends.milvus import MilvusError, MilvusUnavailable
from .decode import DEFAULT_MAX_PIXELS, DecodeError, SkipReason
from .duplicates import DuplicateGroup, Member
from .errors import LookalikeError, NotTrained, PathNotFound, UsageError
from .evaluate import LayoutError
from .extractors import Extractor, UnknownExtractor
from .index import Index, IndexInfo, NoKeypoints, QueryError, QueryResult
from .indexer import IndexInterrupted, IndexReport
from .roots import RootError
from .search import SearchResult
from .store import (
    ExtractorMismatch,
    IndexDamaged,
    IndexLocked,
    IndexReadOnly,
    IndexStoreError,
    NotAnIndex,
    SchemaTooNew,
)
from .verify import LocalSettingsError
from .version import __version__

__all__ = [
    "__version__",
    "ActionsInterrupted",
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "DuplicateGroup",
    "Extractor",
    "ExtractorMismatch",
    "Index",
    "IndexDamaged",
    "IndexInfo",
    "IndexInterrupted",
    "IndexLocked",
    "IndexReadOnly",
    "IndexReport",
    "IndexStoreError",
    "LayoutError",
    "LocalSettingsError",
    "LookalikeError",
    "Member",
    "MilvusError",
    "MilvusUnavailable",
    "NoKeypoints",
    "NotAnIndex",
    "NotTrained",
    "PathNotFound",
    "QueryError",
    "QueryResult",
    "RootError",
    "SchemaTooNew",
    "SearchResult",
    "SkipReason",
    "UndoLogError",
    "UnknownExtractor",
    "UsageError",
    "create_index",
    "open_index",
]
