"""Reading the derived tables: filters, the one-source-per-agent-and-day rule, groupings.

The report command and the dashboard both answer through this module, so their numbers
are the same by construction.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import polars as pl

from otel_ingest.usage import derive, gateway
from otel_ingest.usage.store import UsageStore

# Where a (table set, agent, day) has several telemetry sources, the first one present
# counts. The gateway's rows always count; the telemetry copies of its calls do not
# (usage/gateway.py has the matching rule).
SOURCE_RANK = {"logs": 0, "spans": 1, "metrics": 2}
GROUP_KEYS = ("agent", "model", "user", "session", "day", "week", "month", "block", "table_set")
# ccusage-style billing windows: a block starts at the hour of a person's first call and
# lasts this long; the first call after it starts the next one.
BLOCK_HOURS = 5
SUMS = ("calls", *derive.TOKEN_COLUMNS)


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    agents: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    table_sets: tuple[str, ...] = ()
    # Only these days (``YYYY-MM-DD``), within since/until; empty: every day.
    days: tuple[str, ...] = ()

    def apply(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        # The day partition prunes files; the time bound is then exact.
        if self.since is not None:
            frame = frame.filter(pl.col("day") >= self.since.strftime("%Y-%m-%d"), pl.col("time") >= self.since)
        if self.until is not None:
            frame = frame.filter(pl.col("day") <= self.until.strftime("%Y-%m-%d"), pl.col("time") < self.until)
        if self.days:
            frame = frame.filter(pl.col("day").is_in(list(self.days)))
        for column, values in (
            ("agent", self.agents),
            ("user", self.users),
            ("model", self.models),
            ("table_set", self.table_sets),
        ):
            if values:
                frame = frame.filter(pl.col(column).is_in(list(values)))
        return frame


def parse_time(text: str, end: bool = False) -> datetime:
    """``2026-11-29``, ``2026-11-29T10:00``, or ``7d`` (days before now). A bare date as
    an ``--until`` bound includes that whole day."""
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(text[:-1]))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date (2026-11-29), a time (2026-11-29T10:00) or Nd") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end and len(text) == 10:
        parsed += timedelta(days=1)
    return parsed


@dataclass
class Usage:
    """Model calls (one source per table set, agent and day) and activity in a range."""

    calls: pl.DataFrame
    activity: pl.DataFrame
    mismatches: pl.DataFrame = field(default_factory=pl.DataFrame)


def select_sources(calls: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(calls from the counting source, mismatches between logs and metrics)."""
    calls = calls.unique(subset=["fact_id"], keep="first")
    gateway_calls = calls.filter(pl.col("source") == "gateway")
    telemetry = calls.filter(pl.col("source") != "gateway")
    ranked = telemetry.with_columns(pl.col("source").replace_strict(SOURCE_RANK, default=9).alias("_rank"))
    ranked = ranked.with_columns(pl.col("_rank").min().over("table_set", "agent", "day").alias("_best"))
    chosen = ranked.filter(pl.col("_rank") == pl.col("_best")).drop("_rank", "_best")
    chosen, gateway_calls = gateway.deduplicate(gateway_calls, chosen)
    chosen = pl.concat([chosen, gateway_calls], how="vertical_relaxed")
    return chosen.sort("time"), mismatches(calls)


def mismatches(calls: pl.DataFrame) -> pl.DataFrame:
    """Per (table set, agent, day, model): token sums where the logs and the metrics of the
    same calls disagree. Works on facts and on rollup rows (both carry the token sums)."""
    totals = (
        calls.filter(pl.col("source").is_in(["logs", "metrics"]))
        .group_by("table_set", "agent", "day", "model", "source")
        .agg(*[pl.col(c).sum() for c in derive.TOKEN_COLUMNS])
    )
    logs = totals.filter(pl.col("source") == "logs").drop("source")
    metrics = totals.filter(pl.col("source") == "metrics").drop("source")
    both = logs.join(
        metrics, on=["table_set", "agent", "day", "model"], how="inner", suffix="_metrics", nulls_equal=True
    )
    differs = pl.any_horizontal(*[pl.col(c) != pl.col(f"{c}_metrics") for c in derive.TOKEN_COLUMNS])
    return both.filter(differs) if both.height else both


def select_activity(activity: pl.DataFrame, calls: pl.DataFrame) -> pl.DataFrame:
    """Tool decisions, tool calls and API errors from metrics count only for a (table set,
    agent, day) without logs; where logs exist, the events are the source."""
    counted = without_logged_metrics(activity, calls)
    return counted if counted is activity else counted.sort("time")


def without_logged_metrics(activity: pl.DataFrame, calls: pl.DataFrame) -> pl.DataFrame:
    """``activity`` less its metrics-derived event kinds on (table set, agent, day)s that have
    logs; unsorted, so that rollup rows (which have no time) take the same rule."""
    fallback = (pl.col("source") == "metrics") & pl.col("kind").is_in(derive.EVENT_KINDS)
    from_metrics = activity.filter(fallback)
    if not from_metrics.height:
        return activity
    keys = ["table_set", "agent", "day"]
    logged = pl.concat(
        [
            calls.filter(pl.col("source") == "logs").select(keys),
            activity.filter(pl.col("source") == "logs").select(keys),
        ]
    ).unique()
    kept = from_metrics.join(logged, on=keys, how="anti", nulls_equal=True)
    return pl.concat([activity.filter(~fallback), kept])


def load(store: UsageStore, filters: Filters) -> Usage:
    # The user and model filters apply after the sources are chosen, as the dashboard
    # applies every filter (rolled.Rolled.where): the gateway names a call's principal, the
    # telemetry its own user id, and a call must be matched across both; the counting source
    # of an agent's day does not depend on the models asked for.
    unfiltered = replace(filters, users=(), models=())
    calls = unfiltered.apply(store.scan("model_calls")).collect()
    activity = unfiltered.apply(store.scan("activity")).collect().unique(subset=["fact_id"], keep="first").sort("time")
    activity = select_activity(activity, calls)
    chosen, differing = select_sources(calls)
    for column, values in (("user", filters.users), ("model", filters.models)):
        if values:
            chosen = chosen.filter(pl.col(column).is_in(list(values)))
            activity = activity.filter(pl.col(column).is_in(list(values)))
    return Usage(chosen, activity, differing)


def with_periods(frame: pl.DataFrame) -> pl.DataFrame:
    day = pl.col("time").dt.date()
    return frame.with_columns(
        (day - pl.duration(days=pl.col("time").dt.weekday() - 1)).cast(pl.String).alias("week"),
        pl.col("time").dt.strftime("%Y-%m").alias("month"),
    )


def _block_starts(times: list[datetime]) -> list[datetime]:
    """The start of each (sorted) time's 5-hour block."""
    starts: list[datetime] = []
    length = timedelta(hours=BLOCK_HOURS)
    index = 0
    while index < len(times):
        start = times[index].replace(minute=0, second=0, microsecond=0)
        end = start + length
        following = bisect.bisect_left(times, end, lo=index)
        starts.extend([start] * (following - index))
        index = following
    return starts


def with_blocks(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``block`` (start, ISO) and ``block_end``: each person's 5-hour billing windows
    (the windows of a subscription's usage limits are per account). A block starts at the
    UTC hour of the first call after the previous block ended, as ccusage counts them."""
    if not frame.height:
        return frame.with_columns(pl.lit(None, pl.String).alias("block"), pl.lit(None, pl.String).alias("block_end"))
    parts = []
    for _, part in frame.sort("time").group_by("user", maintain_order=True):
        starts = pl.Series("_start", _block_starts(part["time"].to_list()), dtype=derive.TIME)
        parts.append(part.with_columns(starts))
    return (
        pl.concat(parts)
        .with_columns(
            pl.col("_start").dt.strftime("%Y-%m-%dT%H:%MZ").alias("block"),
            (pl.col("_start") + pl.duration(hours=BLOCK_HOURS)).dt.strftime("%Y-%m-%dT%H:%MZ").alias("block_end"),
        )
        .drop("_start")
    )


def cost_source(sources: pl.Expr) -> pl.Expr:
    """A group's cost source: reported, estimated, mixed, or null when nothing is priced."""
    known = sources.drop_nulls().unique()
    return (
        pl.when(known.len() == 0)
        .then(pl.lit(None, pl.String))
        .when(known.len() == 1)
        .then(known.first())
        .otherwise(pl.lit("mixed"))
    )


def group(calls: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """One row per group: the JSON contract of ``otel-ingest usage --json``."""
    frame = calls
    if "week" in by or "month" in by:
        frame = (
            with_periods(calls)
            if calls.height
            else calls.with_columns(pl.lit(None, pl.String).alias("week"), pl.lit(None, pl.String).alias("month"))
        )
    if "block" in by:
        frame = with_blocks(frame)
    aggregations = [
        pl.col("calls").fill_null(0).sum().alias("calls"),
        *[pl.col(c).fill_null(0).sum().alias(c) for c in derive.TOKEN_COLUMNS],
        pl.when(pl.col("cost_usd").is_not_null().any()).then(pl.col("cost_usd").sum()).alias("cost_usd"),
        cost_source(pl.col("cost_source")).alias("cost_source"),
        pl.col("cost_usd").is_null().sum().cast(pl.Int64).alias("unpriced_calls"),
    ]
    if "block" in by:
        aggregations += [
            pl.col("block_end").first().alias("block_end"),
            pl.col("time").min().alias("first_call"),
            pl.col("time").max().alias("last_call"),
        ]
    result = frame.group_by(by).agg(aggregations).sort(by, nulls_last=True) if by else frame.select(aggregations)
    return result


def unpriced_models(calls: pl.DataFrame) -> pl.DataFrame:
    """Models whose calls have no cost (unknown to genai-prices and the override file)."""
    return (
        calls.filter(pl.col("cost_usd").is_null())
        .group_by("agent", "model")
        .agg(pl.len().alias("rows"), pl.col("input_tokens").sum(), pl.col("output_tokens").sum())
        .sort("agent", "model", nulls_last=True)
    )


def today() -> date:
    return datetime.now(UTC).date()
