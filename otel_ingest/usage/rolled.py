"""The counted usage of a time range as rollup rows: what the dashboard's panels are
computed from (docs/usage.md, "Rollup tables").

Whole days without gateway calls come from the rollup tables (``rollup.py``), with the
one-source-per-(table set, agent, day) rule and the metrics fallback of tool decisions,
tool calls and API errors applied to rollup rows exactly as ``query`` applies them to
facts. Partial first and last days, days with gateway calls (matched call by call,
``usage/gateway.py``) and the days next to them (a match may cross midnight) come from
the facts through ``query.load``, rolled up on the fly with the same functions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from otel_ingest.usage import derive, query
from otel_ingest.usage.rollup import roll_activity, roll_calls
from otel_ingest.usage.store import UsageStore

FILTER_COLUMNS = ("agent", "user", "model", "table_set")
# Facts of a range's newest days kept in memory for its "underlying rows" tables.
DETAIL_ROWS = 200_000


def _counted_calls(rows: pl.DataFrame) -> pl.DataFrame:
    """``query.select_sources`` on rollup rows of days without gateway calls."""
    ranked = rows.with_columns(pl.col("source").replace_strict(query.SOURCE_RANK, default=9).alias("_rank"))
    ranked = ranked.with_columns(pl.col("_rank").min().over("table_set", "agent", "day").alias("_best"))
    return ranked.filter(pl.col("_rank") == pl.col("_best")).drop("_rank", "_best")


def _counted_activity(activity: pl.DataFrame, calls: pl.DataFrame) -> pl.DataFrame:
    """``query.select_activity`` on rollup rows."""
    return query.without_logged_metrics(activity, calls)


def _days(first: str, last: str) -> list[str]:
    start, end = datetime.strptime(first, "%Y-%m-%d"), datetime.strptime(last, "%Y-%m-%d")
    return [(start + timedelta(days=n)).strftime("%Y-%m-%d") for n in range((end - start).days + 1)]


@dataclass
class _Newest:
    """The counted facts of a range's newest rollup days read so far, unfiltered: every
    filter of the range shares them (a filter's rows are found in memory, not re-read)."""

    days_left: list[str]
    frames: list[pl.DataFrame] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rows(self) -> int:
        return sum(frame.height for frame in self.frames)


@dataclass
class Details:
    """The facts behind a rolled-up range, read on demand, newest days first, with a limit
    (the dashboard's "underlying rows" tables)."""

    store: UsageStore
    rollup_days: list[str]
    facts: query.Usage
    call_keys: pl.DataFrame
    activity_keys: pl.DataFrame
    wanted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Shared by the copies ``Rolled.where`` makes (one per filter of the range).
    newest: dict[str, _Newest] = field(default_factory=dict)

    def _filter(self) -> pl.Expr:
        condition = pl.lit(True)
        for column, values in self.wanted.items():
            condition = condition & pl.col(column).is_in(list(values))
        return condition

    def _read(self, name: str, days: list[str], keys: pl.DataFrame, condition: pl.Expr) -> pl.DataFrame:
        """The counted facts of ``days``: the day partitions prune files."""
        read = (
            self.store.scan(name)
            .filter(pl.col("day").is_in(days))
            .filter(condition)
            .collect()
            .unique(subset=["fact_id"], keep="first")
        )
        return read.join(keys, on=keys.columns, how="semi", nulls_equal=True)

    def rows(self, name: Literal["model_calls", "activity"], limit: int) -> pl.DataFrame:
        own = self.facts.calls if name == "model_calls" else self.facts.activity
        keys = self.call_keys if name == "model_calls" else self.activity_keys
        condition = self._filter()
        parts = [own.filter(condition)]
        newest = self.newest.setdefault(name, _Newest(sorted(self.rollup_days, reverse=True)))
        with newest.lock:
            # Read more of the newest days (1, 2, 4, ... at a time) until the filter finds
            # ``limit`` rows: older days cannot hold newer rows. Kept in memory up to
            # DETAIL_ROWS; past that, the rest is read with the filter and not kept.
            found = [frame.filter(condition) for frame in newest.frames]
            window = max(1, len(self.rollup_days) - len(newest.days_left))
            days_left = newest.days_left
            while days_left and sum(f.height for f in found) < limit:
                chunk, days_left = days_left[:window], days_left[window:]
                window *= 2
                if newest.rows < DETAIL_ROWS:
                    frame = self._read(name, chunk, keys, pl.lit(True))
                    newest.frames.append(frame)
                    newest.days_left = days_left
                    found.append(frame.filter(condition))
                else:
                    found.append(self._read(name, chunk, keys, condition))
        parts += found
        # The newest ``limit`` of each part (a selection, not a sort of every fact of the
        # partial days), then of those: newest first, equal times by fact id.
        tops = [part.top_k(limit, by=["time", "fact_id"], reverse=[False, True]) for part in parts if part.height]
        if not tops:
            return parts[0].head(0)
        rows = pl.concat(tops, how="vertical_relaxed").sort(["time", "fact_id"], descending=[True, False])
        return rows.head(limit)


@dataclass
class Rolled:
    """The counted calls and activity of a range as rollup rows (several rows may share a
    key), the logs/metrics mismatches, and the facts behind them."""

    calls: pl.DataFrame
    activity: pl.DataFrame
    mismatches: pl.DataFrame
    details: Details | None = None

    def where(self, **wanted: list[str]) -> Rolled:
        """Only rows whose columns hold one of the wanted values (empty lists: no filter)."""
        chosen = {column: tuple(values) for column, values in wanted.items() if values}
        if not chosen:
            return self
        calls, activity = self.calls, self.activity
        for column, values in chosen.items():
            calls = calls.filter(pl.col(column).is_in(list(values)))
            activity = activity.filter(pl.col(column).is_in(list(values)))
        details = None
        if self.details is not None:
            merged_wanted = dict(self.details.wanted)
            for column, values in chosen.items():
                before = merged_wanted.get(column)
                merged_wanted[column] = values if before is None else tuple(v for v in before if v in values)
            details = replace(self.details, wanted=merged_wanted)
        return Rolled(calls, activity, self.mismatches, details)

    def detail_rows(self, name: Literal["model_calls", "activity"], limit: int) -> pl.DataFrame:
        if self.details is None:
            return derive.empty(derive.MODEL_CALLS if name == "model_calls" else derive.ACTIVITY)
        return self.details.rows(name, limit)


def group(calls: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """``query.group`` (the report's JSON contract) on rollup rows; ``week`` and ``month``
    come from the rows' day, as ``query.with_periods`` takes them from the facts' time."""
    if "week" in by or "month" in by:
        day = pl.col("day").str.to_date("%Y-%m-%d")
        calls = calls.with_columns(
            (day - pl.duration(days=day.dt.weekday() - 1)).cast(pl.String).alias("week"),
            pl.col("day").str.slice(0, 7).alias("month"),
        )
    aggregations = [
        pl.col("calls").fill_null(0).sum().alias("calls"),
        *[pl.col(c).fill_null(0).sum().alias(c) for c in derive.TOKEN_COLUMNS],
        pl.when(pl.col("cost_usd").is_not_null().any()).then(pl.col("cost_usd").sum()).alias("cost_usd"),
        query.cost_source(pl.col("cost_source")).alias("cost_source"),
        pl.col("rows").filter(~pl.col("priced")).sum().cast(pl.Int64).alias("unpriced_calls"),
    ]
    return calls.group_by(by).agg(aggregations).sort(by, nulls_last=True) if by else calls.select(aggregations)


def unpriced_models(calls: pl.DataFrame) -> pl.DataFrame:
    """``query.unpriced_models`` on rollup rows."""
    return (
        calls.filter(~pl.col("priced"))
        .group_by("agent", "model")
        .agg(pl.col("rows").sum().alias("rows"), pl.col("input_tokens").sum(), pl.col("output_tokens").sum())
        .sort("agent", "model", nulls_last=True)
    )


def from_usage(usage: query.Usage, store: UsageStore) -> Rolled:
    """Counted facts (``query.load``) as rollup rows: how the panels see facts."""
    empty_keys = pl.DataFrame(schema={"table_set": pl.String, "agent": pl.String, "day": pl.String})
    details = Details(store, [], usage, empty_keys, empty_keys)
    return Rolled(roll_calls(usage.calls), roll_activity(usage.activity), usage.mismatches, details)


def load(store: UsageStore, since: datetime | None, until: datetime | None) -> Rolled:
    """The counted usage of ``[since, until)`` (None: unbounded): whole days without gateway
    calls from the rollup tables, the rest (partial days, gateway days and their
    neighbours) from the facts. Numbers equal ``from_usage(query.load(...))`` over the
    same range."""
    rows = store.scan("calls_daily")
    activity_rows = store.scan("activity_daily")
    first: str | None = None
    if since is not None:
        first = since.strftime("%Y-%m-%d")
        rows = rows.filter(pl.col("day") >= first)
        activity_rows = activity_rows.filter(pl.col("day") >= first)
    last: str | None = None
    if until is not None:
        last = (until - timedelta(microseconds=1)).strftime("%Y-%m-%d")
        rows = rows.filter(pl.col("day") <= last)
        activity_rows = activity_rows.filter(pl.col("day") <= last)
    calls_all, activity_all = rows.collect(), activity_rows.collect()
    present = sorted(set(calls_all["day"].to_list()) | set(activity_all["day"].to_list()))
    whole = {
        d for d in present if (d != first or since == _midnight(since)) and (d != last or until == _midnight(until))
    }
    partial = set(present) - whole
    gateway_days = set(calls_all.filter(pl.col("source") == "gateway")["day"].unique().to_list())
    near = set()
    for day in gateway_days:
        near |= set(_days(_shift(day, -1), _shift(day, 1)))
    fact_days = sorted(partial | ((gateway_days | near) & set(present)))
    rollup_days = sorted(set(present) - set(fact_days))
    calls_rows = calls_all.filter(pl.col("day").is_in(rollup_days))
    activity_rows_ = activity_all.filter(pl.col("day").is_in(rollup_days))
    counted_calls = _counted_calls(calls_rows)
    counted_activity = _counted_activity(activity_rows_, calls_rows)
    mismatches = query.mismatches(calls_rows)
    facts = query.Usage(derive.empty(derive.MODEL_CALLS), derive.empty(derive.ACTIVITY), mismatches.clear())
    if fact_days:
        facts = query.load(store, query.Filters(since=since, until=until, days=tuple(fact_days)))
        counted_calls = pl.concat([counted_calls, roll_calls(facts.calls)], how="vertical_relaxed")
        counted_activity = pl.concat([counted_activity, roll_activity(facts.activity)], how="vertical_relaxed")
        mismatches = pl.concat([mismatches, facts.mismatches], how="vertical_relaxed")
    details = Details(
        store,
        rollup_days,
        facts,
        counted_calls.filter(pl.col("day").is_in(rollup_days)).select("table_set", "agent", "day", "source").unique(),
        counted_activity.filter(pl.col("day").is_in(rollup_days))
        .select("table_set", "agent", "day", "source", "kind")
        .unique(),
    )
    return Rolled(counted_calls, counted_activity, mismatches, details)


def _midnight(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _shift(day: str, days: int) -> str:
    return (datetime.strptime(day, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")
