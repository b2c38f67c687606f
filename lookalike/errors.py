"""The errors lookalike raises on purpose, and their one base class.

Each error also keeps the built-in base its callers already catch (a
:class:`UsageError` is a ``ValueError``, a :class:`PathNotFound` a
``FileNotFoundError``). The errors of one stage live beside it (``DecodeError``
in :mod:`lookalike.decode`, ``IndexStoreError`` in :mod:`lookalike.store`, ...);
the ones several stages raise live here.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """The base of every error lookalike raises on purpose; the CLI turns them into one line."""


class UsageError(LookalikeError, ValueError):
    """A bad argument or setting; the message says which and what is accepted."""


class PathNotFound(LookalikeError, FileNotFoundError):
    """A file or folder given to lookalike does not exist."""


class NotTrained(LookalikeError, RuntimeError):
    """The extractor needs state (a vocabulary, a PCA) learned when the first images are indexed."""
