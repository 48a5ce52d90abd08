"""The otel-ingest command line, run as a user would run it (a child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import deltalake
import polars as pl
import pytest

from otel_ingest.schema import DDL_FILES, TABLE_SUFFIXES, schemas_dir, signal_schema
from support import Server, load_captures, read_table, row_count, table_path

SIGNAL_OF_DDL = {file: signal for signal, file in DDL_FILES.items()}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_ingest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def _first_commit(path: Path) -> list[dict[str, object]]:
    """The actions of a table's first commit, read straight from the Delta log JSON."""
    lines = (path / "_delta_log" / "00000000000000000000.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _properties(path: Path) -> dict[str, str]:
    (metadata,) = [a["metaData"] for a in _first_commit(path) if "metaData" in a]
    return metadata["configuration"]  # type: ignore[index, no-any-return]


def test_tables_create(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    result = run_cli("tables", "create", "Main.Telemetry.Team1", "--warehouse", str(warehouse))
    assert result.returncode == 0, result.stderr
    for signal, suffix in TABLE_SUFFIXES.items():
        path = table_path(warehouse, f"main.telemetry.team1{suffix}")
        assert _properties(path) == {
            "otel.schemaVersion": "v1",
            "delta.logRetentionDuration": "interval 2 hours",
            "delta.deletedFileRetentionDuration": "interval 2 hours",
        }
        frame = read_table(warehouse, f"main.telemetry.team1{suffix}")
        assert frame.columns == signal_schema(signal).names
        assert f"main.telemetry.team1{suffix}" in result.stdout
    # Idempotent: running it again changes nothing.
    again = run_cli("tables", "create", "main.telemetry.team1", "--warehouse", str(warehouse))
    assert again.returncode == 0, again.stderr
    assert not (table_path(warehouse, "main.telemetry.team1_otel_logs") / "_delta_log" / f"{1:020}.json").exists()


def test_tables_create_refuses_a_mismatching_table(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    ddl = (schemas_dir() / "otel_logs.sql").read_text()
    broken = ddl.replace("<catalog>.<schema>.<table_prefix>", "main.t.x").replace("  body STRING,\n", "")
    (tmp_path / "broken.sql").write_text(broken)
    assert run_cli("sql", str(tmp_path / "broken.sql"), "--warehouse", str(warehouse)).returncode == 0
    result = run_cli("tables", "create", "main.t.x", "--warehouse", str(warehouse))
    assert result.returncode == 2
    assert "main.t.x_otel_logs" in result.stderr
    assert "column body is missing" in result.stderr


def test_tables_create_rejects_bad_prefix(tmp_path: Path) -> None:
    result = run_cli("tables", "create", "main/../x", "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert "'main/' may only hold a-z, 0-9, _ and -" in result.stderr
    assert not (tmp_path / "wh").exists()


def _filled_ddl(tmp_path: Path, schema: str = "guide") -> Path:
    """The three DDL files of the Databricks guide with the placeholders filled in, in one file."""
    text = ";\n".join((schemas_dir() / file).read_text() for file in sorted(SIGNAL_OF_DDL))
    text = text.replace("<catalog>", "main").replace("<schema>", schema).replace("<table_prefix>", "demo")
    path = tmp_path / "guide.sql"
    path.write_text(text)
    return path


def test_sql_runs_the_guide_ddl(tmp_path: Path, start_server: Callable[..., Server]) -> None:
    warehouse = tmp_path / "warehouse"
    result = run_cli("sql", str(_filled_ddl(tmp_path)), "--warehouse", str(warehouse))
    assert result.returncode == 0, result.stderr
    for file, signal in SIGNAL_OF_DDL.items():
        name = f"main.guide.demo_{file.removesuffix('.sql')}"
        assert _properties(table_path(warehouse, name)) == {
            "otel.schemaVersion": "v1",  # from the statement; the retentions are otel-ingest's defaults
            "delta.logRetentionDuration": "interval 2 hours",
            "delta.deletedFileRetentionDuration": "interval 2 hours",
        }
        assert read_table(warehouse, name).columns == signal_schema(signal).names
    # Running it twice is fine: the tables exist and match.
    assert run_cli("sql", str(_filled_ddl(tmp_path)), "--warehouse", str(warehouse)).returncode == 0
    # The server writes into tables made this way.
    server = start_server(warehouse=warehouse)
    for capture in load_captures("cc_hello"):
        headers = {
            "content-type": "application/x-protobuf",
            "x-databricks-uc-table-name": f"main.guide.demo_otel_{capture.signal}",
        }
        assert server.post(capture.path, capture.body, headers).status_code == 200
        assert row_count(warehouse, f"main.guide.demo_otel_{capture.signal}") == capture.expected_rows


def test_sql_each_file_separately(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    for file in sorted(SIGNAL_OF_DDL):
        text = (schemas_dir() / file).read_text().replace("<catalog>", "c").replace("<schema>", "s")
        path = tmp_path / file
        path.write_text(text.replace("<table_prefix>", "p"))
        result = run_cli("sql", str(path), "--warehouse", str(warehouse))
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (warehouse / "c" / "s").iterdir()) == [
        "p_otel_logs",
        "p_otel_metrics",
        "p_otel_spans",
    ]


@pytest.mark.parametrize(
    "sql, fragment",
    [
        ("CREATE TABLE <catalog>.s.t (a STRING) USING DELTA", "placeholder"),
        ("CREATE TABLE c.s.t (a STRING) USING PARQUET", "Only USING DELTA"),
        ("CREATE TABLE c.s.t (a VARCHAR2) USING DELTA", "Unsupported SQL type 'VARCHAR2'"),
        ("DROP TABLE c.s.t", "Only CREATE TABLE statements"),
        ("CREATE TABLE c.s (a STRING)", "three dot-separated parts"),
    ],
)
def test_sql_errors(tmp_path: Path, sql: str, fragment: str) -> None:
    path = tmp_path / "bad.sql"
    path.write_text(sql)
    result = run_cli("sql", str(path), "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert not (tmp_path / "wh").exists() or not any((tmp_path / "wh").rglob("_delta_log"))


def test_serve_reads_settings_from_the_environment(tmp_path: Path) -> None:
    """Every flag is also an OTEL_INGEST_* variable; a flag wins over its variable."""
    env_warehouse = tmp_path / "from_env"
    server = Server(
        tmp_path / "from_flag",
        "--create-tables",
        "main.telemetry.flag",
        env={
            "OTEL_INGEST_WAREHOUSE": str(env_warehouse),  # overridden by --warehouse
            "OTEL_INGEST_DEFAULT_LOGS_TABLE": "main.telemetry.flag_otel_logs",
            "OTEL_INGEST_MAX_BODY_BYTES": "2KiB",
        },
    )
    try:
        (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
        response = server.post("/v1/logs", capture.body, {"content-type": "application/x-protobuf"})
        assert response.status_code == 200, response.text
        assert row_count(tmp_path / "from_flag", "main.telemetry.flag_otel_logs") == capture.expected_rows
        assert not env_warehouse.exists()
        big = server.post("/v1/logs", b"\x00" * 4096, {"content-type": "application/x-protobuf"})
        assert big.status_code == 413
    finally:
        server.stop()


def test_serve_with_environment_only(tmp_path: Path) -> None:
    warehouse = tmp_path / "env_only"
    server = Server(
        warehouse,
        settings_from_env=True,
        env={"OTEL_INGEST_CREATE_TABLES": "main.telemetry.envonly", "OTEL_INGEST_AUTO_CREATE": "true"},
    )
    try:
        headers = {"content-type": "application/json", "x-databricks-uc-table-name": "main.x.auto_otel_metrics"}
        assert server.post("/v1/metrics", b"{}", headers).status_code == 200
        assert (warehouse / "main" / "telemetry" / "envonly_otel_logs" / "_delta_log").is_dir()
        assert (warehouse / "main" / "x" / "auto_otel_metrics" / "_delta_log").is_dir()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "args, env, fragment",
    [
        (["serve", "--port", "notaport"], {}, "--port"),
        (["serve"], {"OTEL_INGEST_PORT": "99999"}, "port 99999 is out of range"),
        (["serve"], {"OTEL_INGEST_AUTO_CREATE": "maybe"}, "OTEL_INGEST_AUTO_CREATE='maybe' is invalid"),
        (["serve"], {"OTEL_INGEST_MAX_BODY_BYTES": "lots"}, "OTEL_INGEST_MAX_BODY_BYTES"),
        (["serve", "--create-tables", "a.b"], {}, "three dot-separated parts"),
    ],
)
def test_bad_settings_fail_fast(tmp_path: Path, args: list[str], env: dict[str, str], fragment: str) -> None:
    result = run_cli(*args, "--warehouse", str(tmp_path / "wh"), env=env)
    assert result.returncode == 2
    assert fragment in result.stderr


def test_help_lists_every_environment_variable() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for variable in ("OTEL_INGEST_HOST", "OTEL_INGEST_PORT", "OTEL_INGEST_WAREHOUSE", "OTEL_INGEST_AUTO_CREATE"):
        assert variable in result.stdout


def test_default_warehouse_is_local_folder(tmp_path: Path) -> None:
    result = run_cli("tables", "create", "main.telemetry.claude", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frame = pl.read_delta(str(tmp_path / "warehouse" / "main" / "telemetry" / "claude_otel_logs"))
    assert frame.height == 0


def test_maintain_compacts_vacuums_and_cleans_the_log(tmp_path: Path, start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude", "--maintenance-interval", "0")
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    headers = {
        "content-type": "application/x-protobuf",
        "x-databricks-uc-table-name": "main.telemetry.claude_otel_logs",
    }
    for _ in range(5):
        assert server.post("/v1/logs", capture.body, headers).status_code == 200
    server.stop()
    location = table_path(server.warehouse, "main.telemetry.claude_otel_logs")
    before = read_table(server.warehouse, "main.telemetry.claude_otel_logs").sort(pl.all())
    assert len(list(location.glob("*.parquet"))) == 5
    # Log entries older than the retention go once a checkpoint covers them; shorten it.
    deltalake.DeltaTable(str(location)).alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    logs_before = sorted(p.name for p in (location / "_delta_log").glob("*.json"))

    result = run_cli(
        "maintain", "main.telemetry.claude_otel_logs", "--retention-hours", "0", "--warehouse", str(server.warehouse)
    )

    assert result.returncode == 0, result.stderr
    assert "compacted 5 files into 1, vacuumed 5" in result.stdout
    assert len(list(location.glob("*.parquet"))) == 1  # the five small files are gone from disk
    after = read_table(server.warehouse, "main.telemetry.claude_otel_logs").sort(pl.all())
    assert after.equals(before)
    logs_after = sorted(p.name for p in (location / "_delta_log").glob("*.json"))
    assert logs_before[0] not in logs_after  # the oldest entries were cleaned up
    assert list((location / "_delta_log").glob("*.checkpoint.parquet"))
