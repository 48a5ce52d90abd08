"""Raw OTLP rows → normalized usage facts (docs/usage.md has the rules, column by column).

Three frames come out of a batch of raw rows:

* **model calls** (``MODEL_CALLS``): one row per call from log events (``source = logs``)
  or GenAI spans (``spans``), and one row per metric export interval and series from
  token metrics (``metrics``). Readers use one source per (table set, agent, day): logs,
  else spans, else metrics; the metrics are a cross-check where both exist.
* **activity** (``ACTIVITY``): prompts, tool decisions and calls, API errors, lines of
  code, commits, pull requests, active time.
* **points** (``POINTS``): the last value of each CUMULATIVE series (Gemini CLI), so the
  next refresh turns the next value into an increase without re-reading history.

Canonical counting: ``input_tokens`` includes cache reads and writes, ``output_tokens``
includes reasoning. Each agent's own counting is converted here and nowhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from otel_ingest.usage.agents import CLAUDE_CODE, CODEX, GEMINI_CLI

TIME = pl.Datetime("us", "UTC")
MODEL_CALLS: dict[str, pl.DataType] = {
    "fact_id": pl.String(),
    "time": TIME,
    "day": pl.String(),
    "table_set": pl.String(),
    "agent": pl.String(),
    "user": pl.String(),
    "session": pl.String(),
    "model": pl.String(),
    "model_reported": pl.String(),
    "calls": pl.Int64(),
    "input_tokens": pl.Int64(),
    "cache_read_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "cost_source": pl.String(),
    "duration_ms": pl.Float64(),
    "success": pl.Boolean(),
    "status_code": pl.String(),
    "source": pl.String(),
    "source_table": pl.String(),
}
ACTIVITY: dict[str, pl.DataType] = {
    "fact_id": pl.String(),
    "time": TIME,
    "day": pl.String(),
    "table_set": pl.String(),
    "agent": pl.String(),
    "user": pl.String(),
    "session": pl.String(),
    "model": pl.String(),
    "kind": pl.String(),
    "tool": pl.String(),
    "decision": pl.String(),
    "success": pl.Boolean(),
    "duration_ms": pl.Float64(),
    "value": pl.Float64(),
    "status_code": pl.String(),
    "source": pl.String(),
    "source_table": pl.String(),
}
POINTS: dict[str, pl.DataType] = {
    "series_id": pl.String(),
    "start_ns": pl.Int64(),
    "time_ns": pl.Int64(),
    "value": pl.Float64(),
    "count": pl.Int64(),
    "day": pl.String(),
    "source_table": pl.String(),
}
TOKEN_COLUMNS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
CUMULATIVE = "AGGREGATION_TEMPORALITY_CUMULATIVE"


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _blake2b(texts: pl.Series) -> pl.Series:
    memo: dict[str | None, str] = {}
    out = []
    for text in texts.to_list():
        digest = memo.get(text)
        if digest is None:
            digest = hashlib.blake2b((text or "").encode("utf-8"), digest_size=16).hexdigest()
            memo[text] = digest
        out.append(digest)
    return pl.Series(out, dtype=pl.String)


def stable_digest(column: pl.Expr) -> pl.Expr:
    """A MAP column's entries, in their stored order, as a blake2b digest (32 hex digits).

    Fact and series ids are stored and compared across refreshes, processes and versions:
    ``Expr.hash()`` is documented as stable only within one polars version, so a polars
    upgrade would give every record a new id (the anti-join would keep resent records
    twice, and a CUMULATIVE series would restart from zero). blake2b is specified (RFC 7693).
    Key and value are separated by U+001F, entries by U+001E; a null value is U+0000."""
    entry = pl.element().struct.field("key") + "\x1f" + pl.element().struct.field("value").fill_null("\x00")
    text = column.list.eval(entry).list.join("\x1e")
    return text.map_batches(_blake2b, return_dtype=pl.String)


def _entries(column: pl.Expr) -> pl.Expr:
    return column.map.entries()


def _get(entries: str, key: str) -> pl.Expr:
    """The value of ``key`` in a MAP column turned into entries (faster than map.get)."""
    return (
        pl.col(entries)
        .list.eval(pl.element().filter(pl.element().struct.field("key") == key).struct.field("value"))
        .list.first()
    )


def _int(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Float64, strict=False).round(0).cast(pl.Int64)


def _float(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Float64, strict=False)


def agent_expr(service: pl.Expr) -> pl.Expr:
    """``agents.agent_of`` as a polars expression."""
    lowered = service.str.to_lowercase().str.strip_chars()
    return (
        pl.when(lowered.str.starts_with("claude-code") | lowered.str.starts_with("claude_code"))
        .then(pl.lit(CLAUDE_CODE))
        .when(lowered.str.starts_with("gemini-cli") | lowered.str.starts_with("gemini_cli"))
        .then(pl.lit(GEMINI_CLI))
        .when(lowered.str.starts_with("codex"))
        .then(pl.lit(CODEX))
        .otherwise(service.str.strip_chars())
        .fill_null("unknown")
    )


def model_expr(model: pl.Expr) -> pl.Expr:
    """``agents.normalize_model`` as a polars expression."""
    return (
        model.str.strip_chars()
        .str.to_lowercase()
        .str.replace(r"\[[^\]]*\]$", "")
        .str.replace(r"^models/", "")
        .replace("", None)
    )


def _time(ns: pl.Expr) -> pl.Expr:
    return pl.from_epoch(ns, time_unit="ns").dt.cast_time_unit("us").dt.replace_time_zone("UTC")


def _day(time: pl.Expr) -> pl.Expr:
    return time.dt.strftime("%Y-%m-%d")


def _user(entries: str, resource: str) -> pl.Expr:
    return pl.coalesce(
        _get(entries, "user.email"),
        _get(entries, "user.id"),
        _get(resource, "user.email"),
        _get(resource, "user.id"),
        _get(entries, "installation.id"),
        _get(resource, "enduser.id"),
        _get(entries, "enduser.id"),
    )


def _session(entries: str, resource: str) -> pl.Expr:
    return pl.coalesce(
        _get(entries, "session.id"),
        _get(resource, "session.id"),
        _get(entries, "conversation.id"),
        _get(entries, "gen_ai.conversation.id"),
    )


@dataclass(frozen=True)
class Context:
    """Where a batch of raw rows comes from."""

    table_set: str
    source_table: str


def _finish(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


# ---------------------------------------------------------------------------- logs

# Event names after the agent prefix (claude_code. / gemini_cli. / codex.) is removed.
_LOG_EVENTS = (
    "api_request",
    "api_response",
    "sse_event",
    "api_error",
    "user_prompt",
    "tool_decision",
    "tool_result",
    "tool_call",
    "gen_ai.client.inference.operation.details",
)


def _log_base(raw: pl.DataFrame, context: Context) -> pl.DataFrame:
    """Rows of interest with their common columns; attributes kept as entries."""
    frame = raw.lazy().select(
        pl.when(pl.col("time_unix_nano") > 0)
        .then(pl.col("time_unix_nano"))
        .otherwise(pl.col("observed_time_unix_nano"))
        .alias("time_ns"),
        pl.col("observed_time_unix_nano"),
        _entries(pl.col("attributes")).alias("a"),
        _entries(pl.col("resource").struct.field("attributes")).alias("r"),
        stable_digest(_entries(pl.col("attributes"))).alias("attributes_hash"),
    )
    frame = frame.with_columns(
        pl.coalesce(_get("a", "event.name")).str.replace(r"^(claude_code|gemini_cli|codex)\.", "").alias("event")
    ).filter(pl.col("event").is_in(_LOG_EVENTS))
    frame = frame.with_columns(
        agent_expr(_get("r", "service.name")).alias("agent"),
        _time(pl.col("time_ns")).alias("time"),
        _user("a", "r").alias("user"),
        _session("a", "r").alias("session"),
        pl.coalesce(_get("a", "model"), _get("a", "gen_ai.response.model"), _get("a", "gen_ai.request.model")).alias(
            "model_reported"
        ),
        pl.lit(context.table_set).alias("table_set"),
        pl.lit(context.source_table).alias("source_table"),
        pl.concat_str(
            pl.lit(context.source_table),
            pl.col("time_ns").cast(pl.String),
            pl.col("observed_time_unix_nano").cast(pl.String).fill_null(""),
            pl.col("attributes_hash").cast(pl.String),
            separator=":",
        ).alias("fact_id"),
    )
    return frame.with_columns(
        model_expr(pl.col("model_reported")).alias("model"), _day(pl.col("time")).alias("day")
    ).collect()


def _calls_from_logs(base: pl.DataFrame) -> pl.DataFrame:
    agent, event = pl.col("agent"), pl.col("event")
    claude = base.filter((agent == CLAUDE_CODE) & (event == "api_request")).with_columns(
        (
            _int(_get("a", "input_tokens")).fill_null(0)
            + _int(_get("a", "cache_read_tokens")).fill_null(0)
            + _int(_get("a", "cache_creation_tokens")).fill_null(0)
        ).alias("input_tokens"),
        _int(_get("a", "cache_read_tokens")).fill_null(0).alias("cache_read_tokens"),
        _int(_get("a", "cache_creation_tokens")).fill_null(0).alias("cache_write_tokens"),
        _int(_get("a", "output_tokens")).fill_null(0).alias("output_tokens"),
        pl.lit(0, pl.Int64).alias("reasoning_tokens"),
        _float(_get("a", "cost_usd")).alias("cost_usd"),
        _float(_get("a", "duration_ms")).alias("duration_ms"),
        pl.lit(None, pl.String).alias("status_code"),
    )
    gemini = base.filter((agent == GEMINI_CLI) & (event == "api_response")).with_columns(
        # prompt tokens include cached ones; tool-use prompt tokens are billed as input.
        (_int(_get("a", "input_token_count")).fill_null(0) + _int(_get("a", "tool_token_count")).fill_null(0)).alias(
            "input_tokens"
        ),
        _int(_get("a", "cached_content_token_count")).fill_null(0).alias("cache_read_tokens"),
        pl.lit(0, pl.Int64).alias("cache_write_tokens"),
        # candidates exclude thoughts, which are billed as output.
        (
            _int(_get("a", "output_token_count")).fill_null(0) + _int(_get("a", "thoughts_token_count")).fill_null(0)
        ).alias("output_tokens"),
        _int(_get("a", "thoughts_token_count")).fill_null(0).alias("reasoning_tokens"),
        pl.lit(None, pl.Float64).alias("cost_usd"),
        _float(_get("a", "duration_ms")).alias("duration_ms"),
        pl.coalesce(_get("a", "status_code"), _get("a", "http.status_code")).alias("status_code"),
    )
    codex = base.filter(
        (agent == CODEX)
        & (event == "sse_event")
        & (_get("a", "event.kind") == "response.completed")
        & _get("a", "input_token_count").is_not_null()
    ).with_columns(
        _int(_get("a", "input_token_count")).fill_null(0).alias("input_tokens"),
        _int(_get("a", "cached_token_count")).fill_null(0).alias("cache_read_tokens"),
        _int(_get("a", "cache_write_token_count")).fill_null(0).alias("cache_write_tokens"),
        _int(_get("a", "output_token_count")).fill_null(0).alias("output_tokens"),
        _int(_get("a", "reasoning_token_count")).fill_null(0).alias("reasoning_tokens"),
        pl.lit(None, pl.Float64).alias("cost_usd"),
        pl.lit(None, pl.Float64).alias("duration_ms"),
        pl.lit(None, pl.String).alias("status_code"),
    )
    codex = _codex_durations(base, codex)
    # Any other service following the GenAI semantic conventions (Gemini CLI repeats its
    # api_response in such an event: counted once, from api_response).
    genai = base.filter(
        ~agent.is_in([CLAUDE_CODE, GEMINI_CLI, CODEX]) & _get("a", "gen_ai.usage.input_tokens").is_not_null()
    ).with_columns(
        *_genai_tokens("a"), pl.lit(None, pl.Float64).alias("duration_ms"), pl.lit(None, pl.String).alias("status_code")
    )
    frames = [f for f in (claude, gemini, codex, genai) if f.height]
    if not frames:
        return empty(MODEL_CALLS)
    calls = pl.concat([f.drop("a", "r", "attributes_hash", strict=False) for f in frames], how="diagonal_relaxed")
    calls = calls.with_columns(
        pl.lit(1, pl.Int64).alias("calls"),
        pl.when(pl.col("cost_usd").is_not_null()).then(pl.lit("reported")).alias("cost_source"),
        (pl.col("status_code").is_null() | pl.col("status_code").str.starts_with("2")).alias("success"),
        pl.lit("logs").alias("source"),
    )
    return _finish(calls, MODEL_CALLS)


def _genai_tokens(entries: str) -> list[pl.Expr]:
    """GenAI semantic conventions: input includes cached tokens, output reasoning."""
    return [
        _int(_get(entries, "gen_ai.usage.input_tokens")).fill_null(0).alias("input_tokens"),
        _int(_get(entries, "gen_ai.usage.cache_read.input_tokens")).fill_null(0).alias("cache_read_tokens"),
        _int(_get(entries, "gen_ai.usage.cache_creation.input_tokens")).fill_null(0).alias("cache_write_tokens"),
        _int(_get(entries, "gen_ai.usage.output_tokens")).fill_null(0).alias("output_tokens"),
        _int(_get(entries, "gen_ai.usage.reasoning.output_tokens")).fill_null(0).alias("reasoning_tokens"),
        pl.lit(None, pl.Float64).alias("cost_usd"),
    ]


def _codex_durations(base: pl.DataFrame, completed: pl.DataFrame) -> pl.DataFrame:
    """Codex logs the HTTP request (duration, status) and the usage in separate events:
    each response.completed takes the latest api_request of its conversation before it."""
    if not completed.height:
        return completed
    requests = base.filter((pl.col("agent") == CODEX) & (pl.col("event") == "api_request")).select(
        pl.col("session"),
        pl.col("time_ns"),
        _float(_get("a", "duration_ms")).alias("request_duration_ms"),
        pl.coalesce(_get("a", "http.response.status_code"), _get("a", "status")).alias("request_status"),
    )
    if not requests.height:
        return completed
    joined = completed.sort("time_ns").join_asof(
        requests.sort("time_ns"), on="time_ns", by="session", strategy="backward", check_sortedness=False
    )
    return joined.with_columns(
        pl.col("request_duration_ms").alias("duration_ms"), pl.col("request_status").alias("status_code")
    ).drop("request_duration_ms", "request_status")


def _activity_from_logs(base: pl.DataFrame) -> pl.DataFrame:
    agent, event = pl.col("agent"), pl.col("event")
    tool = pl.coalesce(_get("a", "tool_name"), _get("a", "function_name"), _get("a", "tool"))
    success = _get("a", "success").str.to_lowercase().is_in(["true", "1"])
    status = pl.coalesce(_get("a", "status_code"), _get("a", "http.response.status_code"), _get("a", "status"))
    parts = [
        base.filter(event == "user_prompt").with_columns(pl.lit("prompt").alias("kind")),
        base.filter(event == "tool_decision").with_columns(
            pl.lit("tool_decision").alias("kind"), tool.alias("tool"), _get("a", "decision").alias("decision")
        ),
        base.filter(event.is_in(["tool_result", "tool_call"])).with_columns(
            pl.lit("tool_call").alias("kind"),
            tool.alias("tool"),
            _get("a", "decision").alias("decision"),
            success.alias("success"),
            _float(_get("a", "duration_ms")).alias("duration_ms"),
        ),
        base.filter(event == "api_error").with_columns(
            pl.lit("api_error").alias("kind"), status.alias("status_code"), pl.lit(False).alias("success")
        ),
        # Codex logs every HTTP request; the failed ones are its API errors.
        base.filter((agent == CODEX) & (event == "api_request"))
        .with_columns(status.alias("status_code"), pl.lit("api_error").alias("kind"), pl.lit(False).alias("success"))
        .filter(~pl.col("status_code").fill_null("200").str.starts_with("2")),
    ]
    frames = [p for p in parts if p.height]
    if not frames:
        return empty(ACTIVITY)
    activity = pl.concat([f.drop("a", "r", "attributes_hash", strict=False) for f in frames], how="diagonal_relaxed")
    activity = activity.with_columns(pl.lit(1.0).alias("value"), pl.lit("logs").alias("source"))
    return _finish(activity, ACTIVITY)


def from_logs(raw: pl.DataFrame, context: Context) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(model calls, activity) from raw ``*_otel_logs`` rows."""
    if not raw.height:
        return empty(MODEL_CALLS), empty(ACTIVITY)
    base = _log_base(raw, context)
    if not base.height:
        return empty(MODEL_CALLS), empty(ACTIVITY)
    return _calls_from_logs(base), _activity_from_logs(base)


# --------------------------------------------------------------------------- spans


def from_spans(raw: pl.DataFrame, context: Context) -> pl.DataFrame:
    """Model calls from GenAI client spans of services other than the three agents
    (their spans repeat what their logs say)."""
    if not raw.height:
        return empty(MODEL_CALLS)
    frame = (
        raw.lazy()
        .select(
            pl.col("start_time_unix_nano").alias("time_ns"),
            ((pl.col("end_time_unix_nano") - pl.col("start_time_unix_nano")) / 1e6).alias("duration_ms"),
            pl.col("span_id"),
            pl.col("trace_id"),
            pl.col("status").struct.field("code").alias("status"),
            _entries(pl.col("attributes")).alias("a"),
            _entries(pl.col("resource").struct.field("attributes")).alias("r"),
        )
        .filter(
            _get("a", "gen_ai.usage.input_tokens").is_not_null() | _get("a", "gen_ai.usage.output_tokens").is_not_null()
        )
    )
    frame = frame.with_columns(agent_expr(_get("r", "service.name")).alias("agent")).filter(
        ~pl.col("agent").is_in([CLAUDE_CODE, GEMINI_CLI, CODEX])
    )
    calls = frame.with_columns(
        *_genai_tokens("a"),
        _time(pl.col("time_ns")).alias("time"),
        _user("a", "r").alias("user"),
        _session("a", "r").alias("session"),
        pl.coalesce(_get("a", "gen_ai.response.model"), _get("a", "gen_ai.request.model")).alias("model_reported"),
        pl.lit(context.table_set).alias("table_set"),
        pl.lit(context.source_table).alias("source_table"),
        pl.concat_str(pl.lit(context.source_table), pl.col("trace_id"), pl.col("span_id"), separator=":").alias(
            "fact_id"
        ),
        pl.lit(1, pl.Int64).alias("calls"),
        (pl.col("status") != "STATUS_CODE_ERROR").fill_null(True).alias("success"),
        _get("a", "http.response.status_code").alias("status_code"),
        pl.lit("spans").alias("source"),
    ).collect()
    calls = calls.with_columns(model_expr(pl.col("model_reported")).alias("model"), _day(pl.col("time")).alias("day"))
    return _finish(calls, MODEL_CALLS)


# ------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class TokenMetric:
    """A metric that carries tokens, one data point per token type."""

    type_key: str
    types: dict[str, str]  # the agent's type → input / cache_read / cache_write / output / reasoning / tool
    input_includes_cache: bool
    output_includes_reasoning: bool
    agents: tuple[str, ...] | None  # None: any agent but the three named ones


TOKEN_METRICS = {
    "claude_code.token.usage": TokenMetric(
        "type",
        {"input": "input", "output": "output", "cacheRead": "cache_read", "cacheCreation": "cache_write"},
        input_includes_cache=False,
        output_includes_reasoning=True,
        agents=(CLAUDE_CODE,),
    ),
    "gemini_cli.token.usage": TokenMetric(
        "type",
        {"input": "input", "output": "output", "cache": "cache_read", "thought": "reasoning", "tool": "tool"},
        input_includes_cache=True,
        output_includes_reasoning=False,
        agents=(GEMINI_CLI,),
    ),
    "codex.turn.token_usage": TokenMetric(
        "token_type",
        {
            "input": "input",
            "cached_input": "cache_read",
            "cache_write_input": "cache_write",
            "output": "output",
            "reasoning_output": "reasoning",
        },
        input_includes_cache=True,
        output_includes_reasoning=True,
        agents=(CODEX,),
    ),
    "gen_ai.client.token.usage": TokenMetric(
        "gen_ai.token.type",
        {"input": "input", "output": "output"},
        input_includes_cache=True,
        output_includes_reasoning=True,
        agents=None,
    ),
}
COST_METRIC = "claude_code.cost.usage"
# metric → (activity kind, or a map from its ``type`` attribute to kinds)
ACTIVITY_METRICS: dict[str, str | dict[str, str]] = {
    "claude_code.lines_of_code.count": {"added": "lines_added", "removed": "lines_removed"},
    "gemini_cli.lines.changed": {"added": "lines_added", "removed": "lines_removed"},
    "claude_code.commit.count": "commit",
    "claude_code.pull_request.count": "pull_request",
    "claude_code.active_time.total": "active_seconds",
}


@dataclass(frozen=True)
class EventMetric:
    """A metric that counts what the agent's events also log: the fallback for tool
    decisions, tool calls and API errors where the logs are absent (CLIENTS.md)."""

    kind: str
    tool: str | None = None  # attribute names
    decision: str | None = None
    success: str | None = None
    status: str | None = None
    errors_only: bool = False  # only points of failed requests (status not 2xx, success false)
    per_event: float = 1.0  # how many the metric counts per event


EVENT_METRICS = {
    # Claude Code counts decisions on its edit tools (Write, Edit, ...), not tool results.
    "claude_code.code_edit_tool.decision": EventMetric("tool_decision", tool="tool_name", decision="decision"),
    "gemini_cli.tool.call.count": EventMetric(
        "tool_call", tool="function_name", decision="decision", success="success"
    ),
    "codex.tool.call": EventMetric("tool_call", tool="tool", success="success"),
    # Gemini CLI's request counter counts each failed call twice (CLIENTS.md).
    "gemini_cli.api.request.count": EventMetric("api_error", status="status_code", errors_only=True, per_event=2.0),
    "codex.api_request": EventMetric("api_error", status="status", success="success", errors_only=True),
}
# Activity kinds the event metrics stand in for: counted from metrics only where the
# agent's logs are absent (query.select_activity).
EVENT_KINDS = ("tool_decision", "tool_call", "api_error")
_METRIC_NAMES = [*TOKEN_METRICS, COST_METRIC, *ACTIVITY_METRICS, *EVENT_METRICS]


def _metric_points(raw: pl.DataFrame, context: Context) -> pl.DataFrame:
    """Sum and histogram points of the metrics that matter, one row each."""
    frame = raw.lazy().filter(pl.col("name").is_in(_METRIC_NAMES))

    def field(name: str) -> pl.Expr:
        return (
            pl.when(pl.col("metric_type") == "histogram")
            .then(pl.col("histogram").struct.field(name))
            .otherwise(pl.col("sum").struct.field(name))
        )

    frame = frame.filter(pl.col("metric_type").is_in(["sum", "histogram"])).select(
        pl.col("name"),
        field("start_time_unix_nano").alias("start_ns"),
        field("time_unix_nano").alias("time_ns"),
        pl.when(pl.col("metric_type") == "histogram")
        .then(pl.col("histogram").struct.field("sum"))
        .otherwise(pl.col("sum").struct.field("value"))
        .alias("value"),
        pl.when(pl.col("metric_type") == "histogram")
        .then(pl.col("histogram").struct.field("count"))
        .otherwise(pl.lit(None, pl.Int64))
        .alias("count"),
        field("aggregation_temporality").alias("temporality"),
        _entries(field("attributes")).alias("a"),
        _entries(pl.col("resource").struct.field("attributes")).alias("r"),
        stable_digest(_entries(field("attributes"))).alias("attributes_hash"),
        stable_digest(_entries(pl.col("resource").struct.field("attributes"))).alias("resource_hash"),
    )
    frame = frame.with_columns(
        agent_expr(_get("r", "service.name")).alias("agent"),
        _user("a", "r").alias("user"),
        _session("a", "r").alias("session"),
        pl.coalesce(_get("a", "model"), _get("a", "gen_ai.response.model"), _get("a", "gen_ai.request.model")).alias(
            "model_reported"
        ),
        pl.concat_str(
            pl.lit(context.source_table),
            pl.col("name"),
            pl.col("resource_hash").cast(pl.String),
            pl.col("attributes_hash").cast(pl.String),
            separator=":",
        ).alias("series_id"),
    )
    return frame.collect()


def increases(points: pl.DataFrame, previous: pl.DataFrame) -> pl.DataFrame:
    """Turn CUMULATIVE points into increases since the point before in the same series
    (``previous`` holds each series' last point from earlier refreshes). A value below
    the one before, or a new start time, is a counter reset: the increase is the value."""
    cumulative = points.filter(pl.col("temporality") == CUMULATIVE)
    if not cumulative.height:
        return points
    delta = points.filter(pl.col("temporality") != CUMULATIVE)
    before = previous.select(
        "series_id", pl.col("start_ns"), pl.col("time_ns"), pl.col("value"), pl.col("count"), pl.lit(True).alias("_old")
    )
    ordered = pl.concat([before, cumulative.with_columns(pl.lit(False).alias("_old"))], how="diagonal_relaxed").sort(
        "series_id", "time_ns", "_old", descending=[False, False, True]
    )
    # The same point sent twice counts once.
    ordered = ordered.unique(subset=["series_id", "time_ns", "value"], keep="first", maintain_order=True)
    shifted = ordered.with_columns(
        pl.col("value").shift(1).over("series_id").alias("_pv"),
        pl.col("count").shift(1).over("series_id").alias("_pc"),
        pl.col("start_ns").shift(1).over("series_id").alias("_ps"),
    )
    continues = pl.col("_pv").is_not_null() & (pl.col("_ps") == pl.col("start_ns")) & (pl.col("value") >= pl.col("_pv"))
    result = (
        shifted.with_columns(
            pl.when(continues).then(pl.col("value") - pl.col("_pv")).otherwise(pl.col("value")).alias("value"),
            pl.when(continues & pl.col("_pc").is_not_null())
            .then(pl.col("count") - pl.col("_pc"))
            .otherwise(pl.col("count"))
            .alias("count"),
        )
        .filter(~pl.col("_old"))
        .drop("_pv", "_pc", "_ps", "_old")
    )
    return pl.concat([delta, result], how="diagonal_relaxed")


def last_points(points: pl.DataFrame, context: Context) -> pl.DataFrame:
    """Each CUMULATIVE series' latest point, to be stored for the next refresh."""
    cumulative = points.filter(pl.col("temporality") == CUMULATIVE)
    latest = cumulative.sort("time_ns").group_by("series_id").last()
    latest = latest.with_columns(
        _day(_time(pl.col("time_ns"))).alias("day"), pl.lit(context.source_table).alias("source_table")
    )
    return _finish(latest, POINTS)


def _calls_from_metrics(points: pl.DataFrame, context: Context) -> pl.DataFrame:
    frames = []
    keys = ["agent", "user", "session", "model_reported", "time_ns"]
    costs = points.filter(pl.col("name") == COST_METRIC).group_by(keys).agg(pl.col("value").sum().alias("cost_usd"))
    for name, metric in TOKEN_METRICS.items():
        rows = points.filter(pl.col("name") == name)
        if metric.agents is None:
            rows = rows.filter(~pl.col("agent").is_in([CLAUDE_CODE, GEMINI_CLI, CODEX]))
        else:
            rows = rows.filter(pl.col("agent").is_in(list(metric.agents)))
        if not rows.height:
            continue
        rows = rows.with_columns(
            _get("a", metric.type_key).replace_strict(metric.types, default=None).alias("token_type")
        ).filter(pl.col("token_type").is_not_null())
        wide = rows.group_by(keys).agg(
            *[
                pl.col("value").filter(pl.col("token_type") == t).sum().alias(t)
                for t in ("input", "output", "cache_read", "cache_write", "reasoning", "tool")
            ],
            pl.col("count").filter(pl.col("token_type") == "input").sum().alias("input_count"),
        )
        cache = pl.col("cache_read") + pl.col("cache_write")
        wide = wide.with_columns(
            ((pl.col("input") + pl.col("tool")) if metric.input_includes_cache else (pl.col("input") + cache))
            .round(0)
            .cast(pl.Int64)
            .alias("input_tokens"),
            pl.col("cache_read").round(0).cast(pl.Int64).alias("cache_read_tokens"),
            pl.col("cache_write").round(0).cast(pl.Int64).alias("cache_write_tokens"),
            (pl.col("output") if metric.output_includes_reasoning else pl.col("output") + pl.col("reasoning"))
            .round(0)
            .cast(pl.Int64)
            .alias("output_tokens"),
            pl.col("reasoning").round(0).cast(pl.Int64).alias("reasoning_tokens"),
            # Histograms count turns (Codex: one point per turn); sums count nothing.
            pl.when(pl.col("input_count") > 0).then(pl.col("input_count")).otherwise(None).alias("calls"),
            pl.lit(name).alias("metric"),
        )
        frames.append(wide)
    if not frames:
        return empty(MODEL_CALLS)
    calls = pl.concat(frames, how="diagonal_relaxed")
    calls = calls.join(costs, on=keys, how="left", nulls_equal=True)
    calls = calls.with_columns(
        _time(pl.col("time_ns")).alias("time"),
        pl.when(pl.col("cost_usd").is_not_null()).then(pl.lit("reported")).alias("cost_source"),
        model_expr(pl.col("model_reported")).alias("model"),
        pl.lit(context.table_set).alias("table_set"),
        pl.lit(context.source_table).alias("source_table"),
        pl.lit("metrics").alias("source"),
        pl.lit(True).alias("success"),
    ).filter(pl.sum_horizontal(*[pl.col(c) for c in TOKEN_COLUMNS]) > 0)
    calls = calls.with_columns(
        _day(pl.col("time")).alias("day"),
        pl.concat_str(
            pl.lit(context.source_table),
            pl.col("metric"),
            pl.col("time_ns").cast(pl.String),
            pl.col("session").fill_null(""),
            pl.col("user").fill_null(""),
            pl.col("model_reported").fill_null(""),
            separator=":",
        ).alias("fact_id"),
    )
    return _finish(calls, MODEL_CALLS)


def _activity_from_metrics(points: pl.DataFrame, context: Context) -> pl.DataFrame:
    frames = []
    for name, kinds in ACTIVITY_METRICS.items():
        rows = points.filter(pl.col("name") == name)
        if not rows.height:
            continue
        if isinstance(kinds, dict):
            rows = rows.with_columns(_get("a", "type").replace_strict(kinds, default=None).alias("kind"))
        else:
            rows = rows.with_columns(pl.lit(kinds).alias("kind"))
        frames.append(rows.filter(pl.col("kind").is_not_null() & (pl.col("value") != 0)))
    frames += _events_from_metrics(points)
    if not frames:
        return empty(ACTIVITY)
    activity = pl.concat(frames, how="diagonal_relaxed").with_columns(
        _time(pl.col("time_ns")).alias("time"),
        model_expr(pl.col("model_reported")).alias("model"),
        pl.lit(context.table_set).alias("table_set"),
        pl.lit(context.source_table).alias("source_table"),
        pl.lit("metrics").alias("source"),
        pl.concat_str(pl.col("series_id"), pl.col("time_ns").cast(pl.String), separator=":").alias("fact_id"),
    )
    activity = activity.with_columns(_day(pl.col("time")).alias("day"))
    return _finish(activity, ACTIVITY)


def _events_from_metrics(points: pl.DataFrame) -> list[pl.DataFrame]:
    """Tool decisions, tool calls and API errors counted by metrics (EVENT_METRICS)."""
    frames = []
    for name, metric in EVENT_METRICS.items():
        rows = points.filter(pl.col("name") == name)
        if not rows.height:
            continue
        status = _get("a", metric.status) if metric.status else pl.lit(None, pl.String)
        success = (
            _get("a", metric.success).str.to_lowercase().is_in(["true", "1"])
            if metric.success
            else pl.lit(None, pl.Boolean)
        )
        rows = rows.with_columns(
            pl.lit(metric.kind).alias("kind"),
            (_get("a", metric.tool) if metric.tool else pl.lit(None, pl.String)).alias("tool"),
            (_get("a", metric.decision) if metric.decision else pl.lit(None, pl.String)).alias("decision"),
            status.alias("status_code"),
            success.alias("success"),
            # A histogram counts events in ``count``; a sum in its value.
            (pl.coalesce(pl.col("count").cast(pl.Float64), pl.col("value")) / metric.per_event).alias("value"),
        )
        if metric.errors_only:
            failed = ~pl.col("status_code").fill_null("200").str.starts_with("2") | ~pl.col("success").fill_null(True)
            rows = rows.filter(failed).with_columns(pl.lit(False).alias("success"))
        frames.append(rows.filter(pl.col("value") != 0))
    return frames


def from_metrics(
    raw: pl.DataFrame, context: Context, previous: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(model calls, activity, last cumulative points) from raw ``*_otel_metrics`` rows."""
    if not raw.height:
        return empty(MODEL_CALLS), empty(ACTIVITY), empty(POINTS)
    points = _metric_points(raw, context)
    if not points.height:
        return empty(MODEL_CALLS), empty(ACTIVITY), empty(POINTS)
    latest = last_points(points, context)
    points = increases(points, previous if previous is not None else empty(POINTS))
    return _calls_from_metrics(points, context), _activity_from_metrics(points, context), latest
