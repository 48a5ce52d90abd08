"""The usage model's storage layout and read path: stable fact ids, batched first reads,
the dashboard's warm cache. Each test compares against an independent computation."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import deltalake
import polars as pl
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from otel_ingest.dashboard.app import Dashboard, DashboardSettings, create_dashboard_app
from otel_ingest.tables import Warehouse
from otel_ingest.usage import query, report, rolled, rollup, store
from otel_ingest.usage.store import UsageStore
from support import Server, load_captures

FIRST = ("cc_hello", "gemini_hello", "codex_hello")
LATER = ("cc_tool", "cc_retry_503")
SERVER_ARGS = ("--auto-create", "--default-traces-table", "main.telemetry.gemini_otel_spans")
EVERYTHING = query.Filters(since=datetime(2000, 1, 1, tzinfo=UTC))


def _replay(server: Server, runs: tuple[str, ...]) -> None:
    for run in runs:
        for capture in load_captures(run):
            response = server.replay(capture)
            assert response.status_code == 200, (capture.id, response.text)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse of raw tables only (no derived tables), from real captures."""
    folder = tmp_path_factory.mktemp("perf") / "warehouse"
    server = Server(folder, *SERVER_ARGS)
    try:
        _replay(server, FIRST + LATER)
    finally:
        server.stop()
    return folder


def _copy(raw: Path, into: Path) -> Path:
    shutil.copytree(raw / "main", into / "main")
    return into


def _facts(warehouse: Path) -> dict[str, pl.DataFrame]:
    usage = UsageStore(Warehouse(str(warehouse)))
    return {
        name: usage.scan(name).collect().sort(by)
        for name, by in (("model_calls", "fact_id"), ("activity", "fact_id"), ("points", "series_id"))
    }


def test_fact_ids_are_stable_digests_across_processes(raw: Path, tmp_path: Path) -> None:
    """Two refreshes in two processes with different hash seeds store the same ids, and a
    log fact's id is ``<table>:<time ns>:<observed ns>:<blake2b of its attributes>`` as
    docs/usage.md defines it, computed here with hashlib alone."""
    copies = [_copy(raw, tmp_path / f"copy{seed}") for seed in (1, 2)]
    for seed, copy in zip((1, 2), copies, strict=True):
        command = [sys.executable, "-m", "otel_ingest", "usage", "--refresh-only", "--warehouse", str(copy)]
        done = subprocess.run(
            command, env={**os.environ, "PYTHONHASHSEED": str(seed)}, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    first, second = (_facts(copy) for copy in copies)
    for name in first:
        assert first[name].height > 0, name
        assert first[name].equals(second[name]), name

    table = "main.telemetry.claude_otel_logs"
    logs = pl.read_delta(str(raw / "main" / "telemetry" / "claude_otel_logs"))
    expected = set()
    for row in logs.iter_rows(named=True):
        attributes = row["attributes"]
        entries = attributes.items() if isinstance(attributes, dict) else [(e["key"], e["value"]) for e in attributes]
        text = "\x1e".join(f"{key}\x1f{chr(0) if value is None else value}" for key, value in entries)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
        time_ns = row["time_unix_nano"] or row["observed_time_unix_nano"]
        expected.add(f"{table}:{time_ns}:{row['observed_time_unix_nano'] or ''}:{digest}")
    stored = {
        fact
        for name in ("model_calls", "activity")
        for fact in first[name].filter(pl.col("source_table") == table)["fact_id"].to_list()
    }
    assert stored, "no facts from the Claude Code logs"
    assert stored <= expected


def test_first_refresh_in_batches_equals_one_read(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first refresh reads the raw files in batches of about READ_BATCH_BYTES; one file
    per batch gives the same facts as everything at once, and a record sent again (in
    another file, so another batch) is stored once."""
    whole = _copy(raw, tmp_path / "whole")
    batched = _copy(raw, tmp_path / "batched")
    for copy in (whole, batched):
        logs = next((copy / "main" / "telemetry").glob("claude*_otel_logs"))
        resent = pq.read_table(next(logs.glob("*.parquet")))
        deltalake.write_deltalake(str(logs), resent, mode="append")
    monkeypatch.setattr(store, "READ_BATCH_BYTES", 10**12)
    UsageStore(Warehouse(str(whole))).refresh()
    monkeypatch.setattr(store, "READ_BATCH_BYTES", 1)
    result = UsageStore(Warehouse(str(batched))).refresh()
    assert result.files_read > result.raw_tables  # several files per table, so several batches
    one, many = _facts(whole), _facts(batched)
    for name in one:
        assert one[name].equals(many[name]), name
    for name in ("model_calls", "activity"):
        assert many[name]["fact_id"].n_unique() == many[name].height > 0, name


def test_dashboard_cache_serves_until_the_derived_tables_change(tmp_path: Path) -> None:
    """The dashboard keeps a range's facts (and /api/summary's answer) between requests, and
    a refresh that commits new facts (from any process) makes the next request read them."""
    folder = tmp_path / "warehouse"
    server = Server(folder, *SERVER_ARGS)
    try:
        _replay(server, FIRST)
        settings = DashboardSettings(Warehouse(str(folder)))
        dashboard = Dashboard(settings)
        app = TestClient(create_dashboard_app(settings))  # no lifespan: it never refreshes itself
        UsageStore(Warehouse(str(folder))).refresh()  # another process's store
        first_body = _summary(app)
        assert first_body["totals"]["calls"] > 0
        assert _summary(app) == first_body
        before = dashboard._load(EVERYTHING)
        assert dashboard._load(EVERYTHING) is before
        assert _same(before, rolled.load(UsageStore(Warehouse(str(folder))), EVERYTHING.since, None))
        _replay(server, LATER)
    finally:
        server.stop()
    UsageStore(Warehouse(str(folder))).refresh()
    after = dashboard._load(EVERYTHING)
    assert after is not before
    assert after.calls["calls"].sum() > before.calls["calls"].sum()
    assert _same(after, rolled.load(UsageStore(Warehouse(str(folder))), EVERYTHING.since, None))
    # The same request on the app that answered before: the new facts, as a fresh app sees them.
    second_body = _summary(app)
    assert second_body["totals"]["calls"] > first_body["totals"]["calls"]
    assert second_body == _summary(TestClient(create_dashboard_app(DashboardSettings(Warehouse(str(folder))))))

    # Refresh, append, refresh: the rollup tables hold the sums of the facts, and every panel
    # served from them equals the panel computed from the facts themselves.
    facts = UsageStore(Warehouse(str(folder)))
    for name, roll in rollup.ROLL.items():
        stored = rollup.merged(facts.scan(name).collect(), name)  # type: ignore[arg-type]
        assert stored.height > 0
        assert stored.equals(rollup.merged(roll(facts.scan(rollup.SOURCES[name]).collect()), name)), name  # type: ignore[arg-type]
    from_facts = TestClient(create_dashboard_app(DashboardSettings(Warehouse(str(folder)), rollups=False)))
    for params in ({}, {"agent": "claude-code"}, {"since": "2026-11-28T10:30:00"}):
        served, computed = _summary(app, **params), _summary(from_facts, **params)
        assert served.keys() == computed.keys()
        for panel in served:
            assert _approx(served[panel]) == _approx(computed[panel]), (params, panel)
    _report_reads_the_rollups_as_the_dashboard(facts, _summary(app)["by_agent"])


def _report_reads_the_rollups_as_the_dashboard(usage: UsageStore, by_agent: object) -> None:
    """``otel-ingest usage`` groups the rollup rows the dashboard reads (``report.load``):
    the same groups as grouping the facts, for every key, filter and a partial first day,
    and the dashboard's leaderboard by agent is the report by agent."""
    partial = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
    cases = [
        (query.Filters(), ["agent", "model"]),
        (query.Filters(), ["day", "user"]),
        (query.Filters(), ["week", "session"]),
        (query.Filters(), ["month", "table_set"]),
        (query.Filters(agents=("claude-code",), models=("claude-opus-4-8",)), ["user"]),
        (query.Filters(since=partial), ["day", "agent"]),
    ]
    for filters, keys in cases:
        rolled_up = report.load(usage, filters, keys)
        assert isinstance(rolled_up, rolled.Rolled)
        expected = report.rows(query.load(usage, filters), keys)
        assert _approx(report.rows(rolled_up, keys)) == _approx(expected) != [], (filters, keys)
    everything = report.rows(report.load(usage, query.Filters(), ["agent"]), ["agent"])
    shown = [{key: row[key] for key in everything[0]} for row in by_agent]  # type: ignore[attr-defined]
    assert _approx(sorted(shown, key=lambda r: r["agent"])) == _approx(everything)


def _same(one: rolled.Rolled, other: rolled.Rolled) -> bool:
    return rollup.merged(one.calls, "calls_daily").equals(rollup.merged(other.calls, "calls_daily")) and rollup.merged(
        one.activity, "activity_daily"
    ).equals(rollup.merged(other.activity, "activity_daily"))


def _approx(value: object) -> object:
    """Floats to 12 significant digits (a sum of per-day sums may differ in the last bit)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    return value


def _summary(client: TestClient, **params: str) -> dict[str, object]:
    response = client.get("/api/summary", params={"since": "2000-01-01", **params})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    body.pop("refreshed_at")
    return body
