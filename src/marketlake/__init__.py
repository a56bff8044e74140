"""marketlake: a self-hosted market-data lake.

Ticker-first Parquet on object storage (local disk, memory, S3/R2/MinIO), a SQLite catalog and a
fast read API.

>>> import marketlake
>>> lake = marketlake.open("./lake")              # doctest: +SKIP
>>> lake.read("AAPL", "prices", "2024-01-01", "2024-12-31")  # doctest: +SKIP
"""

from marketlake.errors import (
    ConflictError,
    DataValidationError,
    InvalidTickerError,
    LakeNotFoundError,
    MarketlakeError,
    SchemaError,
    StorageError,
    UnknownDatasetError,
)
from marketlake.query.lake import BatchReadResult, Lake
from marketlake.query.lake import open_lake as open

__version__ = "0.1.0"

__all__ = [
    "BatchReadResult",
    "ConflictError",
    "DataValidationError",
    "InvalidTickerError",
    "Lake",
    "LakeNotFoundError",
    "MarketlakeError",
    "SchemaError",
    "StorageError",
    "UnknownDatasetError",
    "__version__",
    "open",
]
