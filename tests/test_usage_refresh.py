"""Incremental refresh of the derived usage tables: only new files are read, the result
equals a refresh from scratch, compaction adds nothing, concurrent refreshers never
duplicate a fact."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import deltalake
import polars as pl
import pytest

from otel_ingest.maintenance import maintain
from otel_ingest.tables import TableName, Warehouse
from otel_ingest.usage import rollup
from otel_ingest.usage import store as store_module
from otel_ingest.usage.store import UsageStore
from support import Server, load_captures

FIRST = ("cc_hello", "gemini_hello", "codex_hello")
LATER = ("cc_tool", "cc_retry_503", "codex_json")
SERVER_ARGS = ("--auto-create", "--default-traces-table", "main.telemetry.gemini_otel_spans")


def _replay(server: Server, runs: tuple[str, ...]) -> None:
    for run in runs:
        for capture in load_captures(run):
            response = server.replay(capture)
            assert response.status_code == 200, (capture.id, response.text)


def _facts(warehouse: Path) -> dict[str, pl.DataFrame]:
    """The derived tables in a canonical order (rollups with one row per key)."""
    store = UsageStore(Warehouse(str(warehouse)))
    facts = {
        name: store.scan(name).collect().sort(by)
        for name, by in (("model_calls", "fact_id"), ("activity", "fact_id"), ("points", "series_id"))
    }
    for name in rollup.SOURCES:
        facts[name] = rollup.merged(store.scan(name).collect(), name)  # type: ignore[arg-type]
    return facts


def _scratch(warehouse: Path, into: Path) -> dict[str, pl.DataFrame]:
    """A copy of the raw tables only, refreshed once."""
    shutil.copytree(warehouse / "main", into / "main")
    UsageStore(Warehouse(str(into))).refresh()
    return _facts(into)


def test_refresh_append_refresh_equals_scratch_and_reads_only_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compact the derived tables as soon as a table (or a day) holds two files: the second
    # refresh compacts, and what follows must hold after compaction.
    monkeypatch.setattr(store_module, "COMPACT_FILES", 2)
    server = Server(tmp_path / "warehouse", *SERVER_ARGS)
    try:
        _replay(server, FIRST)
        store = UsageStore(Warehouse(str(server.warehouse)))
        first = store.refresh()
        assert first.added["model_calls"] > 0
        again = store.refresh()
        assert (again.files_read, again.added) == (0, {})
        _replay(server, LATER)
    finally:
        server.stop()
    second = store.refresh()
    new_files = sum(
        1 for run in LATER for capture in load_captures(run)
    )  # one request → one commit → one file (the server commits each request's rows once)
    assert 0 < second.files_read <= new_files
    assert {"calls_daily", "activity_daily"} <= set(second.compacted), second.compacted
    assert any(name.startswith("model_calls/day=") for name in second.compacted), second.compacted
    for name in ("calls_daily", "activity_daily"):
        assert len(deltalake.DeltaTable(store.location(name)).file_uris()) == 1, name
    incremental = _facts(server.warehouse)
    scratch = _scratch(server.warehouse, tmp_path / "scratch")
    for name in incremental:
        assert incremental[name].height > 0, name
        assert incremental[name].equals(scratch[name]), name
    assert incremental["model_calls"]["fact_id"].is_unique().all()

    # Compaction rewrites files without changing data: nothing to add.
    warehouse = Warehouse(str(server.warehouse))
    maintain(warehouse, TableName.parse("main.telemetry.claude_otel_logs"), 0)
    after = store.refresh()
    assert after.added.get("model_calls", 0) == 0
    assert _facts(server.warehouse)["model_calls"].equals(incremental["model_calls"])


def test_two_refreshers_at_once_store_each_fact_once(tmp_path: Path) -> None:
    server = Server(tmp_path / "warehouse", *SERVER_ARGS)
    try:
        _replay(server, FIRST + LATER)
    finally:
        server.stop()
    command = [sys.executable, "-m", "otel_ingest", "usage", "--refresh-only", "--warehouse", str(server.warehouse)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert out.startswith("Refreshed from")
    facts = _facts(server.warehouse)
    assert facts["model_calls"]["fact_id"].is_unique().all()
    assert facts["activity"]["fact_id"].is_unique().all()
    scratch = _scratch(server.warehouse, tmp_path / "scratch")
    for name in facts:
        assert facts[name].equals(scratch[name]), name
