"""Canonical schemas: the dataset registry and ticker rules."""

from marketlake.schemas.datasets import (
    DAILY_DATASETS,
    Dataset,
    get_dataset,
    list_datasets,
    register_dataset,
)
from marketlake.schemas.tickers import normalize_ticker, normalize_tickers

__all__ = [
    "DAILY_DATASETS",
    "Dataset",
    "get_dataset",
    "list_datasets",
    "normalize_ticker",
    "normalize_tickers",
    "register_dataset",
]
