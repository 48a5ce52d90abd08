"""The dashboard's panels, computed from one ``rolled.Rolled`` (the counted calls and
activity of a range as per-day rollup rows): each is a list of rows that the page draws
and that ``/api/panel/<name>`` exports as JSON or CSV. Every figure is a sum, a distinct
count or a quantile that rollup rows give exactly as the facts would (usage/rolled.py)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from otel_ingest.usage import rolled
from otel_ingest.usage.derive import TOKEN_COLUMNS
from otel_ingest.usage.rolled import Rolled

PANELS = (
    "totals",
    "over_time",
    "tokens_by_type",
    "by_user",
    "by_model",
    "by_agent",
    "sessions",
    "tools",
    "errors",
    "latency",
    "mismatches",
    "unpriced",
    "calls",
    "activity",
)
ROW_LIMIT = 1000


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = frame.to_dicts()
    # Only float and time columns need cleaning (NaN/inf → null, times → ISO 8601).
    dirty = [name for name, dtype in frame.schema.items() if dtype.is_float() or dtype.is_temporal()]
    if dirty:
        for row in rows:
            for name in dirty:
                row[name] = _clean(row[name])
    return rows


def _leaderboard(calls: pl.DataFrame, key: str) -> pl.DataFrame:
    return (
        rolled.group(calls, [key])
        .with_columns((pl.col("input_tokens") + pl.col("output_tokens")).alias("tokens"))
        .sort(["cost_usd", "tokens"], descending=True, nulls_last=True)
    )


def totals(usage: Rolled) -> dict[str, Any]:
    calls, activity = usage.calls, usage.activity
    kind = activity.group_by("kind").agg(pl.col("value").sum()) if activity.height else pl.DataFrame()
    by_kind = {k: v for k, v in kind.iter_rows()} if kind.height else {}
    input_tokens = int(calls["input_tokens"].sum()) if calls.height else 0
    cache_read = int(calls["cache_read_tokens"].sum()) if calls.height else 0
    costs = calls["cost_usd"].drop_nulls() if calls.height else pl.Series([], dtype=pl.Float64)
    sessions = pl.concat([calls["session"], activity["sessions"].explode()]).drop_nulls().n_unique()
    users = pl.concat([calls["user"], activity["user"]]).drop_nulls().n_unique()
    return {
        "cost_usd": float(costs.sum()) if costs.len() else None,
        "calls": int(calls["calls"].fill_null(0).sum()) if calls.height else 0,
        "input_tokens": input_tokens,
        "output_tokens": int(calls["output_tokens"].sum()) if calls.height else 0,
        "tokens": input_tokens + (int(calls["output_tokens"].sum()) if calls.height else 0),
        "cache_hit_ratio": cache_read / input_tokens if input_tokens else None,
        "sessions": sessions,
        "active_users": users,
        "prompts": int(by_kind.get("prompt", 0)),
        "lines_added": int(by_kind.get("lines_added", 0)),
        "lines_removed": int(by_kind.get("lines_removed", 0)),
        "commits": int(by_kind.get("commit", 0)),
        "pull_requests": int(by_kind.get("pull_request", 0)),
        "unpriced_calls": int(calls.filter(~pl.col("priced"))["rows"].sum()) if calls.height else 0,
    }


def over_time(usage: Rolled, stack: str) -> pl.DataFrame:
    grouped = rolled.group(usage.calls, ["day", stack])
    return grouped.with_columns((pl.col("input_tokens") + pl.col("output_tokens")).alias("tokens")).select(
        "day", pl.col(stack).alias("stack"), "cost_usd", "tokens", "calls"
    )


def tokens_by_type(usage: Rolled) -> pl.DataFrame:
    calls = usage.calls
    sums = {c: int(calls[c].sum()) if calls.height else 0 for c in TOKEN_COLUMNS}
    rows = [
        ("input (uncached)", sums["input_tokens"] - sums["cache_read_tokens"] - sums["cache_write_tokens"]),
        ("cache read", sums["cache_read_tokens"]),
        ("cache write", sums["cache_write_tokens"]),
        ("output", sums["output_tokens"] - sums["reasoning_tokens"]),
        ("reasoning", sums["reasoning_tokens"]),
    ]
    return pl.DataFrame(rows, schema={"type": pl.String, "tokens": pl.Int64}, orient="row")


def sessions(usage: Rolled) -> pl.DataFrame:
    calls = usage.calls.filter(pl.col("session").is_not_null())
    grouped = rolled.group(calls, ["session", "agent", "user"])
    return grouped.sort("cost_usd", descending=True, nulls_last=True).head(100)


def tools(usage: Rolled) -> pl.DataFrame:
    activity = usage.activity.filter(pl.col("kind").is_in(["tool_call", "tool_decision"]))
    if not activity.height:
        return pl.DataFrame(
            schema={
                "tool": pl.String,
                "calls": pl.Int64,
                "success_rate": pl.Float64,
                "decisions": pl.Int64,
                "accept_rate": pl.Float64,
            }
        )
    rows = pl.col("rows")
    is_call = pl.col("kind") == "tool_call"
    decided = pl.col("decision").is_not_null()
    return (
        activity.group_by("tool")
        .agg(
            rows.filter(is_call).sum().cast(pl.Int64).alias("calls"),
            (rows.filter(is_call & pl.col("success").fill_null(False)).sum() / rows.filter(is_call).sum()).alias(
                "success_rate"
            ),
            rows.filter(decided).sum().cast(pl.Int64).alias("decisions"),
            (rows.filter(pl.col("decision") == "accept").sum() / rows.filter(decided).sum()).alias("accept_rate"),
        )
        .sort("calls", descending=True)
    )


def errors(usage: Rolled) -> pl.DataFrame:
    rows = usage.activity.filter(pl.col("kind") == "api_error")
    return (
        rows.group_by("day", "agent", "status_code")
        .agg(pl.col("rows").sum().cast(pl.Int64).alias("errors"))
        .sort("day", "agent", "status_code", nulls_last=True)
    )


def latency(usage: Rolled) -> pl.DataFrame:
    durations = usage.calls.select("agent", "model", pl.col("durations").alias("duration_ms")).explode("duration_ms")
    return (
        durations.filter(pl.col("duration_ms").is_not_null())
        .group_by("agent", "model")
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            pl.col("duration_ms").quantile(0.5, "linear").alias("p50_ms"),
            pl.col("duration_ms").quantile(0.95, "linear").alias("p95_ms"),
            pl.col("duration_ms").quantile(0.99, "linear").alias("p99_ms"),
        )
        .sort("agent", "model", nulls_last=True)
    )


def panel(usage: Rolled, name: str, stack: str = "agent") -> list[dict[str, Any]]:
    """One panel's rows (``totals`` is one row)."""
    if name == "totals":
        return [totals(usage)]
    frames = {
        "over_time": lambda: over_time(usage, stack),
        "tokens_by_type": lambda: tokens_by_type(usage),
        "by_user": lambda: _leaderboard(usage.calls, "user"),
        "by_model": lambda: _leaderboard(usage.calls, "model"),
        "by_agent": lambda: _leaderboard(usage.calls, "agent"),
        "sessions": lambda: sessions(usage),
        "tools": lambda: tools(usage),
        "errors": lambda: errors(usage),
        "latency": lambda: latency(usage),
        "mismatches": lambda: usage.mismatches,
        "unpriced": lambda: rolled.unpriced_models(usage.calls),
        # The underlying rows: facts, newest first, read from the newest days until enough.
        "calls": lambda: usage.detail_rows("model_calls", ROW_LIMIT),
        "activity": lambda: usage.detail_rows("activity", ROW_LIMIT),
    }
    if name not in frames:
        raise KeyError(name)
    return records(frames[name]())


def summary(usage: Rolled, stack: str) -> dict[str, Any]:
    return {name: panel(usage, name, stack) if name != "totals" else totals(usage) for name in PANELS}
