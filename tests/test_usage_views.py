"""schemas/views/*.sql run unchanged in real engines — Spark SQL (pyspark, local mode) and
DuckDB — over the same raw rows, and give the numbers of ``otel-ingest usage``.

DuckDB gets one compatibility macro (``timestamp_micros``, a Spark function) and reads
the Delta tables' rows through polars (its delta extension cannot be downloaded here);
Spark reads the Parquet files of the tables' current snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pytest

from support import Server, load_captures

VIEWS = Path(__file__).resolve().parent.parent / "schemas" / "views"
VIEW_ORDER = ("usage_model_calls.sql", "usage_activity.sql", "usage_by_day.sql")
RUNS = ("cc_hello", "cc_tool", "gemini_hello", "codex_hello", "codex_json")
PREFIXES = ("claude", "gemini", "codex")
SIGNALS = ("logs", "metrics")
SUMS = ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("views") / "warehouse"
    server = Server(folder, "--auto-create", "--default-traces-table", "main.telemetry.gemini_otel_spans")
    try:
        for run in RUNS:
            for capture in load_captures(run):
                assert server.replay(capture).status_code == 200
    finally:
        server.stop()
    return folder


def _views(catalog: str, schema: str, prefix: str) -> list[str]:
    statements = []
    for name in VIEW_ORDER:
        sql = (VIEWS / name).read_text()
        sql = sql.replace("<catalog>", catalog).replace("<schema>", schema).replace("<table_prefix>", prefix)
        statements.append(sql.strip().rstrip(";"))
    return statements


def _report(warehouse: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", "--json", "--by", "agent,model", "--warehouse", str(warehouse)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {(r["agent"], r["model"]): {c: r[c] for c in SUMS} for r in json.loads(out)}


def _rows_to_dict(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r[0], r[1]): dict(zip(SUMS, (int(v) for v in r[2:]), strict=True)) for r in rows}


_TOTALS = "SELECT agent, model, " + ", ".join(f"SUM({c})" for c in SUMS)


def test_views_in_duckdb_equal_the_report(warehouse: Path) -> None:
    import duckdb

    connection = duckdb.connect()
    connection.execute("CREATE MACRO timestamp_micros(x) AS make_timestamp(x)")
    connection.execute("ATTACH ':memory:' AS lake")
    connection.execute("CREATE SCHEMA lake.telemetry")
    for prefix in PREFIXES:
        for signal in SIGNALS:
            frame = pl.read_delta(str(warehouse / "main" / "telemetry" / f"{prefix}_otel_{signal}"))
            connection.register("raw", frame)
            connection.execute(f"CREATE TABLE lake.telemetry.{prefix}_otel_{signal} AS SELECT * FROM raw")
            connection.unregister("raw")
        for statement in _views("lake", "telemetry", prefix):
            connection.execute(statement)
    union = " UNION ALL ".join(f"SELECT * FROM lake.telemetry.{p}_usage_by_day" for p in PREFIXES)
    rows = connection.execute(f"{_TOTALS} FROM ({union}) GROUP BY agent, model").fetchall()
    assert _rows_to_dict(rows) == _report(warehouse)
    prompts = connection.execute(
        "SELECT COUNT(*) FROM lake.telemetry.claude_usage_activity WHERE kind = 'prompt'"
    ).fetchone()
    assert prompts is not None and prompts[0] > 0
    claude_cost = connection.execute("SELECT SUM(cost_usd) FROM lake.telemetry.claude_usage_model_calls").fetchone()
    assert claude_cost is not None and claude_cost[0] > 0


def test_views_in_spark_sql_equal_the_report(warehouse: Path, tmp_path: Path) -> None:
    pyspark_sql = pytest.importorskip("pyspark.sql", reason="pyspark is a test dependency (see docs/usage.md)")
    spark = (
        pyspark_sql.SparkSession.builder.master("local[1]")
        .appName("otel-ingest-views")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(tmp_path / "spark-warehouse"))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={tmp_path}")
        .getOrCreate()
    )
    try:
        spark.sql("CREATE DATABASE IF NOT EXISTS spark_catalog.telemetry")
        for prefix in PREFIXES:
            for signal in SIGNALS:
                files = deltalake.DeltaTable(
                    str(warehouse / "main" / "telemetry" / f"{prefix}_otel_{signal}")
                ).file_uris()
                spark.read.parquet(*files).write.mode("overwrite").saveAsTable(
                    f"spark_catalog.telemetry.{prefix}_otel_{signal}"
                )
            for statement in _views("spark_catalog", "telemetry", prefix):
                spark.sql(statement)
        union = " UNION ALL ".join(f"SELECT * FROM spark_catalog.telemetry.{p}_usage_by_day" for p in PREFIXES)
        rows = [tuple(r) for r in spark.sql(f"{_TOTALS} FROM ({union}) AS u GROUP BY agent, model").collect()]
        assert _rows_to_dict(rows) == _report(warehouse)
        kinds = {r[0] for r in spark.sql("SELECT kind FROM spark_catalog.telemetry.claude_usage_activity").collect()}
        assert {"prompt", "tool_call", "tool_decision", "lines_added"} <= kinds
    finally:
        spark.stop()
