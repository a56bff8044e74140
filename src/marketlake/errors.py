"""One typed error hierarchy for marketlake.

Every error derives from :class:`MarketlakeError`. Whether an operation may be retried is decided
by class, never by matching message text: errors that mix in :class:`Retryable` are transient
(network blips, throttling, a lost compare-and-swap race); everything else is final.

Errors carry structured context (``ticker``, ``dataset``, ``key``, ``column``) and a message that
says what went wrong *and how to fix it*, so the CLI can print ``str(error)`` and nothing else.
"""

from __future__ import annotations

from typing import Any


class MarketlakeError(Exception):
    """Base class of every error raised by marketlake.

    Parameters
    ----------
    message:
        Human-readable text: what happened, where, and what to do about it.
    **context:
        Structured fields (``ticker=``, ``dataset=``, ``key=``, ``column=`` …) kept on
        ``error.context`` for programs and logs.
    """

    retryable: bool = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class Retryable:
    """Mixin: the operation may succeed if tried again (after a backoff)."""

    retryable = True


# --- configuration and input -------------------------------------------------------------------


class ConfigError(MarketlakeError):
    """Settings, URLs or credentials are missing or malformed."""


class InvalidTickerError(MarketlakeError, ValueError):
    """A ticker is empty, too long, or contains characters that could escape its key prefix."""


class UnknownDatasetError(MarketlakeError, KeyError):
    """A dataset name is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class SchemaError(MarketlakeError, ValueError):
    """Rows do not fit the dataset's canonical schema (types, missing or unknown columns)."""


class DataValidationError(MarketlakeError, ValueError):
    """Rows have the right types but bad values (duplicate keys, NaN/inf, negative volume…)."""


class LayoutError(MarketlakeError):
    """A key layout template is malformed (unknown or missing placeholders)."""


# --- storage -------------------------------------------------------------------------------------


class StorageError(MarketlakeError):
    """An object-store operation failed for a reason that retrying will not fix."""


class TransientStorageError(Retryable, StorageError):
    """An object-store operation failed for a reason that may pass (timeout, 5xx, throttling)."""


class ObjectNotFoundError(StorageError):
    """The requested object does not exist."""


class ConflictError(Retryable, StorageError):
    """A conditional write lost a race: the object changed (or appeared) since it was read.

    The writer that sees this re-reads, re-merges and tries again.
    """


class StoragePermissionError(StorageError):
    """Credentials are missing, wrong, or lack permission for the operation."""


class CorruptObjectError(StorageError):
    """An object exists but cannot be decoded (truncated, not Parquet, bad JSON)."""


class LakeNotFoundError(StorageError):
    """No lake at the URL (no ``_marketlake.json`` marker) and the caller asked not to create
    one."""


class FormatVersionError(StorageError):
    """The lake was written by a newer (or unknown) marketlake storage format."""


# --- catalog, sources, ingest ------------------------------------------------------------------


class CatalogError(MarketlakeError):
    """The catalog database is missing, locked, or from an unknown schema version."""


class SourceError(MarketlakeError):
    """A data source failed permanently for a request (bad symbol, unauthorised, bad payload)."""


class TransientSourceError(Retryable, SourceError):
    """A data source failed in a way that may pass (rate limited, timeout, 5xx)."""


class NoDataError(SourceError):
    """The source answered, but has no rows for the request. Never written as an empty partition."""


class UnknownSourceError(SourceError, KeyError):
    """A source name is not in the registry."""

    def __str__(self) -> str:
        return self.message


class RunNotFoundError(CatalogError, KeyError):
    """A run id given to ``--resume`` is not in the catalog."""

    def __str__(self) -> str:
        return self.message


def is_retryable(error: BaseException) -> bool:
    """Return True when ``error`` is marked retryable by its class."""
    return bool(getattr(error, "retryable", False))
