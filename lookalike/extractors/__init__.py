"""Feature extractors and the registry that finds them by name."""

from .base import Extractor
from .registry import UnknownExtractor, available, create

__all__ = ["Extractor", "UnknownExtractor", "available", "create"]
