"""The derived usage tables, refreshed incrementally and safely from many processes.

Three Delta tables under ``<warehouse>/_otel_ingest/usage/``: ``model_calls`` and
``activity`` (partitioned by ``day``) and ``points`` (each CUMULATIVE series' last value).
Each commit carries one Delta app transaction per raw table it covers —
``app_id = "otel-ingest-usage:<catalog.schema.table>"``, ``version`` = the raw table's
version read — like the ingestion writer's commits. So:

* a refresh reads only the files the raw table's versions after that one added;
* a refresh that crashes before committing is simply redone;
* two refreshers that read the same versions race for the same app ids: Delta rejects
  the second commit (concurrent transaction), which then finds nothing left to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake.exceptions import CommitFailedError

from otel_ingest.tables import Warehouse
from otel_ingest.usage import derive, rollup
from otel_ingest.usage.gateway import from_gateway
from otel_ingest.usage.pricing import MILLION, Pricer, Usage, catalog_price, catalog_rates
from otel_ingest.usage.sources import (
    GATEWAY,
    Changes,
    RawTable,
    added_files,
    changes,
    derived_location,
    discover,
)

log = logging.getLogger("otel_ingest.usage")

APP_PREFIX = "otel-ingest-usage:"
# A rollup table's progress: app_id = this + the fact table's name, version = the fact
# table's version summed.
ROLLUP_PREFIX = "otel-ingest-usage-rollup:"
TABLES: dict[str, dict[str, pl.DataType]] = {
    "model_calls": derive.MODEL_CALLS,
    "activity": derive.ACTIVITY,
    "points": derive.POINTS,
    **rollup.SCHEMAS,
}
# Fact tables are partitioned by day; the rollups are small and read by range through
# their files' day statistics (one partition per day would mean a file per day per refresh).
PARTITIONS: dict[str, list[str]] = {"model_calls": ["day"], "activity": ["day"], "points": ["day"]}
# Commit order: the facts first, the cumulative points last, so the points are never
# ahead of the facts derived from them.
COMMIT_ORDER = ("model_calls", "activity", "points")
COMMIT_ATTEMPTS = 5
# Raw files are read in groups of about this many (compressed) bytes.
READ_BATCH_BYTES = 32 * 2**20
# Each refresh adds a small file per derived table (and per day it touched, for the
# day-partitioned facts): a rollup table, or a day of a fact table, is compacted once it
# holds this many files.
COMPACT_FILES = 32
# A rollup rebuilt from all facts reads them this many days at a time.
ROLLUP_DAYS = 3


@dataclass
class RefreshResult:
    raw_tables: int = 0
    files_read: int = 0
    rows_read: int = 0
    added: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    attempts: int = 1
    # Of ``seconds``, the time spent bringing the rollup tables up to date.
    rollup_seconds: float = 0.0
    # Days whose facts this refresh wrote, and the tables (or days) compacted after it.
    days: set[str] = field(default_factory=set)
    compacted: list[str] = field(default_factory=list)


def app_id(table: RawTable) -> str:
    return APP_PREFIX + table.key


# Derived facts of one batch waiting for their commit: a file in the refresh's spill
# directory (model calls, activity), or a frame (the few cumulative points).
Spilled = str | pl.DataFrame


def _unspill(parts: list[Spilled], name: str) -> pl.DataFrame:
    frames = [pl.read_parquet(part) if isinstance(part, str) else part for part in parts]
    if not frames:
        return derive.empty(TABLES[name])
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


class UsageStore:
    """Reads and refreshes the derived tables of one warehouse."""

    def __init__(self, warehouse: Warehouse, pricer: Pricer | None = None) -> None:
        self.warehouse = warehouse
        self.pricer = pricer or Pricer()
        self._snapshots: dict[str, deltalake.DeltaTable] = {}
        self._lock = threading.Lock()

    def location(self, name: str) -> str:
        return derived_location(self.warehouse, name)

    def _open(self, name: str) -> deltalake.DeltaTable:
        location = self.location(name)
        options = self.warehouse.storage_options
        if deltalake.DeltaTable.is_deltatable(location, options):
            return deltalake.DeltaTable(location, storage_options=options)
        if self.warehouse.is_local:
            import os

            os.makedirs(location, exist_ok=True)
        schema = derive.empty(TABLES[name]).to_arrow().schema
        try:
            return deltalake.DeltaTable.create(
                location,
                schema,
                mode="ignore",
                partition_by=PARTITIONS.get(name) or None,
                storage_options=options,
                name=f"usage_{name}",
            )
        except Exception:
            if not deltalake.DeltaTable.is_deltatable(location, options):
                raise
            return deltalake.DeltaTable(location, storage_options=options)

    def snapshot(self, name: str) -> deltalake.DeltaTable | None:
        """The derived table at its latest version, None if it does not exist yet. The
        DeltaTable is kept between calls and brought up to date incrementally (only the log
        entries after the version it holds are read), so a warm reader does not replay the
        log or re-read a checkpoint on every query."""
        with self._lock:
            table = self._snapshots.get(name)
            if table is None:
                location = self.location(name)
                if not deltalake.DeltaTable.is_deltatable(location, self.warehouse.storage_options):
                    return None
                table = deltalake.DeltaTable(location, storage_options=self.warehouse.storage_options)
                self._snapshots[name] = table
            else:
                table.update_incremental()
            return table

    def scan(self, name: str) -> pl.LazyFrame:
        """The derived table (empty if it does not exist yet)."""
        table = self.snapshot(name)
        if table is None:
            return derive.empty(TABLES[name]).lazy()
        with self._lock:
            return pl.scan_delta(table)

    # ----------------------------------------------------------------- refresh

    def refresh(self) -> RefreshResult:
        """Bring the derived tables up to the raw tables' current versions."""
        started = time.perf_counter()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                result = self._refresh_once()
            except Exception as error:
                # A commit that lost a race with another refresher (a concurrent transaction
                # on the same app ids, or "Metadata changed since last commit" when the other
                # one's commit came first on a table both just opened): look again.
                lost = isinstance(error, CommitFailedError) or "concurrent" in str(error).lower()
                if not lost or attempt == COMMIT_ATTEMPTS:
                    raise
                log.info("Another refresh committed first (%s); looking again.", error)
                continue
            result.attempts = attempt
            result.compacted = self.compact(result.days)
            result.seconds = time.perf_counter() - started
            return result
        raise AssertionError("unreachable")

    def compact(self, days: set[str]) -> list[str]:
        """Merge the small files refreshes leave: each rollup table once it holds
        ``COMPACT_FILES`` files, and each of ``days`` of a day-partitioned table once that
        day does. Compaction rewrites files with ``dataChange = false``, which the refresh's
        change readers skip, and never conflicts with a refresh's append; a compaction
        that loses a race with another is skipped (the next refresh tries again)."""
        done: list[str] = []
        for name in TABLES:
            location = self.location(name)
            options = self.warehouse.storage_options
            if not deltalake.DeltaTable.is_deltatable(location, options):
                continue
            table = deltalake.DeltaTable(location, storage_options=options)
            try:
                if not PARTITIONS.get(name):
                    if len(table.file_uris()) >= COMPACT_FILES:
                        table.optimize.compact()
                        done.append(name)
                    continue
                if not days:
                    continue
                actions = pl.DataFrame(table.get_add_actions(flatten=True))
                if not actions.height or "partition.day" not in actions.columns:
                    continue
                counts = actions.filter(pl.col("partition.day").is_in(sorted(days)))["partition.day"].value_counts()
                crowded = counts.filter(pl.col("count") >= COMPACT_FILES)["partition.day"].to_list()
                if crowded:
                    table.optimize.compact(partition_filters=[("day", "in", sorted(crowded))])
                    done += [f"{name}/day={day}" for day in sorted(crowded)]
            except Exception as error:  # best effort: the data is correct either way
                log.info("Compaction of %s skipped: %s", name, error)
        return done

    def _refresh_once(self) -> RefreshResult:
        # The new facts wait on local disk until their commit, one file per batch of raw
        # files read, and are committed as a stream: a first refresh of millions of raw
        # rows holds one batch in memory, not every fact it derived.
        with tempfile.TemporaryDirectory(prefix="otel-ingest-usage-") as spill:
            return self._refresh_spilling(spill)

    def _refresh_spilling(self, spill: str) -> RefreshResult:
        result = RefreshResult()
        derived = {name: self._open(name) for name in COMMIT_ORDER}
        pending: dict[str, list[Spilled]] = {name: [] for name in COMMIT_ORDER}
        transactions: dict[str, list[deltalake.Transaction]] = {name: [] for name in COMMIT_ORDER}
        rebuilds: list[tuple[RawTable, dict[str, pl.DataFrame], int]] = []
        for table in discover(self.warehouse):
            result.raw_tables += 1
            progress = {name: derived[name].transaction_version(app_id(table)) for name in COMMIT_ORDER}
            for since in sorted({-1 if v is None else v for v in progress.values()}):
                targets = [n for n in COMMIT_ORDER if (-1 if progress[n] is None else progress[n]) == since]
                found = changes(self.warehouse, table, since)
                if found.version <= since:
                    continue
                spilled, rows = self._derive(found, derived["points"], spill)
                result.files_read += len(found.files)
                result.rows_read += rows
                if found.full and since >= 0:
                    rebuilds.append((table, {n: _unspill(spilled[n], n) for n in targets}, found.version))
                    continue
                for name in targets:
                    pending[name].extend(spilled[name])
                    transactions[name].append(deltalake.Transaction(app_id=app_id(table), version=found.version))
        for table, frames, version in rebuilds:
            for name in COMMIT_ORDER:
                if name in frames:
                    frame = frames[name]
                    if name != "points":  # the table's facts are replaced: unique among themselves
                        frame = frame.unique(subset=["fact_id"], keep="first", maintain_order=True)
                    self._commit(
                        derived[name], frame, [deltalake.Transaction(app_id(table), version)], replace=table.key
                    )
                    result.days.update(frame["day"].unique().drop_nulls().to_list())
                    result.added[name] = result.added.get(name, 0) + frame.height
        for name in COMMIT_ORDER:
            if not transactions[name]:
                continue
            if name == "points":
                frame = _unspill(pending[name], name)
                self._commit(derived[name], frame, transactions[name])
                result.days.update(frame["day"].unique().drop_nulls().to_list())
                result.added[name] = result.added.get(name, 0) + frame.height
            else:
                added, days = self._commit_facts(derived[name], name, pending[name], transactions[name])
                result.days.update(days)
                result.added[name] = result.added.get(name, 0) + added
        started = time.perf_counter()
        for name, facts in rollup.SOURCES.items():
            added = self._roll_up(name, derived[facts])
            if added:
                result.added[name] = added
        result.rollup_seconds = time.perf_counter() - started
        return result

    def _roll_up(self, name: str, facts: deltalake.DeltaTable) -> int:
        """Sum the facts committed since the rollup's last version into new rollup rows
        (the rollup is rebuilt from all facts when the fact table's log lost a commit or
        a version removed facts, as a rebuild of a raw table's facts does). Returns the
        number of rollup rows written."""
        target = self._open(name)
        app = ROLLUP_PREFIX + rollup.SOURCES[name]
        done = target.transaction_version(app)
        since = -1 if done is None else done
        version = facts.version()
        if version <= since:
            return 0
        location = self.location(rollup.SOURCES[name])
        added = added_files(self.warehouse, location, since, version)
        options = self.warehouse.storage_options
        columns = list(TABLES[rollup.SOURCES[name]])
        roll = rollup.ROLL[name]
        if added is None:
            # All facts, a few days at a time (day is a rollup key: the parts never share one),
            # so millions of facts are never in memory at once.
            facts_at = pl.scan_delta(location, version=version, storage_options=options)
            days = sorted(d for d in facts_at.select(pl.col("day").unique()).collect()["day"].to_list() if d)
            parts = [
                roll(facts_at.filter(pl.col("day").is_in(days[i : i + ROLLUP_DAYS])).select(columns).collect())
                for i in range(0, len(days), ROLLUP_DAYS)
            ]
            parts.append(roll(facts_at.filter(pl.col("day").is_null()).select(columns).collect()))
            frame = pl.concat(parts, how="vertical_relaxed")
        else:
            # A few days' files at a time (day is a rollup key: the parts never share one).
            by_day: dict[str, list[tuple[str, dict[str, str | None]]]] = {}
            for path, partition in zip(added.files, added.partitions, strict=True):
                by_day.setdefault(partition.get("day") or "", []).append((path, partition))
            chunks = sorted(by_day)
            parts = [derive.empty(TABLES[name])]
            for i in range(0, len(chunks), ROLLUP_DAYS):
                read = []
                for day in chunks[i : i + ROLLUP_DAYS]:
                    for path, partition in by_day[day]:
                        part = pl.read_parquet(path, storage_options=options, hive_partitioning=False)
                        for column, value in partition.items():
                            if column not in part.columns:
                                dtype = TABLES[rollup.SOURCES[name]].get(column, pl.String())
                                part = part.with_columns(pl.lit(value, dtype).alias(column))
                        read.append(part)
                parts.append(roll(pl.concat(read, how="diagonal_relaxed").select(columns)))
            frame = pl.concat(parts, how="vertical_relaxed")
        properties = deltalake.CommitProperties(app_transactions=[deltalake.Transaction(app, version)])
        deltalake.write_deltalake(
            target, frame.to_arrow(), mode="append" if added is not None else "overwrite", commit_properties=properties
        )
        return frame.height

    def _read(self, files: list[str]) -> pl.DataFrame:
        if not files:
            return pl.DataFrame()
        return pl.read_parquet(files, storage_options=self.warehouse.storage_options, hive_partitioning=False)

    @staticmethod
    def _batches(found: Changes) -> list[list[str]]:
        """The files in groups of about ``READ_BATCH_BYTES``: a first refresh of millions of
        rows never holds all raw rows (and their attribute entries) in memory at once.
        Metrics stay one batch: CUMULATIVE increases chain from one point to the next."""
        if found.table.signal == "metrics" or len(found.sizes) != len(found.files):
            return [found.files]
        batches: list[list[str]] = [[]]
        size = 0
        for path, bytes_ in zip(found.files, found.sizes, strict=True):
            if batches[-1] and size + bytes_ > READ_BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(path)
            size += bytes_
        return batches

    def _derive(self, found: Changes, points: deltalake.DeltaTable, spill: str) -> tuple[dict[str, list[Spilled]], int]:
        """The facts derived from the files in ``found``, batch by batch: when there are
        several batches, the facts of each written to a file in ``spill`` (an incremental
        refresh's one batch, and the cumulative points, one per series, stay in memory), and
        the number of raw rows read."""
        parts: dict[str, list[Spilled]] = {name: [] for name in COMMIT_ORDER}
        rows = 0
        batches = self._batches(found)
        for files in batches:
            raw = self._read(files)
            rows += raw.height
            for name, frame in self._derive_batch(found, raw, points).items():
                if not frame.height:
                    continue
                if name == "points" or len(batches) == 1:
                    parts[name].append(frame)
                    continue
                path = os.path.join(spill, f"{name}-{len(os.listdir(spill)):06d}.parquet")
                frame.write_parquet(path, compression="lz4", statistics=False)
                parts[name].append(path)
            del raw
        return parts, rows

    def _derive_batch(self, found: Changes, raw: pl.DataFrame, points: deltalake.DeltaTable) -> dict[str, pl.DataFrame]:
        table = found.table
        context = derive.Context(table.table_set, table.key)
        calls, activity, latest = (
            derive.empty(derive.MODEL_CALLS),
            derive.empty(derive.ACTIVITY),
            derive.empty(derive.POINTS),
        )
        if raw.height:
            if table.signal == "logs":
                calls, activity = derive.from_logs(raw, context)
            elif table.signal == "traces":
                calls = derive.from_spans(raw, context)
            elif table.signal == GATEWAY:
                calls = from_gateway(raw, context)
            else:
                previous = derive.empty(derive.POINTS)
                if not found.full or found.since < 0:
                    previous = (
                        (
                            pl.scan_delta(points.table_uri, storage_options=self.warehouse.storage_options)
                            .filter(pl.col("source_table") == table.key)
                            .sort("time_ns")
                            .group_by("series_id")
                            .last()
                            .collect()
                        )
                        if points.version() > 0
                        else previous
                    )
                calls, activity, latest = derive.from_metrics(raw, context, previous)
        return {"model_calls": self.price(calls), "activity": activity, "points": latest}

    def price(self, calls: pl.DataFrame) -> pl.DataFrame:
        """Estimate the cost of calls that carry none (and reprice reported ones where an
        override says so). Calls are priced per (agent, model, day) with the rates
        genai-prices gives ``calc_price``, in one vectorized pass; calls in a price tier,
        or with a cache unit the model has no rate for, go through ``calc_price`` itself."""
        if not calls.height:
            return calls
        replacing = any(p.replace_reported for p in self.pricer.overrides)
        wanted = pl.col("cost_usd").is_null() | pl.lit(replacing)
        groups = calls.filter(wanted & pl.col("model").is_not_null()).select("agent", "model", "day").unique()
        rates: list[tuple[str, str, str, float, float, float | None, float | None, float, float | None, bool]] = []
        for agent, model, day in groups.iter_rows():
            override = self.pricer.override(agent, model)
            if override is not None:
                rates.append(
                    (
                        agent,
                        model,
                        day,
                        override.input_mtok / MILLION,
                        override.output_mtok / MILLION,
                        override.cache_read_mtok / MILLION,
                        override.cache_write_mtok / MILLION,
                        0.0,
                        None,
                        override.replace_reported,
                    )
                )
                continue
            found = catalog_rates(agent, model, day)
            if found is not None:
                rates.append(
                    (
                        agent,
                        model,
                        day,
                        found.input,
                        found.output,
                        found.cache_read,
                        found.cache_write,
                        found.per_request,
                        found.tier_above,
                        False,
                    )
                )
        table = pl.DataFrame(
            rates,
            schema={
                "agent": pl.String,
                "model": pl.String,
                "day": pl.String,
                "_in": pl.Float64,
                "_out": pl.Float64,
                "_cr": pl.Float64,
                "_cw": pl.Float64,
                "_req": pl.Float64,
                "_tier": pl.Float64,
                "_replace": pl.Boolean,
            },
            orient="row",
        )
        joined = calls.join(table, on=["agent", "model", "day"], how="left", nulls_equal=True)
        uncached = pl.col("input_tokens") - pl.col("cache_read_tokens") - pl.col("cache_write_tokens")
        linear = (
            uncached * pl.col("_in")
            + pl.col("cache_read_tokens") * pl.col("_cr").fill_null(0.0)
            + pl.col("cache_write_tokens") * pl.col("_cw").fill_null(0.0)
            + pl.col("output_tokens") * pl.col("_out")
            + pl.col("_req")
        )
        exact = (
            pl.col("_in").is_not_null()
            & (pl.col("_tier").is_null() | (pl.col("input_tokens") <= pl.col("_tier")))
            & (pl.col("_cr").is_not_null() | (pl.col("cache_read_tokens") == 0))
            & (pl.col("_cw").is_not_null() | (pl.col("cache_write_tokens") == 0))
        )
        reprice = pl.col("cost_usd").is_null() | pl.col("_replace").fill_null(False)
        joined = joined.with_columns(
            reprice.alias("_reprice"), pl.when(exact).then(linear).alias("_estimate"), exact.alias("_exact")
        )
        # The rest (tiers, unpriced cache units) one by one, through calc_price.
        slow = joined.filter(pl.col("_reprice") & ~pl.col("_exact") & pl.col("_in").is_not_null())
        if slow.height:
            costs = [
                catalog_price(
                    r["agent"],
                    r["model"],
                    r["day"],
                    Usage(r["input_tokens"], r["cache_read_tokens"], r["cache_write_tokens"], r["output_tokens"]),
                )
                for r in slow.iter_rows(named=True)
            ]
            slow_costs = slow.select("fact_id", pl.Series("_slow", costs, dtype=pl.Float64))
            joined = joined.join(slow_costs, on="fact_id", how="left").with_columns(
                pl.coalesce("_estimate", "_slow").alias("_estimate")
            )
        joined = joined.with_columns(
            pl.when(pl.col("_reprice")).then(pl.col("_estimate")).otherwise(pl.col("cost_usd")).alias("cost_usd"),
            pl.when(pl.col("_reprice"))
            .then(pl.when(pl.col("_estimate").is_not_null()).then(pl.lit("estimated")))
            .otherwise(pl.col("cost_source"))
            .alias("cost_source"),
        )
        return joined.select(list(derive.MODEL_CALLS))

    def _new_facts(self, frame: pl.DataFrame, name: str) -> pl.DataFrame:
        """Drop facts already stored (a record an exporter sent twice counts once)."""
        frame = frame.unique(subset=["fact_id"], keep="first", maintain_order=True)
        if not frame.height:
            return frame
        # A fact id determines its time (both come from the same record), so only stored
        # facts at one of the new facts' times can match: the day partitions prune files,
        # the time filter row groups and rows, and only those rows' ids are read.
        days = frame["day"].unique().to_list()
        times = frame["time"].unique()
        existing = (
            self.scan(name)
            .filter(pl.col("day").is_in(days), pl.col("time").is_in(times.implode()))
            .select("fact_id")
            .collect()
        )
        if not existing.height:
            return frame
        return frame.join(existing, on="fact_id", how="anti")

    def _commit_facts(
        self, table: deltalake.DeltaTable, name: str, spilled: list[Spilled], transactions: list[deltalake.Transaction]
    ) -> tuple[int, set[str]]:
        """Append the new facts of ``spilled`` (batches, in the order derived) in one commit
        that carries ``transactions``, streamed from the batch files when there are any. A
        fact already stored, or already in an earlier batch of this refresh, is dropped.
        Returns the number of facts added and the days they fall on."""
        added = 0
        days: set[str] = set()
        schema = derive.empty(TABLES[name]).to_arrow().schema
        # This refresh's facts so far, by time and 64-bit hash of the id (in-process only):
        # 16 bytes a fact instead of the id itself.
        seen = pl.DataFrame(schema={"time": derive.TIME, "_h": pl.UInt64})
        kept: list[str] = []
        in_memory: list[pl.DataFrame] = []
        folder = next((os.path.dirname(part) for part in spilled if isinstance(part, str)), None)
        # First the new facts of each batch, written back in place; then one streamed
        # commit. (The stream is read on deltalake's own runtime: nothing in it may call
        # deltalake or polars' scans, so it reads the files with pyarrow only.)
        for number, part in enumerate(spilled):
            frame = _unspill([part], name).unique(subset=["fact_id"], keep="first", maintain_order=True)
            frame = frame.with_columns(pl.col("fact_id").hash().alias("_h"))
            if seen.height:
                frame = frame.join(seen, on=["time", "_h"], how="anti", nulls_equal=True)
            seen = pl.concat([seen, frame.select("time", "_h")])
            frame = self._new_facts(frame.drop("_h"), name)
            if not frame.height:
                continue
            added += frame.height
            days.update(frame["day"].unique().drop_nulls().to_list())
            if folder is None:
                in_memory.append(frame)
                continue
            path = part if isinstance(part, str) else os.path.join(folder, f"{name}-memory-{number:06d}.parquet")
            pq.write_table(frame.to_arrow().cast(schema), path)
            kept.append(path)
        data: pa.Table | pa.RecordBatchReader
        if kept:
            data = pads.dataset(kept, schema=schema, format="parquet").scanner().to_reader()
        elif in_memory:
            data = pl.concat(in_memory, how="vertical").to_arrow().cast(schema)
        else:
            data = pa.RecordBatchReader.from_batches(schema, [])
        properties = deltalake.CommitProperties(app_transactions=transactions)
        deltalake.write_deltalake(table, data, mode="append", commit_properties=properties, partition_by=["day"])
        table.update_incremental()
        return added, days

    def _commit(
        self,
        table: deltalake.DeltaTable,
        frame: pl.DataFrame,
        transactions: list[deltalake.Transaction],
        replace: str | None = None,
    ) -> None:
        properties = deltalake.CommitProperties(app_transactions=transactions)
        data = frame.to_arrow()
        if replace is not None:
            deltalake.write_deltalake(
                table,
                data,
                mode="overwrite",
                predicate=f"source_table = '{replace}'",
                commit_properties=properties,
                partition_by=["day"],
            )
        else:
            deltalake.write_deltalake(table, data, mode="append", commit_properties=properties, partition_by=["day"])
        table.update_incremental()
