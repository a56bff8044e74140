from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketlake.errors import InvalidTickerError
from marketlake.schemas.tickers import normalize_ticker, normalize_tickers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("aapl", "AAPL"),
        ("  msft ", "MSFT"),
        ("BRK-B", "BRK.B"),
        ("brk.b", "BRK.B"),
        ("BRK_B", "BRK.B"),
        ("^GSPC", "^GSPC"),
        ("ES=F", "ES=F"),
        ("BTC-USD", "BTC-USD"),
        ("7203.T", "7203.T"),
    ],
)
def test_normalises(raw: str, expected: str) -> None:
    assert normalize_ticker(raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("../AAPL", "path separator"),
        ("AAPL/../../etc", "path separator"),
        ("A\\B", "path separator"),
        ("..", "'..'"),
        ("A..B", "'..'"),
        ("AA\x00PL", "control character"),
        ("AA\nPL", "control character"),
        ("AÄPL", "non-ASCII"),
        ("AA PL", "space"),
        ("X" * 25, "limit is 24"),
        (".AAPL", "must start"),
        ("-AAPL", "must start"),
        ("AAPL*", "must start"),
    ],
)
def test_rejects_hostile(raw: str, fragment: str) -> None:
    with pytest.raises(InvalidTickerError) as info:
        normalize_ticker(raw)
    assert fragment in str(info.value)


def test_rejects_non_string() -> None:
    with pytest.raises(InvalidTickerError, match="must be a string"):
        normalize_ticker(None)


def test_dedupes_keeping_order() -> None:
    assert normalize_tickers(["msft", "AAPL", "MSFT", "brk-b", "BRK.B"]) == [
        "MSFT",
        "AAPL",
        "BRK.B",
    ]


@given(st.text(max_size=30))
def test_valid_output_never_escapes_a_prefix(raw: str) -> None:
    try:
        out = normalize_ticker(raw)
    except InvalidTickerError:
        return
    assert "/" not in out and "\\" not in out and ".." not in out
    assert out == out.strip() and out and out.isascii() and out.isprintable()
    assert normalize_ticker(out) == out  # idempotent
