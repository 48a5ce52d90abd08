"""The normalized usage model: captures replayed over HTTP into a real server, derived,
and compared with what the model APIs returned (read independently from the captures)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import genai_prices
import polars as pl
import pytest

from otel_ingest.tables import Warehouse
from otel_ingest.usage import query
from otel_ingest.usage.pricing import PriceFileError, Pricer, load_overrides
from otel_ingest.usage.store import UsageStore
from support import Capture, Server, load_captures

AGENT_RUNS = ("cc_hello", "cc_tool", "cc_retry_503", "cc_gzip", "cc_json", "gemini_hello", "codex_hello", "codex_json")
SERVER_ARGS = ("--auto-create", "--default-traces-table", "main.telemetry.gemini_otel_spans")
TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def _value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in value:
            return value[key]
    return None


def _records(capture: Capture) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(service.name, attributes, record) of each log record of a capture."""
    for resource_logs in capture.decoded["message"].get("resourceLogs", []):
        resource = {a["key"]: _value(a["value"]) for a in resource_logs["resource"].get("attributes", [])}
        for scope_logs in resource_logs["scopeLogs"]:
            for record in scope_logs["logRecords"]:
                yield (
                    resource["service.name"],
                    {a["key"]: _value(a["value"]) for a in record.get("attributes", [])},
                    record,
                )


def api_usage(captures: list[Capture]) -> dict[str, list[dict[str, Any]]]:
    """Each model call's usage as its model API returned it, put in canonical terms by
    the API's own rules (Anthropic: input excludes cache; Gemini: prompt includes cached,
    candidates exclude thoughts; OpenAI Responses: input includes cached, output
    reasoning). A record an exporter sent twice is one call."""
    seen: set[str] = set()
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for capture in captures:
        if capture.signal != "logs":
            continue
        for service, a, record in _records(capture):
            key = json.dumps(record, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            day = datetime.fromtimestamp(
                int(record.get("timeUnixNano") or record["observedTimeUnixNano"]) / 1e9, UTC
            ).strftime("%Y-%m-%d")
            event = a.get("event.name")
            if service == "claude-code" and event == "api_request":
                usage = {
                    "input_tokens": int(a["input_tokens"])
                    + int(a["cache_read_tokens"])
                    + int(a["cache_creation_tokens"]),
                    "cache_read_tokens": int(a["cache_read_tokens"]),
                    "cache_write_tokens": int(a["cache_creation_tokens"]),
                    "output_tokens": int(a["output_tokens"]),
                    "reasoning_tokens": 0,
                    "cost_usd": float(a["cost_usd"]),
                }
            elif service == "gemini-cli" and event == "gemini_cli.api_response":
                usage = {
                    "input_tokens": int(a["input_token_count"]) + int(a["tool_token_count"]),
                    "cache_read_tokens": int(a["cached_content_token_count"]),
                    "cache_write_tokens": 0,
                    "output_tokens": int(a["output_token_count"]) + int(a["thoughts_token_count"]),
                    "reasoning_tokens": int(a["thoughts_token_count"]),
                }
            elif service.startswith("codex") and event == "codex.sse_event" and "input_token_count" in a:
                usage = {
                    "input_tokens": int(a["input_token_count"]),
                    "cache_read_tokens": int(a["cached_token_count"]),
                    "cache_write_tokens": int(a["cache_write_token_count"]),
                    "output_tokens": int(a["output_token_count"]),
                    "reasoning_tokens": int(a["reasoning_token_count"]),
                }
            else:
                continue
            agent = {"claude-code": "claude-code", "gemini-cli": "gemini-cli"}.get(service, "codex")
            calls[agent].append({**usage, "model": a["model"].split("[")[0], "day": day})
    return calls


def _replay(warehouse: Path, signals: tuple[str, ...]) -> None:
    server = Server(warehouse, *SERVER_ARGS)
    try:
        for run in AGENT_RUNS:
            for capture in load_captures(run):
                if capture.signal in signals:
                    response = server.replay(capture)
                    assert response.status_code == 200, (capture.id, response.text)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def captures() -> list[Capture]:
    return [c for run in AGENT_RUNS for c in load_captures(run)]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    warehouse = tmp_path_factory.mktemp("usage") / "warehouse"
    _replay(warehouse, ("logs", "metrics", "traces"))
    return warehouse


@pytest.fixture(scope="module")
def metrics_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    warehouse = tmp_path_factory.mktemp("usage-metrics") / "warehouse"
    _replay(warehouse, ("metrics",))
    return warehouse


def _usage(warehouse: Path) -> query.Usage:
    store = UsageStore(Warehouse(str(warehouse)))
    store.refresh()
    return query.load(store, query.Filters())


def _totals(calls: pl.DataFrame) -> dict[str, dict[str, int]]:
    grouped = calls.group_by("agent").agg(*[pl.col(c).sum() for c in TOKENS])
    return {row.pop("agent"): row for row in grouped.iter_rows(named=True)}


def _expected(captures: list[Capture]) -> dict[str, dict[str, int]]:
    return {agent: {c: sum(call[c] for call in calls) for c in TOKENS} for agent, calls in api_usage(captures).items()}


def test_token_totals_equal_the_model_apis_per_agent(replayed: Path, captures: list[Capture]) -> None:
    usage = _usage(replayed)
    expected = _expected(captures)
    assert set(expected) == {"claude-code", "gemini-cli", "codex"}
    assert _totals(usage.calls) == expected
    # One row per call, from the events; the metrics agree and are not counted again.
    assert usage.calls["source"].unique().to_list() == ["logs"]
    calls = api_usage(captures)
    assert usage.calls.group_by("agent").agg(pl.col("calls").sum()).sort("agent").rows() == sorted(
        (agent, len(c)) for agent, c in calls.items()
    )
    assert usage.mismatches.height == 0
    # Claude Code's metrics say claude-opus-4-8[1m], its events claude-opus-4-8: one model.
    assert set(usage.calls.filter(pl.col("agent") == "claude-code")["model"]) == {"claude-opus-4-8"}


def test_metrics_only_replay_gives_the_same_totals(metrics_only: Path, captures: list[Capture]) -> None:
    """No logs table: Claude Code's DELTA sums, Gemini CLI's CUMULATIVE sums and Codex's
    per-turn histograms give the same totals as the events."""
    usage = _usage(metrics_only)
    assert usage.calls["source"].unique().to_list() == ["metrics"]
    assert _totals(usage.calls) == _expected(captures)
    # Claude Code's edit-tool decisions and Codex's requests have metrics too: the same
    # counts as the events (tests/test_usage_fallback.py covers tool calls and errors).
    decisions = usage.activity.filter(pl.col("kind") == "tool_decision")
    assert decisions["value"].sum() == _event_counts(captures)[("claude-code", "tool_decision")] > 0
    assert usage.activity.filter(pl.col("kind") == "api_error").height == 0  # no failed Codex/Gemini request


def test_costs_reported_kept_and_estimated_with_genai_prices(replayed: Path, captures: list[Capture]) -> None:
    usage = _usage(replayed)
    calls = api_usage(captures)
    claude = usage.calls.filter(pl.col("agent") == "claude-code")
    assert claude["cost_source"].unique().to_list() == ["reported"]
    assert claude["cost_usd"].sum() == pytest.approx(sum(c["cost_usd"] for c in calls["claude-code"]), abs=1e-12)
    providers = {"gemini-cli": "google", "codex": "openai"}
    for agent, provider in providers.items():
        rows = usage.calls.filter(pl.col("agent") == agent)
        assert rows["cost_source"].unique().to_list() == ["estimated"]
        expected = sum(
            float(
                genai_prices.calc_price(
                    genai_prices.Usage(
                        input_tokens=c["input_tokens"],
                        cache_read_tokens=c["cache_read_tokens"],
                        cache_write_tokens=c["cache_write_tokens"],
                        output_tokens=c["output_tokens"],
                    ),
                    model_ref=c["model"],
                    provider_id=provider,
                    genai_request_timestamp=datetime.fromisoformat(c["day"]).replace(tzinfo=UTC),
                ).total_price
            )
            for c in calls[agent]
        )
        assert expected > 0
        assert rows["cost_usd"].sum() == pytest.approx(expected, abs=1e-12)


def test_price_override_file_and_unknown_models(tmp_path: Path, replayed: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[[models]]\nmodel = "gpt-5.1-*"\ninput_mtok = 1.0\noutput_mtok = 10.0\ncache_read_mtok = 0.1\n')
    pricer = Pricer(load_overrides(str(prices)))
    store = UsageStore(Warehouse(str(replayed)), pricer)
    calls = query.load(store, query.Filters()).calls
    codex = store.price(
        calls.filter(pl.col("agent") == "codex").with_columns(pl.lit(None, pl.Float64).alias("cost_usd"))
    )
    row = codex.row(0, named=True)
    uncached = row["input_tokens"] - row["cache_read_tokens"]
    assert row["cost_usd"] == pytest.approx(
        (uncached * 1.0 + row["cache_read_tokens"] * 0.1 + row["output_tokens"] * 10.0) / 1e6
    )
    unknown = store.price(
        calls.head(1).with_columns(
            pl.lit("no-such-model-9").alias("model"),
            pl.lit(None, pl.Float64).alias("cost_usd"),
            pl.lit(None, pl.String).alias("cost_source"),
        )
    )
    assert unknown["cost_usd"].to_list() == [None]  # never 0
    assert unknown["cost_source"].to_list() == [None]
    assert query.unpriced_models(unknown)["model"].to_list() == ["no-such-model-9"]
    prices.write_text('[[models]]\nmodel = "x"\ninput_mtok = "cheap"\n')
    with pytest.raises(PriceFileError, match="input_mtok"):
        load_overrides(str(prices))


def _event_counts(captures: list[Capture]) -> dict[tuple[str, str], int]:
    """(agent, event name without its agent prefix) → records, a resent record once."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    seen = set()
    for capture in captures:
        if capture.signal == "logs":
            for service, a, record in _records(capture):
                key = json.dumps(record, sort_keys=True)
                if key not in seen and a.get("event.name"):
                    seen.add(key)
                    agent = {"claude-code": "claude-code", "gemini-cli": "gemini-cli"}.get(service, "codex")
                    counts[(agent, str(a["event.name"]).split(".")[-1])] += 1
    return counts


def _lines_added(captures: list[Capture]) -> float:
    seen, total = set(), 0.0
    for capture in captures:
        for rm in capture.decoded["message"].get("resourceMetrics", []):
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] != "claude_code.lines_of_code.count":
                        continue
                    for point in metric["sum"]["dataPoints"]:
                        key = json.dumps(point, sort_keys=True)
                        attributes = {a["key"]: _value(a["value"]) for a in point["attributes"]}
                        if key not in seen and attributes["type"] == "added":
                            seen.add(key)
                            total += float(point.get("asDouble", point.get("asInt", 0)))
    return total


def test_activity(replayed: Path, captures: list[Capture]) -> None:
    usage = _usage(replayed)
    kinds = usage.activity.group_by("agent", "kind").agg(pl.col("value").sum())
    counts = {(a, k): v for a, k, v in kinds.iter_rows()}
    events = _event_counts(captures)
    for agent in ("claude-code", "gemini-cli", "codex"):
        assert counts[(agent, "prompt")] == events[(agent, "user_prompt")] > 0
    assert counts[("claude-code", "tool_decision")] == events[("claude-code", "tool_decision")] > 0
    assert counts[("claude-code", "tool_call")] == events[("claude-code", "tool_result")] > 0
    tool = usage.activity.filter(pl.col("kind") == "tool_call").row(0, named=True)
    assert (tool["tool"], tool["success"]) == ("Write", True)
    assert tool["duration_ms"] > 0
    assert counts[("claude-code", "lines_added")] == _lines_added(captures) > 0


def _otlp_sum(session: str, points: list[tuple[int, int, float]]) -> bytes:
    """A Gemini-CLI-shaped CUMULATIVE token sum: (start, time, value) points."""
    attributes = [
        {"key": "session.id", "value": {"stringValue": session}},
        {"key": "model", "value": {"stringValue": "gemini-3.8-flash"}},
        {"key": "type", "value": {"stringValue": "input"}},
    ]
    return json.dumps(
        {
            "resourceMetrics": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gemini-cli"}}]},
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "gemini_cli.token.usage",
                                    "sum": {
                                        "aggregationTemporality": 2,
                                        "isMonotonic": True,
                                        "dataPoints": [
                                            {
                                                "startTimeUnixNano": str(s),
                                                "timeUnixNano": str(t),
                                                "asInt": str(int(v)),
                                                "attributes": attributes,
                                            }
                                            for s, t, v in points
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    ).encode()


def test_cumulative_series_become_increases_across_refreshes_and_resets(tmp_path: Path) -> None:
    server = Server(tmp_path / "warehouse", "--auto-create")
    headers = {"content-type": "application/json", "x-databricks-uc-table-name": "main.t.g_otel_metrics"}
    base = 1_795_863_592_000_000_000
    store = UsageStore(Warehouse(str(server.warehouse)))
    try:
        for points in ([(base, base + 10**9, 100)], [(base, base + 2 * 10**9, 250)]):
            assert server.post("/v1/metrics", _otlp_sum("s1", points), headers).status_code == 200
            store.refresh()
        # The same export again, then a restarted process: the counter starts over.
        assert server.post("/v1/metrics", _otlp_sum("s1", [(base, base + 2 * 10**9, 250)]), headers).status_code == 200
        restart = base + 5 * 10**9
        assert server.post("/v1/metrics", _otlp_sum("s1", [(restart, restart + 10**9, 30)]), headers).status_code == 200
        store.refresh()
    finally:
        server.stop()
    calls = query.load(store, query.Filters()).calls
    assert calls["input_tokens"].to_list() == [100, 150, 30]


def test_usage_json_contract(replayed: Path, captures: list[Capture]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", "--json", "--by", "agent,model", "--warehouse", str(replayed)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    items = json.loads(out)
    assert isinstance(items, list)
    for item in items:
        assert list(item)[:10] == [
            "agent",
            "model",
            "calls",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
            "cost_source",
        ]
    by_model: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOKENS, 0))
    for agent, calls in api_usage(captures).items():
        for call in calls:
            for c in TOKENS:
                by_model[(agent, call["model"])][c] += call[c]
    assert {(i["agent"], i["model"]): {c: i[c] for c in TOKENS} for i in items} == dict(by_model)
    csv_out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_ingest",
            "usage",
            "daily",
            "--csv",
            "--by",
            "agent",
            "--warehouse",
            str(replayed),
            "--since",
            "2026-11-28",
            "--until",
            "2026-11-28",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    frame = pl.read_csv(csv_out.encode())
    assert frame.columns[:3] == ["day", "agent", "calls"]
    assert frame["input_tokens"].sum() == sum(i["input_tokens"] for i in items)
    empty = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", "--json", "--since", "2030-01-01", "--warehouse", str(replayed)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(empty) == []
    bad = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", "--by", "colour", "--warehouse", str(replayed)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--by 'colour'" in bad.stderr
