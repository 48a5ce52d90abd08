"""Per-day rollups of the derived facts: what the dashboard's totals, charts and
leaderboards read instead of every fact of a range (docs/usage.md, "Rollup tables").
This module defines them and sums facts into them; ``rolled.py`` reads them.

Two Delta tables next to the facts, ``calls_daily`` and ``activity_daily``: sums of the
facts grouped by every column a panel, a filter or the one-source-per-agent-and-day rule
needs. They are maintained by the same refresh as the facts (``store.UsageStore``), from
the facts each refresh committed, so a rollup row sums facts of one refresh; readers sum
the rows again (several rows may share a key). Source selection happens at read time,
over rollup rows (``rolled.py``), exactly as ``query`` does it over facts:

* a (table set, agent, day) counts its best telemetry source (logs, spans, metrics);
* tool decisions, tool calls and API errors from metrics count where that (table set,
  agent, day) has no logs.

The gateway's call-by-call matching (``usage/gateway.py``) cannot be done on sums: days
with gateway calls (and the days next to them, since a match may cross midnight) are read
from the facts, as are the partial first and last days of a range; their facts are rolled
up on the fly with the same functions, so every panel is computed one way.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from otel_ingest.usage import derive

CALL_KEYS = (
    "day",
    "table_set",
    "agent",
    "source",
    "source_table",
    "model",
    "user",
    "session",
    "cost_source",
    "priced",
)
ACTIVITY_KEYS = (
    "day",
    "table_set",
    "agent",
    "source",
    "source_table",
    "user",
    "model",
    "kind",
    "tool",
    "decision",
    "success",
    "status_code",
)
CALLS_DAILY: dict[str, pl.DataType] = {
    **{key: derive.MODEL_CALLS[key] for key in CALL_KEYS if key != "priced"},
    "priced": pl.Boolean(),
    "rows": pl.Int64(),
    "calls": pl.Int64(),
    **{column: pl.Int64() for column in derive.TOKEN_COLUMNS},
    "cost_usd": pl.Float64(),
    "durations": pl.List(pl.Float64()),
}
ACTIVITY_DAILY: dict[str, pl.DataType] = {
    **{key: derive.ACTIVITY[key] for key in ACTIVITY_KEYS},
    "rows": pl.Int64(),
    "value": pl.Float64(),
    "sessions": pl.List(pl.String()),
}
# rollup table → the fact table it sums
SOURCES = {"calls_daily": "model_calls", "activity_daily": "activity"}
SCHEMAS = {"calls_daily": CALLS_DAILY, "activity_daily": ACTIVITY_DAILY}


def roll_calls(calls: pl.DataFrame) -> pl.DataFrame:
    """Model-call facts → ``calls_daily`` rows (one per key)."""
    if not calls.height:
        return derive.empty(CALLS_DAILY)
    return (
        calls.with_columns(pl.col("cost_usd").is_not_null().alias("priced"))
        .group_by(CALL_KEYS)
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("calls").sum(),
            *[pl.col(c).sum() for c in derive.TOKEN_COLUMNS],
            pl.col("cost_usd").sum(),
            pl.col("duration_ms").drop_nulls().sort().alias("durations"),
        )
        .with_columns(pl.when(pl.col("priced")).then(pl.col("cost_usd")).alias("cost_usd"))
        .select([pl.col(name).cast(dtype) for name, dtype in CALLS_DAILY.items()])
        .sort("day", "table_set", "agent")
    )


def roll_activity(activity: pl.DataFrame) -> pl.DataFrame:
    """Activity facts → ``activity_daily`` rows (one per key)."""
    if not activity.height:
        return derive.empty(ACTIVITY_DAILY)
    return (
        activity.group_by(ACTIVITY_KEYS)
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("value").sum(),
            pl.col("session").drop_nulls().unique().sort().alias("sessions"),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in ACTIVITY_DAILY.items()])
        .sort("day", "table_set", "agent")
    )


ROLL = {"calls_daily": roll_calls, "activity_daily": roll_activity}


def merged(rows: pl.DataFrame, name: Literal["calls_daily", "activity_daily"]) -> pl.DataFrame:
    """Rollup rows with one row per key (rows of several refreshes summed), sorted: the
    canonical form two rollups are compared in."""
    keys: tuple[str, ...]
    if name == "calls_daily":
        keys, schema = CALL_KEYS, CALLS_DAILY
        aggregations = [
            pl.col("rows").sum(),
            pl.col("calls").sum(),
            *[pl.col(c).sum() for c in derive.TOKEN_COLUMNS],
            pl.when(pl.col("priced").first()).then(pl.col("cost_usd").sum()).alias("cost_usd"),
            pl.col("durations").list.explode(keep_nulls=False, empty_as_null=False).sort().alias("durations"),
        ]
    else:
        keys, schema = ACTIVITY_KEYS, ACTIVITY_DAILY
        aggregations = [
            pl.col("rows").sum(),
            pl.col("value").sum(),
            pl.col("sessions").list.explode(keep_nulls=False, empty_as_null=False).unique().sort().alias("sessions"),
        ]
    if not rows.height:
        return derive.empty(schema)
    return (
        rows.group_by(keys)
        .agg(aggregations)
        .select([pl.col(n).cast(t) for n, t in schema.items()])
        .sort(list(keys), nulls_last=True)
    )
