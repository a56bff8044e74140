"""The catalog: assets, partitions, collection progress and runs, on SQLite (portable SQL)."""

from marketlake.catalog.sqlite import (
    CATALOG_SCHEMA_VERSION,
    ITEM_STATUSES,
    MIGRATIONS,
    MONITOR_FREQUENCIES,
    RUN_STATUSES,
    AssetRow,
    Catalog,
    Migration,
    MonitoredAsset,
    MonthProgressRow,
    PartitionRow,
    ProgressRow,
    RunItemRow,
    RunRow,
    utc_now_iso,
)

__all__ = [
    "CATALOG_SCHEMA_VERSION",
    "ITEM_STATUSES",
    "MIGRATIONS",
    "MONITOR_FREQUENCIES",
    "RUN_STATUSES",
    "AssetRow",
    "Catalog",
    "Migration",
    "MonitoredAsset",
    "MonthProgressRow",
    "PartitionRow",
    "ProgressRow",
    "RunItemRow",
    "RunRow",
    "utc_now_iso",
]
