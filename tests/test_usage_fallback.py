"""Metrics fallback for tool decisions, tool calls and API errors (CLIENTS.md says which
metric counts what): the same activity sent once as the agents' log events and once as
their metrics gives the same totals, and where both exist the events count once.

Claude Code: its real captures (``cc_tool``: an accepted Write), logs into one table set,
metrics into another. Gemini CLI and Codex: their real resources and event attributes
(gemini_hello, codex_hello) with tool calls and failed requests, as the events and as the
metrics CLIENTS.md names for them (Gemini's request counter counts a failed call twice)."""

from __future__ import annotations

import json
import time
from typing import Any

import polars as pl
import pytest
from test_usage_gateway import _document, _records

from otel_ingest.tables import Warehouse
from otel_ingest.usage import query
from otel_ingest.usage.store import UsageStore
from support import Server, load_captures

KINDS = ("tool_decision", "tool_call", "api_error")
# Designed activity: (agent, kind, tool, decision, success, status) → events.
GEMINI_TOOLS = [("read_file", "accept", True, 2), ("run_shell_command", "accept", False, 1)]
GEMINI_ERRORS = [("429", 2), ("503", 1)]
CODEX_TOOLS = [("shell", True, 3), ("apply_patch", False, 1)]
CODEX_ERRORS = [("500", 1)]


def _string(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": str(value).lower() if isinstance(value, bool) else str(value)}}


def _logs(resource: dict[str, Any], events: list[list[dict[str, Any]]], now: int) -> dict[str, Any]:
    records = [
        {"timeUnixNano": str(now + i * 1000), "observedTimeUnixNano": str(now + i * 1000), "attributes": attributes}
        for i, attributes in enumerate(events)
    ]
    return {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": records}]}]}


def _sum(name: str, points: list[tuple[list[dict[str, Any]], float]], temporality: int, now: int) -> dict[str, Any]:
    return {
        "name": name,
        "sum": {
            "aggregationTemporality": temporality,
            "isMonotonic": True,
            "dataPoints": [
                {"startTimeUnixNano": str(now - 10**9), "timeUnixNano": str(now), "asDouble": v, "attributes": a}
                for a, v in points
            ],
        },
    }


def _metrics(resource: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": metrics}]}]}


def _resource(run: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A real capture's resource, and the attributes every event of that agent carries."""
    capture = next(c for c in load_captures(run) if c.signal == "logs")
    document = _document(capture)
    record = next(iter(_records(document)))
    common = [a for a in record["attributes"] if a["key"] in ("session.id", "installation.id", "conversation.id")]
    return document["resourceLogs"][0]["resource"], common


def _gemini(now: int) -> tuple[dict[str, Any], dict[str, Any]]:
    resource, common = _resource("gemini_hello")
    events = []
    for tool, decision, success, count in GEMINI_TOOLS:
        events += [
            [
                *common,
                _string("event.name", "gemini_cli.tool_call"),
                _string("function_name", tool),
                _string("decision", decision),
                _string("success", success),
                _string("duration_ms", 12),
            ]
        ] * count
    for status, count in GEMINI_ERRORS:
        events += [
            [
                *common,
                _string("event.name", "gemini_cli.api_error"),
                _string("status_code", status),
                _string("model", "m"),
            ]
        ] * count
    cumulative = 2
    metrics = [
        _sum(
            "gemini_cli.tool.call.count",
            [
                ([*common, _string("function_name", t), _string("decision", d), _string("success", s)], float(n))
                for t, d, s, n in GEMINI_TOOLS
            ],
            cumulative,
            now,
        ),
        _sum(
            "gemini_cli.api.request.count",
            [([*common, _string("status_code", "200"), _string("model", "m")], 5.0)]
            + [([*common, _string("status_code", s), _string("model", "m")], 2.0 * n) for s, n in GEMINI_ERRORS],
            cumulative,
            now,
        ),
    ]
    return _logs(resource, events, now), _metrics(resource, metrics)


def _codex(now: int) -> tuple[dict[str, Any], dict[str, Any]]:
    resource, common = _resource("codex_hello")
    events = []
    for tool, success, count in CODEX_TOOLS:
        events += [
            [
                *common,
                _string("event.name", "codex.tool_result"),
                _string("tool_name", tool),
                _string("success", success),
            ]
        ] * count
    events.append([*common, _string("event.name", "codex.api_request"), _string("http.response.status_code", "200")])
    for status, count in CODEX_ERRORS:
        events += [
            [*common, _string("event.name", "codex.api_request"), _string("http.response.status_code", status)]
        ] * count
    delta = 1
    metrics = [
        _sum(
            "codex.tool.call",
            [([_string("tool", t), _string("success", s)], float(n)) for t, s, n in CODEX_TOOLS],
            delta,
            now,
        ),
        _sum(
            "codex.api_request",
            [([_string("status", "200"), _string("success", True)], 1.0)]
            + [([_string("status", s), _string("success", False)], float(n)) for s, n in CODEX_ERRORS],
            delta,
            now,
        ),
    ]
    return _logs(resource, events, now), _metrics(resource, metrics)


def _post(server: Server, signal: str, table: str, document: dict[str, Any]) -> None:
    headers = {"content-type": "application/json", "x-databricks-uc-table-name": table}
    response = server.post(f"/v1/{signal}", json.dumps(document).encode(), headers)
    assert (response.status_code, response.json()) == (200, {}), response.text


@pytest.fixture(scope="module")
def activity(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """Activity of three table sets: logs only, metrics only, and both."""
    warehouse = tmp_path_factory.mktemp("fallback") / "warehouse"
    server = Server(warehouse, "--auto-create")
    now = time.time_ns()
    try:
        for agent, (logs, metrics) in (("gemini", _gemini(now)), ("codex", _codex(now))):
            for schema, signals in (
                ("logs_only", ["logs"]),
                ("metrics_only", ["metrics"]),
                ("both", ["logs", "metrics"]),
            ):
                for signal in signals:
                    _post(server, signal, f"main.{schema}.{agent}_otel_{signal}", logs if signal == "logs" else metrics)
        for capture in load_captures("cc_tool"):
            for schema in ("logs_only", "metrics_only", "both"):
                if schema == f"{capture.signal}_only" or schema == "both":
                    headers = [
                        (k, v)
                        for k, v in capture.headers
                        if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
                    ]
                    headers = [
                        (k, f"main.{schema}.claude_otel_{capture.signal}" if k.lower().endswith("table-name") else v)
                        for k, v in headers
                    ]
                    response = server.client.post(capture.path, content=capture.body, headers=headers)
                    assert response.status_code == 200, response.text
    finally:
        server.stop()
    store = UsageStore(Warehouse(str(warehouse)))
    store.refresh()
    return query.load(store, query.Filters()).activity


def _totals(activity: pl.DataFrame, schema: str) -> dict[tuple[Any, ...], float]:
    rows = (
        activity.filter(pl.col("table_set").str.starts_with(f"main.{schema}.") & pl.col("kind").is_in(KINDS))
        .filter(~((pl.col("agent") == "claude-code") & (pl.col("kind") == "tool_call")))  # no metric counts these
        .group_by("agent", "kind", "tool", "success", "status_code")
        .agg(pl.col("value").sum())
    )
    return {tuple(r[:-1]): r[-1] for r in rows.iter_rows()}


def test_metrics_only_gives_the_events_totals(activity: pl.DataFrame) -> None:
    from_logs, from_metrics = _totals(activity, "logs_only"), _totals(activity, "metrics_only")
    assert from_metrics == from_logs
    # And both are what was designed (Claude Code: the Write it accepted in cc_tool).
    expected: dict[tuple[Any, ...], float] = {("gemini-cli", "tool_call", t, s, None): n for t, _, s, n in GEMINI_TOOLS}
    expected |= {("gemini-cli", "api_error", None, False, s): n for s, n in GEMINI_ERRORS}
    expected |= {("codex", "tool_call", t, s, None): n for t, s, n in CODEX_TOOLS}
    expected |= {("codex", "api_error", None, False, s): n for s, n in CODEX_ERRORS}
    claude = {k: v for k, v in from_logs.items() if k[0] == "claude-code"}
    assert claude and all(k[1] == "tool_decision" for k in claude)
    assert {k: v for k, v in from_logs.items() if k[0] != "claude-code"} == expected


def test_events_count_once_where_both_exist(activity: pl.DataFrame) -> None:
    assert _totals(activity, "both") == _totals(activity, "logs_only")
    both = activity.filter(pl.col("table_set").str.starts_with("main.both.") & pl.col("kind").is_in(KINDS))
    assert set(both["source"]) == {"logs"}
