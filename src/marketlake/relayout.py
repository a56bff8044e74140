"""``marketlake relayout``: move a dataset between key layout templates, safely and resumably.

Two kinds of move:

* **legacy tree -> lake**: objects written under another template (for example the seed's daily
  files ``{dataset}/{YYYY}/{MM}/{DD}/{ticker}_{YYYYMMDD}.parquet``) are merged into the lake's
  layout for the dataset (``--from TEMPLATE``);
* **lake -> lake**: the lake's own layout for a dataset changes (``--to TEMPLATE``, e.g. monthly
  to yearly files); ``_marketlake.json`` records the new template once every ticker is copied.

Steps, per ticker: read its source objects (found by one LIST of the source prefix, filtered with
:meth:`Layout.match`) -> write the rows through the normal :class:`PartitionWriter` into the
target layout (so ``_meta`` and the catalog are right; source rows win on a key that the target
already holds) -> **verify**: read the target partitions back and compare row count and a SHA-256
of the canonical rows with the source rows -> only then delete the source objects (each only if
its ETag is still the one that was copied). A lake -> lake move switches the marker after every
ticker is verified, then deletes the sources and rebuilds each ticker's ``_meta`` from the target
objects.

Progress is recorded in ``_relayout/{dataset}.json`` (phase, templates, tickers finished). Every
step is idempotent (an identical write rewrites nothing), so re-running after a crash at any
point converges, and an unverified source is never deleted. Run it while no ingest writes to the
dataset.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from marketlake.errors import ConflictError, CorruptObjectError, MarketlakeError
from marketlake.ingest.merge import merge_rows, sort_by_key
from marketlake.ingest.progress import NullProgress, Progress
from marketlake.ingest.writer import PartitionWriter
from marketlake.query.lake import Lake
from marketlake.schemas.conform import conform
from marketlake.schemas.datasets import Dataset, get_dataset
from marketlake.schemas.tickers import normalize_ticker
from marketlake.storage.format import MARKER_KEY, LakeMarker
from marketlake.storage.layout import Layout, period_bounds
from marketlake.storage.meta import meta_key
from marketlake.storage.parquet import decode_table, encode_table, sha256_hex

STATE_PREFIX = "_relayout"


class RelayoutError(MarketlakeError):
    """A relayout cannot start or a ticker failed verification (its sources are kept)."""


def state_key(dataset: str) -> str:
    """Key of the progress object of a relayout of ``dataset``."""
    return f"{STATE_PREFIX}/{dataset}.json"


@dataclass(frozen=True)
class Move:
    """One source object and the target partitions its rows go to."""

    ticker: str
    source_key: str
    target_keys: tuple[str, ...]


@dataclass
class RelayoutPlan:
    """What a relayout will do: templates, mode and the source -> target mapping per ticker."""

    dataset: str
    source: str
    target: str
    switch_marker: bool
    moves: dict[str, list[Move]] = field(default_factory=dict)

    @property
    def objects(self) -> int:
        """Number of source objects to move."""
        return sum(len(m) for m in self.moves.values())

    def describe(self, limit: int = 20) -> list[str]:
        """Human-readable lines (``--dry-run`` prints them)."""
        lines = [
            f"relayout {self.dataset}: {self.source} -> {self.target}",
            f"{len(self.moves)} ticker(s), {self.objects} source object(s)"
            + ("; _marketlake.json switches to the target layout" if self.switch_marker else ""),
        ]
        shown = 0
        for ticker in sorted(self.moves):
            for m in self.moves[ticker]:
                if shown == limit:
                    lines.append(f"... and {self.objects - limit} more")
                    return lines
                lines.append(f"  {m.source_key} -> {', '.join(m.target_keys) or '(by rows)'}")
                shown += 1
        return lines


@dataclass
class RelayoutResult:
    """Outcome of :func:`relayout`."""

    plan: RelayoutPlan
    tickers_done: int = 0
    rows_moved: int = 0
    objects_deleted: int = 0
    dry_run: bool = False


Hook = Callable[[str], None]


def _noop(step: str) -> None:
    return None


def _load_state(lake: Lake, dataset: str) -> tuple[dict[str, Any] | None, str | None]:
    got = lake.store.get_or_none(state_key(dataset))
    if got is None:
        return None, None
    try:
        state: dict[str, Any] = json.loads(got.data)
        str(state["source"]), str(state["target"]), str(state["phase"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObjectError(
            f"relayout state {state_key(dataset)} is corrupt ({exc}); delete it and re-run "
            "(every step is idempotent)",
            key=state_key(dataset),
        ) from exc
    return state, got.etag


def _save_state(lake: Lake, dataset: str, state: dict[str, Any]) -> None:
    body = json.dumps(state, indent=1, sort_keys=True).encode() + b"\n"
    lake.store.put(state_key(dataset), body)


def plan_relayout(
    lake: Lake, dataset: str, *, source: str | None = None, target: str | None = None
) -> RelayoutPlan:
    """Work out the move without changing anything (one LIST of the source prefix).

    ``source`` defaults to the lake's layout for ``dataset`` and ``target`` to it too; give the
    one that differs. An unfinished relayout recorded in ``_relayout/`` is resumed (its
    templates win; giving different ones is an error).
    """
    ds = get_dataset(dataset)
    current = lake.marker.layouts[ds.name]
    state, _ = _load_state(lake, ds.name)
    if state is not None and state["phase"] != "done":
        if (source and source != state["source"]) or (target and target != state["target"]):
            raise RelayoutError(
                f"an unfinished relayout of {ds.name} ({state['source']} -> {state['target']}) "
                f"is recorded in {state_key(ds.name)}: re-run it without --from/--to to finish "
                "it first",
                dataset=ds.name,
                key=state_key(ds.name),
            )
        source, target = state["source"], state["target"]
        switch = bool(state["switch_marker"])
    else:
        source = source or current
        target = target or current
        switch = source == current
        if source == target:
            raise RelayoutError(
                f"{ds.name} already uses {target!r}: give --from TEMPLATE (a legacy tree) or "
                "--to TEMPLATE (a new lake layout)",
                dataset=ds.name,
            )
        if not switch and target != current:
            raise RelayoutError(
                f"a legacy tree can only move into the lake's layout for {ds.name} ({current!r});"
                " move it there first, then change the lake layout with --to",
                dataset=ds.name,
            )
    src = Layout.parse(source, ticker_first=False)
    dst = Layout.parse(target)
    plan = RelayoutPlan(ds.name, source, target, switch)
    target_like = {target} if switch else {target, current}
    for info in lake.store.list(src.list_prefix(ds.name, ds.version)):
        hit = src.match(info.key)
        if hit is None or hit[0] != ds.name or (hit[1] is not None and hit[1] != ds.version):
            continue
        if any(Layout.parse(t).match(info.key) for t in target_like):
            continue  # never treat a target object as a source
        try:
            ticker = normalize_ticker(hit[2])
        except MarketlakeError as exc:
            raise RelayoutError(
                f"source object {info.key} has an invalid ticker: {exc}", key=info.key
            ) from None
        bounds = period_bounds(hit[3])
        targets = (
            tuple(dst.key(ds.name, ds.version, ticker, p) for p in dst.periods_between(*bounds))
            if bounds is not None
            else ()
        )
        plan.moves.setdefault(ticker, []).append(Move(ticker, info.key, targets))
    for moves in plan.moves.values():
        moves.sort(key=lambda m: m.source_key)
    return plan


def relayout(
    lake: Lake,
    dataset: str,
    *,
    source: str | None = None,
    target: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    hook: Hook = _noop,
) -> RelayoutResult:
    """Move ``dataset`` from the ``source`` layout to the ``target`` layout (module docstring).

    ``hook(step)`` is called after each durable step (``planned``, ``copied:T``, ``verified:T``,
    ``deleted:T``, ``switched``, ``meta:T``); tests raise from it to simulate a crash.

    Raises
    ------
    RelayoutError
        Nothing to do, conflicting templates, or a ticker whose target rows differ from its
        source rows (its sources are kept).
    CorruptObjectError
        A source object cannot be decoded (it names the key; nothing of that ticker is deleted).
    """
    ds = get_dataset(dataset)
    plan = plan_relayout(lake, ds.name, source=source, target=target)
    result = RelayoutResult(plan, dry_run=dry_run)
    if dry_run:
        return result
    progress = progress or NullProgress()
    state, _ = _load_state(lake, ds.name)
    if state is None or state["phase"] == "done":
        state = {
            "dataset": ds.name,
            "source": plan.source,
            "target": plan.target,
            "switch_marker": plan.switch_marker,
            "phase": "copying",
            "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tickers_done": 0,
        }
        _save_state(lake, ds.name, state)
    hook("planned")
    dst = Layout.parse(plan.target)
    writer = PartitionWriter(lake.store, {ds.name: dst})
    progress.start(len(plan.moves), f"relayout {ds.name}")
    try:
        copied: dict[str, dict[str, str | None]] = {}
        for ticker in sorted(plan.moves):
            etags, rows = _copy_and_verify(lake, writer, ds, dst, plan.moves[ticker], hook)
            result.rows_moved += rows
            if plan.switch_marker and state["phase"] == "copying":
                copied[ticker] = etags  # deleted after the switch
            else:
                result.objects_deleted += _delete_sources(lake, ticker, etags, hook)
                result.tickers_done += 1
                state["tickers_done"] = result.tickers_done
                if result.tickers_done % 100 == 0:
                    _save_state(lake, ds.name, state)
            progress.advance()
        if plan.switch_marker:
            if state["phase"] == "copying":
                _switch_marker(lake, ds.name, plan.target)
                state["phase"] = "switched"
                _save_state(lake, ds.name, state)
                hook("switched")
            for ticker in sorted(copied):
                result.objects_deleted += _delete_sources(lake, ticker, copied[ticker], hook)
                result.tickers_done += 1
            _refresh_lake(lake, ds.name, plan.target)
            for ticker in _tickers_in(lake, ds, dst):
                lake.repair_meta(ticker, ds.name)
                hook(f"meta:{ticker}")
            lake.rebuild_catalog()
        state["phase"] = "done"
        state["tickers_done"] = result.tickers_done
        state["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _save_state(lake, ds.name, state)
    finally:
        progress.finish()
    return result


def _copy_and_verify(
    lake: Lake,
    writer: PartitionWriter,
    ds: Dataset,
    dst: Layout,
    moves: list[Move],
    hook: Hook,
) -> tuple[dict[str, str | None], int]:
    """Copy one ticker's source objects into the target layout and verify them; returns the
    ETag of every source object that was copied (what may be deleted) and the row count."""
    ticker = moves[0].ticker
    etags: dict[str, str | None] = {}
    rows: pa.Table | None = None
    for m in sorted(moves, key=lambda m: m.source_key):
        got = lake.store.get_or_none(m.source_key)
        if got is None:  # deleted by an earlier, interrupted run after verification
            continue
        table = conform(decode_table(got.data, key=m.source_key), ds, ticker)
        etags[m.source_key] = got.etag
        rows = sort_by_key(table, ds.key) if rows is None else merge_rows(rows, table, ds.key).table
    if rows is None or rows.num_rows == 0:
        return etags, 0
    result = writer.write(ds, ticker, rows, source="relayout")
    lake.record([result], source="relayout")
    hook(f"copied:{ticker}")
    _verify(lake, ds, dst, ticker, rows)
    hook(f"verified:{ticker}")
    return etags, rows.num_rows


def _verify(lake: Lake, ds: Dataset, dst: Layout, ticker: str, rows: pa.Table) -> None:
    """Read the target partitions back; the rows at the source keys must equal the source rows
    (same count, same SHA-256 of the canonical encoding)."""
    tcol = rows.column(ds.time_column)
    lo, hi = pc.min(tcol).as_py(), pc.max(tcol).as_py()
    parts = []
    for period in dst.periods_between(lo, hi):
        key = dst.key(ds.name, ds.version, ticker, period)
        got = lake.store.get_or_none(key)
        if got is not None:
            parts.append(decode_table(got.data, key=key))
    stored = pa.concat_tables(parts) if parts else ds.schema.empty_table()
    want = sort_by_key(rows, ds.key)
    keys = pc.binary_join_element_wise(
        *[pc.cast(want.column(k), pa.string()) for k in ds.key], "\x1f"
    )
    skeys = pc.binary_join_element_wise(
        *[pc.cast(stored.column(k), pa.string()) for k in ds.key], "\x1f"
    )
    have = sort_by_key(stored.filter(pc.is_in(skeys, value_set=keys)), ds.key)
    if have.num_rows != want.num_rows or sha256_hex(encode_table(have)) != sha256_hex(
        encode_table(want)
    ):
        raise RelayoutError(
            f"relayout {ds.name}/{ticker}: the target holds {have.num_rows} of the "
            f"{want.num_rows} source rows or different values; the source objects are kept. "
            "Re-run 'marketlake relayout' (it copies again), or inspect the target partitions",
            dataset=ds.name,
            ticker=ticker,
        )


def _delete_sources(lake: Lake, ticker: str, etags: dict[str, str | None], hook: Hook) -> int:
    """Delete verified source objects whose ETag is unchanged since they were copied."""
    deleted = 0
    for key, etag in sorted(etags.items()):
        info = lake.store.head(key)
        if info is None:
            continue
        if etag is not None and info.etag != etag:
            raise RelayoutError(
                f"source object {key} changed after it was copied; it is kept: re-run "
                "'marketlake relayout' to copy the new version",
                key=key,
                ticker=ticker,
            )
        lake.store.delete(key)
        deleted += 1
        _prune_empty_dirs(lake, key)
    hook(f"deleted:{ticker}")
    return deleted


def _prune_empty_dirs(lake: Lake, key: str) -> None:
    """Local lakes: remove the folders a deleted source leaves empty (object stores have none)."""
    root = lake.store.local_root
    if root is None:
        return
    parent = (root / key).parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty (or already gone): stop
            return
        parent = parent.parent


def _switch_marker(lake: Lake, dataset: str, target: str) -> None:
    for _ in range(10):
        got = lake.store.get(MARKER_KEY)
        marker = LakeMarker.from_bytes(got.data)
        if marker.layouts.get(dataset) == target:
            return
        new = LakeMarker(
            marker.format_version, marker.created_at, {**marker.layouts, dataset: target}
        )
        try:
            lake.store.put_if_match(MARKER_KEY, new.to_bytes(), got.etag)
            return
        except ConflictError:
            continue
    raise RelayoutError(f"could not update {MARKER_KEY}: it keeps changing", key=MARKER_KEY)


def _refresh_lake(lake: Lake, dataset: str, target: str) -> None:
    """Make the open Lake use the marker's new layout."""
    lake.marker = LakeMarker.from_bytes(lake.store.get(MARKER_KEY).data)
    lake.layouts[dataset] = Layout.parse(target)
    lake.writer = PartitionWriter(lake.store, lake.layouts)


def _tickers_in(lake: Lake, ds: Dataset, layout: Layout) -> list[str]:
    """Tickers that have objects in ``layout`` or a ``_meta`` object (LIST; maintenance)."""
    found: set[str] = set()
    for info in lake.store.list(layout.list_prefix(ds.name, ds.version)):
        hit = layout.match(info.key)
        if hit is not None and hit[0] == ds.name:
            found.add(hit[2])
    prefix = meta_key(ds.name, "x").rsplit("/", 1)[0]
    for info in lake.store.list(prefix):
        if info.key.endswith(".json"):
            found.add(info.key.rsplit("/", 1)[1][: -len(".json")])
    return sorted(found)
