"""lookalike: find images that look alike.

>>> from lookalike import Index                       # doctest: +SKIP
>>> index = Index.create("pics.idx", extractor="cnn")  # doctest: +SKIP
>>> index.add("photos/")                               # doctest: +SKIP
>>> for hit in index.search("query.jpg", k=5):         # doctest: +SKIP
...     print(hit.rank, hit.score, hit.path)
"""

__version__ = "0.1.0"

from .decode import DEFAULT_MAX_PIXELS, DecodeError, SkipReason  # noqa: E402
from .extractors import Extractor, UnknownExtractor  # noqa: E402
from .duplicates import DuplicateGroup, Member  # noqa: E402
from .index import Index, IndexInfo, NoKeypoints, QueryError, QueryResult  # noqa: E402
from .indexer import IndexInterrupted, IndexReport  # noqa: E402
from .search import SearchResult  # noqa: E402
from .store import ExtractorMismatch, IndexStoreError, IndexLocked, NotAnIndex  # noqa: E402
from .backends import create_index, open_index  # noqa: E402

__all__ = [
    "__version__",
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "DuplicateGroup",
    "Extractor",
    "ExtractorMismatch",
    "Index",
    "IndexStoreError",
    "IndexInfo",
    "IndexInterrupted",
    "IndexLocked",
    "IndexReport",
    "Member",
    "NotAnIndex",
    "NoKeypoints",
    "QueryError",
    "QueryResult",
    "SearchResult",
    "SkipReason",
    "UnknownExtractor",
    "create_index",
    "open_index",
]
