"""The AI gateway's usage table feeds the usage model: Cursor (gateway only) appears in
``otel-ingest usage`` and the dashboard, and a call seen by both the gateway and an agent's
telemetry is counted once (docs/usage.md, "The gateway").

Real parts: the fake providers and ``otel-ingest gateway`` (tests/gateway_support.py) write
the gateway's usage rows; a real ``otel-ingest serve`` stores the agents' telemetry — the
real captures of Claude Code, Codex and Gemini CLI, whose model-call events are given the
usage the fake provider answered and the time the gateway saw the call, as the agents would
have logged them had they run through this gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fake_providers as fp
import httpx
import polars as pl
import pytest
from gateway_support import ALICE, Fake, GatewayProcess, Process, endpoints_toml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from test_usage import api_usage

from otel_ingest import otlp_json
from otel_ingest.tables import Warehouse
from otel_ingest.usage import query
from otel_ingest.usage.store import UsageStore
from support import Capture, Server, free_port, load_captures, wait_until

USAGE_TABLE = "main.ai_gateway.usage"
TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
# What the fake provider answers, in canonical counting (input includes cache, output reasoning).
_A, _R, _G, _C = fp.USAGE["anthropic"], fp.USAGE["responses"], fp.USAGE["gemini"], fp.USAGE["chat"]
FAKE_USAGE = {
    "claude-code": (
        _A["input"] + _A["cache_read"] + _A["cache_write"],
        _A["cache_read"],
        _A["cache_write"],
        _A["output"],
        0,
    ),
    "codex": (_R["input"], _R["cached"], 0, _R["output"], _R["reasoning"]),
    "gemini-cli": (_G["prompt"], _G["cached"], 0, _G["candidates"] + _G["thoughts"], _G["thoughts"]),
    "cursor": (_C["prompt"], _C["cached"], 0, _C["completion"], _C["reasoning"]),
}


def _attributes(record: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values()), None) for a in record.get("attributes", [])}


def _set(record: dict[str, Any], values: dict[str, int]) -> None:
    """Give attributes new numbers, in the value kind the agent used (ints as strings)."""
    for attribute in record["attributes"]:
        if attribute["key"] in values:
            kind = next(iter(attribute["value"]))
            attribute["value"] = {kind: str(values[attribute["key"]])}


def _document(capture: Capture) -> dict[str, Any]:
    """The capture's export request as an OTLP/JSON document (ids in hex)."""
    if "json" in (capture.header("content-type") or ""):
        document: dict[str, Any] = json.loads(capture.body)
        return document
    request = ExportLogsServiceRequest()
    request.ParseFromString(capture.body)
    return otlp_json.to_dict(request)


def _records(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_logs in message["resourceLogs"]:
        for scope_logs in resource_logs["scopeLogs"]:
            yield from scope_logs["logRecords"]


@dataclass
class World:
    warehouse: Path
    gateway: GatewayProcess
    # agent → calls made, and the telemetry-only calls (not through the gateway)
    gateway_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    matched: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    telemetry_only: list[Capture] = field(default_factory=list)


def _call(gateway: GatewayProcess, path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """One call through the gateway; returns when its usage row is committed, with the
    time the call ended (ns), which is when an agent logs it."""
    response = httpx.post(gateway.url + path, content=json.dumps(body).encode(), headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    ended = time.time_ns()
    gateway.row(USAGE_TABLE, response.headers["x-gateway-request-id"])
    return ended


# (capture run, agent, is a model call, tokens the event carries: the provider's numbers in the agent's words,
#  how the agent makes that call through the gateway: attributes → (path, body, headers))
Route = Callable[[dict[str, Any]], tuple[str, dict[str, Any], dict[str, str]]]
AGENT_RUNS: list[tuple[str, str, Callable[[dict[str, Any]], bool], dict[str, int], Route]] = [
    (
        "cc_hello",
        "claude-code",
        lambda a: a.get("event.name") == "api_request",
        {
            "input_tokens": _A["input"],
            "cache_read_tokens": _A["cache_read"],
            "cache_creation_tokens": _A["cache_write"],
            "output_tokens": _A["output"],
        },
        lambda a: (
            "/anthropic/v1/messages?beta=true",
            {"model": a["model"], "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            {
                "x-api-key": ALICE,
                "anthropic-version": "2023-06-01",
                "x-claude-code-session-id": a["session.id"],
                "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
            },
        ),
    ),
    (
        "codex_hello",
        "codex",
        lambda a: a.get("event.kind") == "response.completed" and "input_token_count" in a,
        {
            "input_token_count": _R["input"],
            "cached_token_count": _R["cached"],
            "cache_write_token_count": 0,
            "output_token_count": _R["output"],
            "reasoning_token_count": _R["reasoning"],
        },
        lambda a: (
            "/openai/v1/responses",
            {"model": a["model"], "stream": True, "input": "hi"},
            {
                "authorization": f"Bearer {ALICE}",
                "session-id": a["conversation.id"],
                "originator": "codex_exec",
                "user-agent": "codex_exec/0.171.0 (Debian 12; x86_64)",
            },
        ),
    ),
    (
        "gemini_hello",
        "gemini-cli",
        lambda a: a.get("event.name") == "gemini_cli.api_response",
        {
            "input_token_count": _G["prompt"],
            "cached_content_token_count": _G["cached"],
            "output_token_count": _G["candidates"],
            "thoughts_token_count": _G["thoughts"],
            "tool_token_count": 0,
            "total_token_count": _G["prompt"] + _G["candidates"] + _G["thoughts"],
        },
        lambda a: (
            # The router (flash-lite) call is generateContent, the main model streams.
            f"/gemini/v1beta/models/{a['model']}:"
            + ("generateContent" if "lite" in a["model"] else "streamGenerateContent?alt=sse"),
            {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            {"authorization": f"Bearer {ALICE}", "user-agent": "GeminiCLI/0.61.0/gemini-2.5-flash (linux; x64)"},
        ),
    ),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("usage-gateway")
    fake = Fake(folder)
    gateway = GatewayProcess(folder / "gateway", endpoints_toml(fake.url))
    server = Server(gateway.warehouse, "--auto-create")
    world = World(gateway.warehouse, gateway)
    try:
        # 1. Agents whose calls went through the gateway AND whose telemetry was on.
        for run, agent, is_call, tokens, route in AGENT_RUNS:
            for capture in load_captures(run):
                if capture.signal != "logs":
                    continue
                message = _document(capture)
                for record in _records(message):
                    attributes = _attributes(record)
                    if not is_call(attributes):
                        continue
                    ended = _call(gateway, *route(attributes))
                    _set(record, tokens)
                    record["timeUnixNano"] = record["observedTimeUnixNano"] = str(ended)
                    world.gateway_calls[agent] += 1
                    world.matched[agent] += 1
                headers = {"content-type": "application/json", "x-databricks-uc-table-name": str(capture.table)}
                response = server.post("/v1/logs", json.dumps(message).encode(), headers)
                assert (response.status_code, response.json()) == (200, {}), response.text
        # 2. Cursor: no telemetry at all; the openai package stands in for it.
        import openai

        client = openai.OpenAI(base_url=f"{gateway.url}/cursor/v1", api_key=ALICE, max_retries=0)
        before = len(gateway.table(USAGE_TABLE))
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        for _ in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
        world.gateway_calls["cursor"] += 2
        wait_until(lambda: len(gateway.table(USAGE_TABLE)) >= before + 2, "Cursor's usage rows")
        # 3. A Claude Code session through the gateway with its telemetry off.
        _call(gateway, *AGENT_RUNS[0][4]({"model": "claude-sonnet-4-5", "session.id": "telemetry-off"}))
        world.gateway_calls["claude-code"] += 1
        # 4. A Claude Code session straight to the provider: telemetry only.
        for capture in load_captures("cc_tool"):
            if capture.signal == "logs":
                assert server.replay(capture).status_code == 200
                world.telemetry_only.append(capture)
    finally:
        server.stop()
        fake.stop()
    yield world
    gateway.stop()


def _expected(world: World) -> dict[str, dict[str, int]]:
    """Per agent: each gateway call with the fake's usage, plus the telemetry-only calls."""
    expected: dict[str, dict[str, int]] = {}
    for agent, count in world.gateway_calls.items():
        expected[agent] = {"calls": count, **{c: count * v for c, v in zip(TOKENS, FAKE_USAGE[agent], strict=True)}}
    for agent, calls in api_usage(world.telemetry_only).items():
        expected[agent]["calls"] += len(calls)
        for c in TOKENS:
            expected[agent][c] += sum(call[c] for call in calls)
    return expected


def _report(warehouse: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", "--json", *args, "--warehouse", str(warehouse)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: list[dict[str, Any]] = json.loads(out)
    return result


def test_each_call_counted_once_and_cursor_present(world: World) -> None:
    items = _report(world.warehouse, "--by", "agent")
    got = {i["agent"]: {c: i[c] for c in ("calls", *TOKENS)} for i in items}
    assert got == _expected(world)
    assert world.matched["claude-code"] and world.matched["codex"] and world.matched["gemini-cli"] >= 2
    assert got["cursor"]["calls"] == 2


def test_matched_calls_come_from_the_gateway_and_keep_the_agents_session(world: World) -> None:
    store = UsageStore(Warehouse(str(world.warehouse)))
    store.refresh()
    calls = query.load(store, query.Filters()).calls
    stored = store.scan("model_calls").collect()
    # The same calls are stored twice (gateway and logs) and counted once.
    for agent, matched in world.matched.items():
        assert stored.filter((pl.col("agent") == agent) & (pl.col("source") == "logs")).height >= matched
        chosen = calls.filter(pl.col("agent") == agent)
        assert chosen.filter(pl.col("source") == "gateway").height == world.gateway_calls[agent]
    assert set(calls.filter(pl.col("agent") == "cursor")["source"]) == {"gateway"}
    # cc_tool went straight to the provider: its events count.
    assert calls.filter((pl.col("agent") == "claude-code") & (pl.col("source") == "logs")).height == len(
        api_usage(world.telemetry_only)["claude-code"]
    )
    # Gemini CLI sends no session header: the matched telemetry supplies it.
    gemini = calls.filter(pl.col("agent") == "gemini-cli")
    assert gemini["session"].null_count() == 0
    # The gateway names the principal.
    assert set(calls.filter(pl.col("source") == "gateway")["user"]) == {"alice"}


def test_dashboard_shows_cursor_with_the_reports_numbers(world: World) -> None:
    port = free_port()
    dashboard = Process(
        [sys.executable, "-m", "otel_ingest", "dashboard", "--port", str(port), "--warehouse", str(world.warehouse)],
        world.warehouse.parent / "dashboard.log",
        port,
    )
    try:
        panel = httpx.get(f"{dashboard.url}/api/panel/by_agent", params={"since": "2026-01-01"}, timeout=60).json()
    finally:
        dashboard.stop()
    shown = {row["agent"]: {c: row[c] for c in ("calls", *TOKENS)} for row in panel}
    assert shown == _expected(world)
