"""Benchmark of the usage model on synthetic raw logs shaped like Claude Code's captures.

    python bench/usage.py [--rows 10000000] [--append 10000] [--days 30]

Writes ``--rows`` raw log rows (user_prompt, api_request, assistant_response,
tool_decision, tool_result in the captures' proportions, 50 users, 30+ days) into a
``*_otel_logs`` Delta table in commits of 100k rows, then measures:
  (a) the first refresh of the derived tables (reads everything);
  (b) a refresh after ``--append`` new rows (one more commit): reads only that file;
  (c) the dashboard's ``/api/summary`` (every panel) for a 30-day range, in process through
      Starlette's test client, served from the facts (as before the rollup tables) and from
      the rollup tables, side by side: a new process's first request (nothing in memory),
      then p50/p95 of 20 calls after 2 warm-up calls, each with another user filter (the
      range is warm, the panels are computed), the same request again (answered from
      memory until the next refresh), and a 1-day range.
``--data DIR`` keeps the generated raw table and reuses it (each run refreshes a copy).
The machine is shared: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_ingest.dashboard.app import DashboardSettings, create_dashboard_app  # noqa: E402
from otel_ingest.gateway.tables import SCHEMA_PROPERTY as GATEWAY_PROPERTY  # noqa: E402
from otel_ingest.gateway.tables import SCHEMA_VERSION as GATEWAY_VERSION  # noqa: E402
from otel_ingest.gateway.tables import USAGE_SCHEMA as GATEWAY_SCHEMA  # noqa: E402
from otel_ingest.schema import signal_schema  # noqa: E402
from otel_ingest.tables import TableName, Warehouse  # noqa: E402
from otel_ingest.usage.store import UsageStore  # noqa: E402

EVENTS = ["user_prompt", "api_request", "assistant_response", "tool_decision", "tool_result"]
DAY_NS = 86_400 * 10**9


def synthetic_logs(rows: int, start_ns: int, days: int, seed: int) -> pa.Table:
    """``rows`` Claude-Code-shaped log records spread over ``days`` days."""
    i = pl.int_range(0, rows, eager=True).alias("i")
    frame = (
        pl.DataFrame(i)
        .with_columns(
            (pl.col("i") * 7919 + seed).alias("h"),
        )
        .with_columns(
            (start_ns + (pl.col("h") % (days * 86_400_000)) * 1_000_000).alias("time_unix_nano"),
            pl.lit(EVENTS).list.get(pl.col("i") % 5).alias("event"),
            ("user-" + (pl.col("h") % 50).cast(pl.String)).alias("user"),
            ("session-" + (pl.col("h") % 5000).cast(pl.String)).alias("session"),
            pl.lit(["claude-opus-4-8", "claude-sonnet-4-5"]).list.get(pl.col("h") % 2).alias("model"),
        )
    )

    def kv(key: str, value: pl.Expr) -> pl.Expr:
        return pl.struct(pl.lit(key).alias("key"), value.cast(pl.String).alias("value"))

    api = pl.col("event") == "api_request"
    attributes = pl.concat_list(
        kv("event.name", pl.col("event")),
        kv("user.id", pl.col("user")),
        kv("session.id", pl.col("session")),
        kv("model", pl.col("model")),
        kv("input_tokens", pl.when(api).then(pl.col("h") % 3000)),
        kv("output_tokens", pl.when(api).then(pl.col("h") % 500)),
        kv("cache_read_tokens", pl.when(api).then(pl.col("h") % 9000)),
        kv("cache_creation_tokens", pl.when(api).then(pl.col("h") % 700)),
        kv("cost_usd", pl.when(api).then((pl.col("h") % 1000) / 10000)),
        kv("duration_ms", pl.col("h") % 4000),
        kv("tool_name", pl.lit("Write")),
        kv("decision", pl.lit("accept")),
        kv("success", pl.lit("true")),
    ).list.eval(pl.element().filter(pl.element().struct.field("value").is_not_null()))
    frame = frame.select(
        pl.lit(None, pl.String).alias("event_name"),
        pl.col("time_unix_nano"),
        pl.col("time_unix_nano").alias("observed_time_unix_nano"),
        ("claude_code." + pl.col("event")).alias("body"),
        attributes.alias("attributes"),
        pl.struct(
            pl.concat_list(kv("service.name", pl.lit("claude-code"))).alias("attributes"),
            pl.lit(0, pl.Int32).alias("dropped_attributes_count"),
        ).alias("resource"),
    )
    table = frame.to_arrow()
    schema = signal_schema("logs")
    columns: list[pa.Array] = []
    for field in schema:
        if field.name == "attributes":
            columns.append(_map(table.column("attributes").combine_chunks()))
        elif field.name == "resource":
            resource = table.column("resource").combine_chunks()
            columns.append(
                pa.StructArray.from_arrays(
                    [_map(resource.field("attributes")), resource.field("dropped_attributes_count")],
                    fields=list(field.type),
                )
            )
        elif field.name in table.column_names:
            columns.append(table.column(field.name).combine_chunks().cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def gateway_rows(rows: int, start_ns: int, days: int, seed: int, every: int) -> pa.Table:
    """The AI gateway's usage rows for every ``every``-th ``api_request`` among the
    ``rows`` records ``synthetic_logs(rows, start_ns, days, seed)`` writes: the same calls
    (tokens, session, model, end time), as the gateway saw them, so the usage model
    matches each to its telemetry copy and counts it once."""
    i = pl.int_range(0, rows, eager=True).alias("i")
    frame = (
        pl.DataFrame(i)
        .filter((pl.col("i") % 5 == 1) & ((pl.col("i") // 5) % every == 0))
        .with_columns((pl.col("i") * 7919 + seed).alias("h"))
    )
    ended = start_ns + (pl.col("h") % (days * 86_400_000)) * 1_000_000
    latency = pl.col("h") % 4000
    event_time = pl.from_epoch(ended - latency * 1_000_000, time_unit="ns").dt.cast_time_unit("us")
    table = frame.select(
        ("req-" + pl.lit(str(seed)) + "-" + pl.col("i").cast(pl.String)).alias("request_id"),
        event_time.dt.replace_time_zone("UTC").alias("event_time"),
        event_time.dt.date().alias("event_date"),
        pl.lit("/anthropic/v1/messages").alias("route"),
        pl.lit("messages").alias("api_type"),
        pl.lit(["claude-opus-4-8", "claude-sonnet-4-5"]).list.get(pl.col("h") % 2).alias("destination_model"),
        ("user-" + (pl.col("h") % 50).cast(pl.String)).alias("requester"),
        pl.lit("claude_code").alias("agent"),
        ("session-" + (pl.col("h") % 5000).cast(pl.String)).alias("session_id"),
        pl.lit(200, pl.Int32).alias("status_code"),
        latency.alias("latency_ms"),
        (pl.col("h") % 3000 + pl.col("h") % 9000 + pl.col("h") % 700).alias("input_tokens"),
        (pl.col("h") % 9000).alias("cache_read_input_tokens"),
        (pl.col("h") % 700).alias("cache_creation_input_tokens"),
        (pl.col("h") % 500).alias("output_tokens"),
        pl.lit(0, pl.Int64).alias("reasoning_output_tokens"),
        ((pl.col("h") % 1000) / 10000).alias("cost_usd"),
    ).to_arrow()
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in GATEWAY_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=GATEWAY_SCHEMA)


def add_gateway(warehouse: Warehouse, rows: int, start_ns: int, days: int, commit_rows: int, every: int) -> int:
    """The gateway's usage table for the generated raw rows; returns its row count."""
    name = TableName.parse("main.ai_gateway.usage")
    warehouse.create(name, GATEWAY_SCHEMA, {GATEWAY_PROPERTY: GATEWAY_VERSION})
    written = 0
    for first in range(0, rows, commit_rows):
        part = gateway_rows(min(commit_rows, rows - first), start_ns, days, first, every)
        deltalake.write_deltalake(warehouse.location(name), part, mode="append")
        written += part.num_rows
    return written


def _map(entries: pa.Array) -> pa.Array:
    """polars' large_list<struct<key, value>> → Arrow map<string, string>."""
    flat = entries.flatten()
    return pa.MapArray.from_arrays(
        entries.offsets.cast(pa.int32()), flat.field("key").cast(pa.string()), flat.field("value").cast(pa.string())
    )


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency(call: Callable[[], object], runs: int = 20, warm_up: int = 2) -> tuple[float, float]:
    """(p50, p95) seconds of ``runs`` calls, after ``warm_up`` calls."""
    for _ in range(warm_up):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[math.ceil(0.95 * len(samples)) - 1]


def generate(raw: Path, rows: int, days: int, commit_rows: int) -> int:
    """The raw table under ``raw`` (kept between runs with --data: generation is slow)."""
    warehouse = Warehouse(str(raw))
    name = TableName.parse("main.bench.claude_otel_logs")
    location = warehouse.location(name)
    written = 0
    if deltalake.DeltaTable.is_deltatable(location):
        start_ns = int(deltalake.DeltaTable(location).metadata().configuration["bench.start_ns"])
        written = pl.scan_delta(location).select(pl.len()).collect().item()
        if written == rows:
            print(f"reusing {written:,} raw log rows in {raw}")
            return start_ns
        if written > rows:
            shutil.rmtree(raw / "main")
            written = 0
    if not written:
        warehouse.create_for_signal(name, "logs")
        start_ns = (time.time_ns() // DAY_NS - days) * DAY_NS
        deltalake.DeltaTable(location).alter.set_table_properties(
            {"bench.start_ns": str(start_ns)}, raise_if_not_exists=False
        )
    # Rows are a function of their index: an interrupted generation goes on where it stopped.
    started = time.perf_counter()
    while written < rows:
        n = min(commit_rows, rows - written)
        deltalake.write_deltalake(location, synthetic_logs(n, start_ns, days, written), mode="append")
        written += n
    print(f"wrote {written:,} raw log rows in {time.perf_counter() - started:.1f} s")
    return start_ns


def api(warehouse: Warehouse, end: datetime, rollups: bool, runs: int, note: str = "") -> None:
    """(c) /api/summary timings, served from the facts (``rollups=False``, as before the
    rollup tables) or from the rollup tables."""
    settings = DashboardSettings(warehouse, refresh_seconds=3600, rollups=rollups)
    month = {"since": (end - timedelta(days=31)).isoformat(), "until": end.isoformat()}
    day = {"since": (end - timedelta(days=2)).isoformat(), "until": (end - timedelta(days=1)).isoformat()}
    whole_days = {"since": (end - timedelta(days=31)).date().isoformat(), "until": end.date().isoformat()}

    def cold() -> object:
        # A new dashboard process's first request (nothing in memory, tables opened).
        response = TestClient(create_dashboard_app(settings)).get("/api/summary", params=whole_days)
        assert response.status_code == 200, response.text
        return response.json()

    with TestClient(create_dashboard_app(settings)) as client:
        users = iter(range(10**6))

        def get(params: dict[str, str]) -> Callable[[], object]:
            def call() -> object:
                response = client.get("/api/summary", params=params)
                assert response.status_code == 200, response.text
                return response.json()

            return call

        def new_filter() -> object:
            # Another viewer's filter on the same range: the range is warm, the panels computed.
            return get({**month, "user": f"user-{next(users) % 50}"})()

        def computed(**wanted: str) -> Callable[[], object]:
            # The range is warm; a parameter the server ignores makes each answer computed
            # (not the stored answer of the same request).
            return lambda: get({**month, **wanted, "nonce": str(next(users))})()

        label = ("rollups" if rollups else "facts  ") + note
        timings = [
            ("30-day whole days, new process", latency(cold, max(3, runs // 4), warm_up=0)),
            ("30-day warm, no filter (computed)", latency(computed(), runs)),
            ("30-day warm, agent filter (computed)", latency(computed(agent="claude-code"), runs)),
            ("30-day warm, new user filter per call", latency(new_filter, min(runs, 48))),
            ("30-day, the same request again", latency(get(month), runs)),
            ("1-day, again", latency(get(day), runs)),
        ]
    for name, (p50, p95) in timings:
        print(f"(c) /api/summary from {label}: {name}: p50 {p50 * 1000:.1f} / p95 {p95 * 1000:.1f} ms [{_load()}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--append", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--commit-rows", type=int, default=100_000)
    parser.add_argument("--data", type=Path, help="keep the generated raw table here and reuse it next time")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--generate-only", action="store_true", help="write the raw table into --data and stop")
    parser.add_argument(
        "--gateway-every",
        type=int,
        default=0,
        help="then add the AI gateway's usage table with every N-th model call (on every day) and time again",
    )
    parser.add_argument(
        "--no-facts",
        action="store_true",
        help="time /api/summary from the rollups only (the facts path is slow at 10M)",
    )
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        raw = args.data or Path(folder) / "raw"
        start_ns = generate(raw, args.rows, args.days, args.commit_rows)
        if args.generate_only:
            return
        # Each run refreshes a copy: the raw table stays as generated.
        root = Path(folder) / "warehouse"
        shutil.copytree(raw / "main", root / "main")
        warehouse = Warehouse(str(root))
        location = warehouse.location(TableName.parse("main.bench.claude_otel_logs"))
        store = UsageStore(warehouse)
        first = store.refresh()
        print(
            f"(a) first refresh: {first.seconds:.2f} s for {first.rows_read:,} rows "
            f"({first.rows_read / first.seconds:,.0f} rows/s), of which rollups {first.rollup_seconds:.2f} s; "
            f"added {first.added}; peak RSS {_peak_rss_mib():,.0f} MiB [{_load()}]"
        )
        seconds, rollups, cpu = [], [], []
        for round_ in range(3):
            rows = synthetic_logs(args.append, start_ns, args.days, 10**9 + round_ * args.append)
            deltalake.write_deltalake(location, rows, mode="append")
            used = time.process_time()
            second = store.refresh()
            cpu.append(time.process_time() - used)
            seconds.append(second.seconds)
            rollups.append(second.rollup_seconds)
        # CPU seconds (all threads) tell what the refresh costs apart from the machine's load.
        print(
            f"(b) refresh after {args.append:,} new rows (3 rounds): "
            f"{' / '.join(f'{s:.3f}' for s in seconds)} s, of which rollups "
            f"{' / '.join(f'{s:.3f}' for s in rollups)} s; CPU {' / '.join(f'{s:.3f}' for s in cpu)} s; "
            f"{second.files_read} file read each [{_load()}]"
        )
        end = datetime.now(UTC) + timedelta(days=1)
        for rollups in (True,) if args.no_facts else (False, True):
            api(warehouse, end, rollups, args.runs)
        if args.gateway_every:
            # (d) The gateway saw some of the calls on every day: those days are read from
            # the facts (call-by-call matching), the rest of the range from the rollups.
            written = add_gateway(warehouse, args.rows, start_ns, args.days, args.commit_rows, args.gateway_every)
            third = store.refresh()
            print(
                f"(d) refresh after adding {written:,} gateway rows: {third.seconds:.2f} s "
                f"({third.files_read} files); peak RSS {_peak_rss_mib():,.0f} MiB [{_load()}]"
            )
            api(warehouse, end, True, args.runs, " with gateway days")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
