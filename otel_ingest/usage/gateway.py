"""The AI gateway's usage table as a source of model calls, and the rule that counts a call
seen by both the gateway and an agent's telemetry once (docs/usage.md, "The gateway").

The gateway (``otel_ingest.gateway``) writes one row per call to its usage table, tokens
already in the canonical counting (input includes cache, output includes reasoning). Those
rows become model calls with ``source = "gateway"``; the gateway is the source of truth for
the calls it saw. A call the agent also reported in its telemetry is matched and the
telemetry copy is dropped:

* per-call telemetry (``logs``, ``spans``): same agent, same model, the same input, output
  and cache-read tokens (both copied from the same provider response), and the same session
  where both sides know it (Claude Code's ``x-claude-code-session-id`` = ``session.id``,
  Codex's ``session-id`` = ``conversation.id``; Gemini CLI sends none), within
  ``MATCH_SECONDS`` of each other; one gateway row matches at most one telemetry row
  (identical calls pair up in time order);
* aggregated telemetry (``metrics``, one row per export interval): cannot be matched call
  by call; an interval row is dropped when the gateway has calls of the same agent, model
  and day (and session, where both know it).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from otel_ingest.usage import derive
from otel_ingest.usage.agents import CLAUDE_CODE, CODEX, GEMINI_CLI

# The gateway's table property (otel_ingest.gateway.tables.SCHEMA_PROPERTY) and the columns
# that tell its usage table from its inference table.
GATEWAY_PROPERTY = "otel_ingest.gateway.schemaVersion"
USAGE_COLUMNS = frozenset({"request_id", "event_time", "destination_model", "input_tokens", "requester"})
# A gateway row and its telemetry copy: the agent logs its event when the response ends,
# the gateway stamps the request's arrival; a model call rarely lasts longer.
MATCH_SECONDS = 60
# The gateway's agent names (from the user agent) → the usage model's.
AGENTS = {"claude_code": CLAUDE_CODE, "gemini_cli": GEMINI_CLI, "codex": CODEX, "cursor": "cursor"}
# Calls that are not model calls (no generation, nothing billed as output).
NOT_CALLS = ("count_tokens",)
TELEMETRY = ("logs", "spans", "metrics")
_MATCH_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens")


def is_usage_table(configuration: Mapping[str, str | None], columns: set[str]) -> bool:
    """A Delta table written by the gateway as its usage table."""
    return GATEWAY_PROPERTY in configuration and columns >= USAGE_COLUMNS


def _agent(agent: pl.Expr, route: pl.Expr) -> pl.Expr:
    """The gateway's agent, in the usage model's names. Cursor's user agent is not
    documented; its route ``/cursor/v1`` is, so calls there are Cursor's."""
    known = agent.replace_strict(AGENTS, default=None)
    return (
        pl.when(known.is_not_null())
        .then(known)
        .when(route.str.starts_with("/cursor/"))
        .then(pl.lit("cursor"))
        .otherwise(agent.fill_null("unknown"))
    )


def from_gateway(raw: pl.DataFrame, context: derive.Context) -> pl.DataFrame:
    """Model calls from rows of the gateway's usage table (the table's name is the
    calls' ``table_set``). Refused calls without usage are not model calls; calls whose
    stream broke after usage arrived are, with ``success = false``."""
    if not raw.height:
        return derive.empty(derive.MODEL_CALLS)
    status = pl.col("status_code")
    tokens = pl.col("input_tokens").fill_null(0) + pl.col("output_tokens").fill_null(0)
    frame = raw.filter(~pl.col("api_type").is_in(NOT_CALLS).fill_null(False) & (tokens > 0))
    if not frame.height:
        return derive.empty(derive.MODEL_CALLS)
    ended = pl.col("event_time").dt.convert_time_zone("UTC").dt.cast_time_unit("us") + pl.duration(
        milliseconds=pl.col("latency_ms").fill_null(0)
    )
    calls = frame.select(
        pl.concat_str(pl.lit(context.source_table), pl.col("request_id"), separator=":").alias("fact_id"),
        ended.alias("time"),
        pl.lit(context.table_set).alias("table_set"),
        _agent(pl.col("agent"), pl.col("route")).alias("agent"),
        pl.col("requester").alias("user"),
        pl.col("session_id").alias("session"),
        derive.model_expr(pl.col("destination_model")).alias("model"),
        pl.col("destination_model").alias("model_reported"),
        pl.lit(1, pl.Int64).alias("calls"),
        pl.col("input_tokens").fill_null(0).alias("input_tokens"),
        pl.col("cache_read_input_tokens").fill_null(0).alias("cache_read_tokens"),
        pl.col("cache_creation_input_tokens").fill_null(0).alias("cache_write_tokens"),
        pl.col("output_tokens").fill_null(0).alias("output_tokens"),
        pl.col("reasoning_output_tokens").fill_null(0).alias("reasoning_tokens"),
        # The gateway priced the call with its endpoint's prices or genai-prices; a call it
        # could not price is priced by the usage model (price overrides included).
        pl.col("cost_usd"),
        pl.when(pl.col("cost_usd").is_not_null()).then(pl.lit("estimated")).alias("cost_source"),
        pl.col("latency_ms").cast(pl.Float64).alias("duration_ms"),
        ((status >= 200) & (status < 300) & pl.col("error").is_null()).fill_null(False).alias("success"),
        status.cast(pl.String).alias("status_code"),
        pl.lit("gateway").alias("source"),
        pl.lit(context.source_table).alias("source_table"),
    ).with_columns(pl.col("time").dt.strftime("%Y-%m-%d").alias("day"))
    return derive._finish(calls, derive.MODEL_CALLS)


def _session_key(frame: pl.DataFrame) -> pl.Expr:
    """The session both sides know: Claude Code and Codex send it to the gateway."""
    return pl.when(pl.col("agent").is_in([CLAUDE_CODE, CODEX])).then(pl.col("session"))


def deduplicate(gateway: pl.DataFrame, telemetry: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(telemetry calls the gateway did not see, gateway rows with the session and user
    the telemetry adds where the gateway had none). See the module's matching rule."""
    if not gateway.height or not telemetry.height:
        return telemetry, gateway
    per_call = telemetry.filter(pl.col("source") != "metrics").with_row_index("_t")
    keys = ["agent", "model", *_MATCH_TOKENS, "_session"]
    left = per_call.select("_t", *keys[:-1], _session_key(per_call).alias("_session"), pl.col("time").alias("_tt"))
    right = gateway.with_row_index("_g").select(
        "_g", *keys[:-1], _session_key(gateway).alias("_session"), pl.col("time").alias("_gt")
    )
    # Identical calls (same tokens, same session) pair up in time order: the n-th telemetry
    # copy with the n-th gateway row. A pair further apart than MATCH_SECONDS is no match.
    left = left.sort("_tt").with_columns(pl.int_range(pl.len()).over(keys).alias("_n"))
    right = right.sort("_gt").with_columns(pl.int_range(pl.len()).over(keys).alias("_n"))
    pairs = left.join(right, on=[*keys, "_n"], how="inner", nulls_equal=True).filter(
        (pl.col("_tt") - pl.col("_gt")).abs() <= pl.duration(seconds=MATCH_SECONDS)
    )
    matched = per_call.join(pairs.select("_t", "_g"), on="_t", how="inner")
    remaining = per_call.join(pairs.select("_t"), on="_t", how="anti").drop("_t")
    # The gateway knows no session for Gemini CLI and names the principal, not the person's
    # telemetry id: fill what it lacks from its telemetry copy.
    enrich = matched.select("_g", pl.col("session").alias("_ts"))
    gateway = (
        gateway.with_row_index("_g")
        .join(enrich, on="_g", how="left")
        .with_columns(pl.coalesce("session", "_ts").alias("session"))
        .drop("_g", "_ts")
    )
    # Aggregated metrics rows: dropped where the gateway has calls of the same agent,
    # model and day (and session, where both know it).
    metrics = telemetry.filter(pl.col("source") == "metrics")
    if metrics.height:
        seen = gateway.select("agent", "model", "day", pl.col("session").alias("_gs")).unique()
        covered = (
            metrics.with_row_index("_m")
            .join(seen, on=["agent", "model", "day"], how="inner", nulls_equal=True)
            .filter(pl.col("session").is_null() | pl.col("_gs").is_null() | (pl.col("session") == pl.col("_gs")))
            .select("_m")
            .unique()
        )
        metrics = metrics.with_row_index("_m").join(covered, on="_m", how="anti").drop("_m")
    return pl.concat([remaining, metrics], how="vertical_relaxed"), gateway
