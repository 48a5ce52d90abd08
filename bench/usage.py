"""Benchmark of the usage model on synthetic raw logs shaped like Claude Code's captures.

    python bench/usage.py [--rows 10000000] [--append 10000] [--days 30]

Writes ``--rows`` raw log rows (user_prompt, api_request, assistant_response,
tool_decision, tool_result in the captures' proportions, 50 users, 30+ days) into a
``*_otel_logs`` Delta table in commits of 100k rows, then measures:
  (a) the first refresh of the derived tables (reads everything);
  (b) a refresh after ``--append`` new rows (one more commit): reads only that file;
  (c) query latency for a 30-day range, as the dashboard API answers it (p50/p95 of 20,
      warm), and the same for a 1-day range — the ratio shows the cost follows the range.
The machine is shared: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_ingest.schema import signal_schema  # noqa: E402
from otel_ingest.tables import TableName, Warehouse  # noqa: E402
from otel_ingest.usage import query  # noqa: E402
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


def _map(entries: pa.Array) -> pa.Array:
    """polars' large_list<struct<key, value>> → Arrow map<string, string>."""
    flat = entries.flatten()
    return pa.MapArray.from_arrays(
        entries.offsets.cast(pa.int32()), flat.field("key").cast(pa.string()), flat.field("value").cast(pa.string())
    )


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def latency(store: UsageStore, filters: query.Filters, runs: int = 20) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        usage = query.load(store, filters)
        query.group(usage.calls, ["day", "agent", "model"])
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--append", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--commit-rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        warehouse = Warehouse(folder)
        name = TableName.parse("main.bench.claude_otel_logs")
        warehouse.create_for_signal(name, "logs")
        location = warehouse.location(name)
        start_ns = (time.time_ns() // DAY_NS - args.days) * DAY_NS
        written = 0
        started = time.perf_counter()
        while written < args.rows:
            n = min(args.commit_rows, args.rows - written)
            deltalake.write_deltalake(location, synthetic_logs(n, start_ns, args.days, written), mode="append")
            written += n
        print(f"wrote {written:,} raw log rows in {time.perf_counter() - started:.1f} s")
        store = UsageStore(warehouse)
        first = store.refresh()
        print(
            f"(a) first refresh: {first.seconds:.2f} s for {first.rows_read:,} rows "
            f"({first.rows_read / first.seconds:,.0f} rows/s); added {first.added}"
        )
        deltalake.write_deltalake(location, synthetic_logs(args.append, start_ns, args.days, 10**9), mode="append")
        second = store.refresh()
        print(f"(b) refresh after {args.append:,} new rows: {second.seconds:.3f} s, {second.files_read} file read")
        end = datetime.now(UTC) + timedelta(days=1)
        month = query.Filters(since=end - timedelta(days=31), until=end)
        day = query.Filters(since=end - timedelta(days=2), until=end - timedelta(days=1))
        latency(store, month, 2)  # warm
        p50, p95 = latency(store, month)
        d50, d95 = latency(store, day)
        print(
            f"(c) 30-day query: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; "
            f"1-day: p50 {d50 * 1000:.0f} ms, p95 {d95 * 1000:.0f} ms; ratio 30d/1d p50 {p50 / d50:.1f}"
        )


if __name__ == "__main__":
    main()
