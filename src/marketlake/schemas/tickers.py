"""Ticker normalisation and validation.

Tickers become part of object keys, so they are validated strictly before any key is built.

Rules (documented in ``docs/architecture.md``):

* surrounding spaces are stripped and letters are upper-cased: ``" aapl "`` -> ``"AAPL"``
  (tabs, newlines and other control characters are rejected, even at the ends);
* class shares use a dot: ``BRK-B``, ``BRK.B`` and ``brk_b`` all become ``BRK.B`` (a ``-`` or ``_``
  followed by exactly one final letter is a share class, as Yahoo and CQS spell it);
* allowed characters afterwards: ``A-Z 0-9 . - ^ = _``, at most 24 characters, starting with a
  letter, digit or ``^`` (index symbols such as ``^GSPC``);
* anything that could escape the key prefix or break a key is rejected with
  :class:`~marketlake.errors.InvalidTickerError`: empty strings, ``/`` or ``\\``, ``..``, control
  or non-ASCII characters, spaces inside.
"""

from __future__ import annotations

import re

from marketlake.errors import InvalidTickerError

MAX_TICKER_LENGTH = 24
_ALLOWED = re.compile(r"^[A-Z0-9^][A-Z0-9.\-^=_]*$")
_CLASS_SHARE = re.compile(r"^([A-Z0-9]{1,10})[-_]([A-Z])$")


def normalize_ticker(raw: object) -> str:
    """Return the canonical form of ``raw`` or raise :class:`InvalidTickerError`.

    Examples
    --------
    >>> normalize_ticker(" aapl ")
    'AAPL'
    >>> normalize_ticker("BRK-B")
    'BRK.B'
    """
    if not isinstance(raw, str):
        raise InvalidTickerError(
            f"ticker must be a string, got {type(raw).__name__} {raw!r}", ticker=repr(raw)
        )
    text = raw.strip(" ")  # only spaces: a newline or tab is a control character, rejected below
    if not text:
        raise InvalidTickerError("ticker is empty; pass a symbol such as 'AAPL'", ticker=raw)
    bad = _first_bad_char(text)
    if bad is not None:
        raise InvalidTickerError(
            f"ticker {raw!r} contains {bad}, which is not allowed in a ticker "
            "(allowed: letters, digits and . - ^ = _)",
            ticker=raw,
        )
    ticker = text.upper()
    match = _CLASS_SHARE.match(ticker)
    if match:
        ticker = f"{match.group(1)}.{match.group(2)}"
    if len(ticker) > MAX_TICKER_LENGTH:
        raise InvalidTickerError(
            f"ticker {raw!r} is {len(ticker)} characters long; the limit is {MAX_TICKER_LENGTH}",
            ticker=raw,
        )
    if ".." in ticker:
        raise InvalidTickerError(f"ticker {raw!r} contains '..', which is not allowed", ticker=raw)
    if not _ALLOWED.match(ticker):
        raise InvalidTickerError(
            f"ticker {raw!r} must start with a letter, digit or '^' and contain only "
            "letters, digits and . - ^ = _",
            ticker=raw,
        )
    return ticker


def _first_bad_char(text: str) -> str | None:
    for ch in text:
        if ch in "/\\":
            return f"a path separator {ch!r}"
        if ord(ch) < 32 or ord(ch) == 127:
            return f"a control character (code {ord(ch)})"
        if ord(ch) > 126:
            return f"a non-ASCII character {ch!r}"
        if ch.isspace():
            return "a space"
    return None


def normalize_tickers(raw: list[str] | tuple[str, ...]) -> list[str]:
    """Normalise many tickers, dropping duplicates while keeping the first-seen order."""
    seen: dict[str, None] = {}
    for item in raw:
        seen.setdefault(normalize_ticker(item), None)
    return list(seen)
