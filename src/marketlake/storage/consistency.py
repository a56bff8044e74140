"""Check that a lake's ``_meta`` objects and data objects agree (the store alone is read).

Two kinds of findings:

*problems* — states the commit order (data -> ``_meta`` -> catalog) must never produce: a
``_meta`` entry pointing at a missing object, an object or ``_meta`` that does not decode
(a partial or corrupt object), an entry under the wrong key;

*stale* — what an interrupted write may legitimately leave until the next write for that
(dataset, ticker) repairs it: a ``_meta`` entry whose object has since changed (SHA-256, size,
rows or date range differ), or a data object no ``_meta`` lists yet.

After a run whose items all completed both must be empty. Used by the fault and kill tests; the
basis for a future ``marketlake validate``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from marketlake.errors import MarketlakeError
from marketlake.schemas.datasets import get_dataset
from marketlake.storage.meta import META_PREFIX, TickerMeta
from marketlake.storage.parquet import decode_table, sha256_hex

if TYPE_CHECKING:
    from marketlake.query.lake import Lake


@dataclass
class ConsistencyReport:
    """Findings of :func:`check_lake_consistency`.

    ``problems`` are never acceptable; ``stale`` maps ``(dataset, ticker)`` to findings an
    interrupted write may leave (repaired by the next write of that ticker).
    """

    problems: list[str] = field(default_factory=list)
    stale: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    metas_checked: int = 0
    objects_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when there are neither problems nor stale entries."""
        return not self.problems and not self.stale

    def _stale(self, dataset: str, ticker: str, text: str) -> None:
        self.stale.setdefault((dataset, ticker), []).append(text)

    def __str__(self) -> str:
        lines = [f"{self.metas_checked} _meta, {self.objects_checked} data objects checked"]
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"stale {d}/{t}: {s}" for (d, t), items in self.stale.items() for s in items]
        return "\n".join(lines)


def check_lake_consistency(lake: Lake, datasets: list[str] | None = None) -> ConsistencyReport:
    """Compare every ``_meta`` entry with its object and every data object with the ``_meta``.

    Reads (LIST + GET) every ``_meta`` and data object of ``datasets`` (default: all of the
    lake's datasets). Never writes.
    """
    store = lake.store
    report = ConsistencyReport()
    for name in datasets or sorted(lake.layouts):
        layout = lake.layouts[name]
        ds = get_dataset(name)
        referenced: set[str] = set()
        for info in store.list(f"{META_PREFIX}/{name}"):
            if not info.key.endswith(".json"):
                continue
            report.metas_checked += 1
            try:
                meta = TickerMeta.from_bytes(store.get(info.key).data, key=info.key)
            except MarketlakeError as exc:
                report.problems.append(f"{info.key}: {exc}")
                continue
            for period, p in sorted(meta.partitions.items()):
                referenced.add(p.key)
                expected = layout.key(name, ds.version, meta.ticker, period)
                if p.key != expected:
                    report.problems.append(
                        f"{info.key}: {period} points at {p.key}, not {expected}"
                    )
                got = store.get_or_none(p.key)
                if got is None:
                    report.problems.append(f"{info.key}: {period} points at missing {p.key}")
                    continue
                if sha256_hex(got.data) == p.sha256 and len(got.data) == p.bytes:
                    continue  # same bytes: rows and dates were derived from them
                try:
                    table = decode_table(got.data, key=p.key)
                except MarketlakeError as exc:
                    report.problems.append(f"{p.key}: {exc}")
                    continue
                lo, hi = _date_range(table, ds.time_column)
                report._stale(
                    name,
                    meta.ticker,
                    f"{p.key} changed since _meta: {len(got.data)} bytes/{table.num_rows} rows "
                    f"{lo}..{hi} on store, _meta says {p.bytes} bytes/{p.rows} rows "
                    f"{p.min_date}..{p.max_date}",
                )
        prefix = _literal_prefix(layout.template.replace("{dataset}", name))
        if not prefix:
            continue  # the template starts with a placeholder other than {dataset}: no LIST scan
        for info in store.list(prefix):
            parsed = layout.match(info.key)
            if parsed is None or parsed[0] != name:
                continue
            report.objects_checked += 1
            try:
                decode_table(store.get(info.key).data, key=info.key)
            except MarketlakeError as exc:
                report.problems.append(f"{info.key}: {exc}")
                continue
            if info.key not in referenced:
                report._stale(name, parsed[2], f"{info.key} is not listed in any _meta")
    return report


def _literal_prefix(template: str) -> str:
    head = template.split("{", 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _date_range(table: pa.Table, column: str) -> tuple[dt.date | None, dt.date | None]:
    if table.num_rows == 0:
        return None, None
    col = table.column(column)
    lo, hi = pc.min(col).as_py(), pc.max(col).as_py()
    return (
        lo.date() if isinstance(lo, dt.datetime) else lo,
        hi.date() if isinstance(hi, dt.datetime) else hi,
    )
