"""Data sources: fetch (I/O) and pure parsing into canonical Arrow tables."""

from marketlake.sources.base import Source, SourceRequest

__all__ = ["Source", "SourceRequest"]
