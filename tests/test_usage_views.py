"""schemas/views/*.sql run unchanged in real engines — Spark SQL (pyspark, local mode) and
DuckDB — over the same raw rows and the prices table written by ``otel-ingest usage
prices``, and give the numbers of ``otel-ingest usage``: calls, tokens and cost per table
set, agent and model, for table sets with events (metrics as cross-check) and with metrics
only (the fallback).

DuckDB gets one compatibility macro (``timestamp_micros``, a Spark function) and reads the
Delta tables' rows through polars (its delta extension cannot be downloaded here); Spark
reads the Parquet files of the tables' current snapshots. pyspark is not in the 'test' extra
(it is large and its session takes a minute to start): without it the Spark test is skipped.
.ci/run installs it after the suite and runs the Spark test on its own with
OTEL_INGEST_REQUIRE_SPARK=1, which makes a missing pyspark a failure, not a skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pytest

from otel_ingest.tables import TableName, Warehouse
from support import Server, load_captures

VIEWS = Path(__file__).resolve().parent.parent / "schemas" / "views"
VIEW_ORDER = ("usage_events.sql", "usage_model_calls.sql", "usage_activity.sql", "usage_by_day.sql")
RUNS = ("cc_hello", "cc_tool", "gemini_hello", "codex_hello", "codex_json")
PREFIXES = ("claude", "gemini", "codex")
SIGNALS = ("logs", "metrics")
# Events and metrics; and the same metrics alone (the logs tables exist, empty).
SCHEMAS = ("telemetry", "metrics_only")
PRICES = "main.telemetry.usage_prices"
SUMS = ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("views") / "warehouse"
    server = Server(folder, "--auto-create", "--default-traces-table", "main.telemetry.gemini_otel_spans")
    try:
        for run in RUNS:
            for capture in load_captures(run):
                assert server.replay(capture).status_code == 200
                if capture.signal == "metrics":
                    headers = [
                        (
                            k,
                            str(capture.table).replace(".telemetry.", ".metrics_only.")
                            if k.lower().endswith("-name")
                            else v,
                        )
                        for k, v in capture.headers
                        if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
                    ]
                    assert server.client.post(capture.path, content=capture.body, headers=headers).status_code == 200
    finally:
        server.stop()
    for prefix in PREFIXES:
        Warehouse(str(folder)).create_for_signal(TableName("main", "metrics_only", f"{prefix}_otel_logs"), "logs")
    out = _usage(folder, "prices", "--table", PRICES)
    assert out.startswith("Wrote "), out
    return folder


def _usage(warehouse: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", *args, "--warehouse", str(warehouse)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _views(catalog: str, schema: str, prefix: str) -> list[str]:
    statements = []
    for name in VIEW_ORDER:
        sql = (VIEWS / name).read_text()
        sql = sql.replace("<catalog>.<schema>.usage_prices", f"{catalog}.telemetry.usage_prices")
        sql = sql.replace("<catalog>", catalog).replace("<schema>", schema).replace("<table_prefix>", prefix)
        statements.append(sql.strip().rstrip(";"))
    return statements


def _report(warehouse: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    items = json.loads(_usage(warehouse, "--json", "--by", "table_set,agent,model"))
    return {(r["table_set"].split(".")[1], r["agent"], r["model"]): _numbers(r) for r in items}


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    cost = row["cost_usd"]
    return {
        **{c: int(row[c]) for c in SUMS},
        "cost_usd": None if cost is None else pytest.approx(float(cost), rel=1e-9),
    }


_TOTALS = "SELECT schema_name, agent, model, " + ", ".join(f"SUM({c}) AS {c}" for c in (*SUMS, "cost_usd"))
_UNION = " UNION ALL ".join(
    f"SELECT '{s}' AS schema_name, * FROM <catalog>.{s}.{p}_usage_by_day" for s in SCHEMAS for p in PREFIXES
)


def _query(catalog: str) -> str:
    return f"{_TOTALS} FROM ({_UNION.replace('<catalog>', catalog)}) AS u GROUP BY schema_name, agent, model"


def _rows_to_dict(rows: list[tuple[Any, ...]]) -> dict[tuple[str, ...], dict[str, Any]]:
    names = (*SUMS, "cost_usd")
    result = {}
    for r in rows:
        values = dict(zip(names, r[3:], strict=True))
        cost = values["cost_usd"]
        result[(r[0], r[1], r[2])] = {
            **{c: int(values[c]) for c in SUMS},
            "cost_usd": None if cost is None else float(cost),
        }
    return result


_ACTIVITY = (
    "SELECT schema_name, agent, kind, tool, success, status_code, SUM(value) FROM ("
    + " UNION ALL ".join(
        f"SELECT '{s}' AS schema_name, * FROM <catalog>.{s}.{p}_usage_activity" for s in SCHEMAS for p in PREFIXES
    )
    + ") AS u GROUP BY schema_name, agent, kind, tool, success, status_code"
)


def _activity_sql(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], float]:
    return {tuple(r[:6]): round(float(r[6]), 6) for r in rows}


def _activity_model(warehouse: Path) -> dict[tuple[Any, ...], float]:
    """The usage model's activity (what the dashboard counts), summed like _ACTIVITY."""
    from datetime import UTC, datetime

    from otel_ingest.usage import query
    from otel_ingest.usage.store import UsageStore

    activity = query.load(UsageStore(Warehouse(str(warehouse))), query.Filters(since=datetime(2000, 1, 1, tzinfo=UTC)))
    keys = ["schema_name", "agent", "kind", "tool", "success", "status_code"]
    sums = (
        activity.activity.with_columns(pl.col("table_set").str.split(".").list.get(1).alias("schema_name"))
        .group_by(keys)
        .agg(pl.col("value").sum())
    )
    return {tuple(r[:6]): round(float(r[6]), 6) for r in sums.select(*keys, "value").iter_rows()}


def _tables(warehouse: Path) -> Iterator[tuple[str, str, Path]]:
    """(schema, table, location) of every table the views read."""
    yield "telemetry", "usage_prices", warehouse / "main" / "telemetry" / "usage_prices"
    for schema in SCHEMAS:
        for prefix in PREFIXES:
            for signal in SIGNALS:
                yield schema, f"{prefix}_otel_{signal}", warehouse / "main" / schema / f"{prefix}_otel_{signal}"


@pytest.fixture(scope="module")
def report(warehouse: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    return _report(warehouse)


def test_views_in_duckdb_equal_the_report(warehouse: Path, report: dict[tuple[str, ...], dict[str, Any]]) -> None:
    import duckdb

    connection = duckdb.connect()
    connection.execute("CREATE MACRO timestamp_micros(x) AS make_timestamp(x)")
    connection.execute("ATTACH ':memory:' AS lake")
    for schema in SCHEMAS:
        connection.execute(f"CREATE SCHEMA lake.{schema}")
    for schema, table, location in _tables(warehouse):
        connection.register("raw", pl.read_delta(str(location)))
        connection.execute(f"CREATE TABLE lake.{schema}.{table} AS SELECT * FROM raw")
        connection.unregister("raw")
    for schema in SCHEMAS:
        for prefix in PREFIXES:
            for statement in _views("lake", schema, prefix):
                connection.execute(statement)
    assert {k[0] for k in report} == set(SCHEMAS)
    assert _rows_to_dict(connection.execute(_query("lake")).fetchall()) == report
    prompts = connection.execute(
        "SELECT COUNT(*) FROM lake.telemetry.claude_usage_activity WHERE kind = 'prompt'"
    ).fetchone()
    assert prompts is not None and prompts[0] > 0
    # Activity: the same sums as the usage model, with events and with metrics only (tool
    # decisions, tool calls and API errors then come from the agents' event counters).
    activity = _activity_sql(connection.execute(_ACTIVITY.replace("<catalog>", "lake")).fetchall())
    assert activity == _activity_model(warehouse)
    fallback = {key for key in activity if key[0] == "metrics_only" and key[2] in ("tool_decision", "tool_call")}
    assert "claude-code" in {key[1] for key in fallback}, sorted(activity)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local SparkSession for the module (starting one costs seconds of JVM)."""
    if os.environ.get("OTEL_INGEST_REQUIRE_SPARK"):
        import pyspark.sql as pyspark_sql  # .ci/run installs pyspark: never skip there
    else:
        pyspark_sql = pytest.importorskip("pyspark.sql", reason="pyspark: .venv/bin/pip install -e '.[spark]'")
    folder = tmp_path_factory.mktemp("spark")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only, and no warning about it
    session = (
        pyspark_sql.SparkSession.builder.master("local[1]")
        .appName("otel-ingest-views")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(folder / "spark-warehouse"))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={folder}")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_views_in_spark_sql_equal_the_report(
    warehouse: Path, spark: Any, report: dict[tuple[str, ...], dict[str, Any]]
) -> None:
    started = time.perf_counter()
    for schema in SCHEMAS:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS spark_catalog.{schema}")
    for schema, table, location in _tables(warehouse):
        # The tables' folders hold exactly their current Parquet files (nothing compacted
        # or removed here); Spark skips _delta_log. No copy: the catalog points at them.
        name = f"spark_catalog.{schema}.{table}"
        if deltalake.DeltaTable(str(location)).file_uris():
            spark.catalog.createTable(name, path=str(location), source="parquet")
        else:  # the metrics-only table sets' empty logs tables
            schema_of = spark.table(f"spark_catalog.telemetry.{table}").schema
            spark.catalog.createTable(name, path=str(location), source="parquet", schema=schema_of)
    for schema in SCHEMAS:
        for prefix in PREFIXES:
            for statement in _views("spark_catalog", schema, prefix):
                spark.sql(statement)
    rows = [tuple(r) for r in spark.sql(_query("spark_catalog")).collect()]
    assert _rows_to_dict(rows) == report
    kinds = {r[0] for r in spark.sql("SELECT kind FROM spark_catalog.telemetry.claude_usage_activity").collect()}
    assert {"prompt", "tool_call", "tool_decision", "lines_added"} <= kinds
    print(f"Spark SQL: tables, views and queries in {time.perf_counter() - started:.1f} s")
