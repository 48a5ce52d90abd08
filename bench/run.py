"""End-to-end benchmark of otel-ingest on this machine, measured side by side in one run.

    python bench/run.py [--seconds 8] [--clients 1,8,32] [--records 100] [--json] [--signals logs]

Prints, for the group-commit server (defaults) and a naive server that commits every
request on its own (``--commit-max-rows 1 --commit-max-delay 0``):
  (a)/(b) records/s and p50/p99 time-to-200 through HTTP with 1, 8 and 32 clients
  (c)     the limit: protobuf parse + Arrow build + Parquet encode, no HTTP, no Delta
  (d)     commits and files created, bytes on disk per record vs raw OTLP bytes,
          before and after ``maintain``
  (e)     server CPU-seconds per 100k records
and the ratios (a)/(b) and (a)/(c); with ``--json`` also the group-commit server fed the same
mix in OTLP/JSON, and protobuf/JSON records/s. The machine is shared and noisy: compare the
ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from otel_ingest import decode, otlp_json, wire  # noqa: E402
from otel_ingest.flatten import FLATTENERS  # noqa: E402
from otel_ingest.flatten.common import Columns  # noqa: E402
from otel_ingest.maintenance import maintain  # noqa: E402
from otel_ingest.tables import TableName, Warehouse  # noqa: E402
from support import Server, load_captures  # noqa: E402

PREFIX = "main.bench.b"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Payload:
    """One request body of the replay mix."""

    signal: str
    body: bytes
    records: int
    content_type: str = "application/x-protobuf"

    @property
    def table(self) -> str:
        suffix = {"metrics": "metrics", "logs": "logs", "traces": "spans"}[self.signal]
        return f"{PREFIX}_otel_{suffix}"


def _records_of(signal: str, message: Message) -> list[tuple[object, str, list[Message]]]:
    """(scope container, repeated-field name, records) of every scope in a request."""
    out = []
    for resource in getattr(message, f"resource_{'spans' if signal == 'traces' else signal}"):
        scopes = getattr(resource, f"scope_{'spans' if signal == 'traces' else signal}")
        for scope in scopes:
            name = {"metrics": "metrics", "logs": "log_records", "traces": "spans"}[signal]
            out.append((scope, name, list(getattr(scope, name))))
    return out


def _scale(signal: str, message: Message, target: int) -> Message:
    """Repeat a capture's records (data points for metrics) until it holds about ``target``.

    Copies get distinct timestamps (and span ids), so that they compress like real
    records rather than like exact duplicates.
    """
    copies: list[Message] = []
    if signal == "metrics":
        for _, _, metrics in _records_of(signal, message):
            for metric in metrics:
                data = getattr(metric, metric.WhichOneof("data"))
                points = list(data.data_points)
                while points and len(data.data_points) < max(1, target // max(1, len(metrics))):
                    data.data_points.extend(points)
                copies.extend(data.data_points)
    else:
        for scope, name, records in _records_of(signal, message):
            repeated = getattr(scope, name)
            while records and len(repeated) < target:
                repeated.extend(records)
            copies.extend(repeated)
    for offset, record in enumerate(copies):
        field_name = "start_time_unix_nano" if signal == "traces" else "time_unix_nano"
        setattr(record, field_name, getattr(record, field_name) + offset * 1_000_003)
        if signal == "traces" or (signal == "logs" and record.span_id):  # type: ignore[attr-defined]
            record.span_id = os.urandom(8)  # type: ignore[attr-defined]
    return message


def build_mix(records: int) -> list[Payload]:
    """Every captured request (all clients, all signals) scaled to ~``records`` records, as protobuf."""
    mix = []
    for capture in load_captures():
        body = wire.decompress(capture.body, capture.header("content-encoding"), 1 << 30)
        encoding = wire.media_type(capture.header("content-type"))
        message, _ = wire.decode_request(capture.signal, body, encoding)  # type: ignore[arg-type]
        message = _scale(capture.signal, message, records)
        count = FLATTENERS[capture.signal](message).rows  # type: ignore[index]
        mix.append(Payload(capture.signal, message.SerializeToString(), count))
    return mix


def as_json(mix: list[Payload]) -> list[Payload]:
    """The same requests in OTLP/JSON (camelCase, int64 as strings, hex ids)."""
    out = []
    for payload in mix:
        message, _ = wire.decode_request(payload.signal, payload.body, "protobuf")  # type: ignore[arg-type]
        out.append(Payload(payload.signal, otlp_json.dumps(message), payload.records, "application/json"))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    records: int = 0
    raw_bytes: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive(url: str, mix: list[Payload], clients: int, seconds: float) -> tuple[Run, float]:
    run = Run()
    stop = threading.Event()

    host, port = url.removeprefix("http://").split(":")

    def client(index: int) -> None:
        # The standard library's client: the load generator shares the 2 cores with the
        # server, so it should spend as little CPU per request as possible.
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        i = index
        while not stop.is_set():
            payload = mix[i % len(mix)]
            i += clients
            headers = {"content-type": payload.content_type, "x-databricks-uc-table-name": payload.table}
            started = time.perf_counter()
            connection.request("POST", f"/v1/{payload.signal}", body=payload.body, headers=headers)
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with run.lock:
                if response.status == 200:
                    run.latencies.append(elapsed)
                    run.records += payload.records
                    run.raw_bytes += len(payload.body)
                else:
                    run.errors += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return run, time.perf_counter() - started


@dataclass
class Result:
    mode: str
    clients: int
    records_per_s: float
    p50_ms: float
    p99_ms: float
    commits: int
    files: int
    disk_per_record: float
    disk_per_record_after: float
    raw_per_record: float
    cpu_per_100k: float
    errors: int


def table_stats(warehouse: Path) -> tuple[int, int, int]:
    commits = files = size = 0
    for log_dir in warehouse.glob("*/*/*/_delta_log"):
        commits += len(list(log_dir.glob("*.json"))) - 1  # version 0 is the creation
        for part in log_dir.parent.glob("*.parquet"):
            files += 1
            size += part.stat().st_size
    return commits, files, size


def measure(mode: str, args: tuple[str, ...], mix: list[Payload], clients: int, seconds: float) -> Result:
    folder = Path(tempfile.mkdtemp(prefix="otel-bench-"))
    server = Server(folder / "warehouse", "--create-tables", PREFIX, "--log-level", "warning", *args)
    try:
        warm_up, _ = drive(server.url, mix, 1, 0.5)  # tables opened, code paths loaded
        _, _, warm_size = table_stats(server.warehouse)
        warm_commits, warm_files, _ = table_stats(server.warehouse)
        cpu_before = cpu_seconds(server.process.pid)
        run, elapsed = drive(server.url, mix, clients, seconds)
        cpu = cpu_seconds(server.process.pid) - cpu_before
    finally:
        server.stop()
    commits, files, size = table_stats(server.warehouse)
    warehouse = Warehouse(str(server.warehouse))
    for signal_table in ("metrics", "logs", "spans"):
        maintain(warehouse, TableName.parse(f"{PREFIX}_otel_{signal_table}"), retention_hours=0, force=True)
    _, _, size_after = table_stats(server.warehouse)
    records = max(1, run.records)
    latencies = sorted(run.latencies) or [0.0]
    return Result(
        mode=mode,
        clients=clients,
        records_per_s=run.records / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        commits=commits - warm_commits,
        files=files - warm_files,
        disk_per_record=(size - warm_size) / records,
        # Compaction merges the warm-up's rows too.
        disk_per_record_after=size_after / (records + warm_up.records),
        raw_per_record=run.raw_bytes / records,
        cpu_per_100k=cpu / records * 100_000,
        errors=run.errors,
    )


def limit(mix: list[Payload], seconds: float, group: int = 32) -> float:
    """(c): decode + flatten + Arrow + Parquet encode in this process, records/s.

    Requests are decoded one by one by the server's decoder (the native one when it was built,
    as in the server) and their rows encoded per signal in groups of ``group`` requests, as the
    server's commits do; no HTTP, no Delta log.
    """
    records = 0
    pending: dict[str, list[Columns]] = {}
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        payload = mix[i % len(mix)]
        i += 1
        flattened, _ = decode.decode(payload.signal, payload.body, "protobuf")  # type: ignore[arg-type]
        columns = flattened.columns
        parts = pending.setdefault(payload.signal, [])
        parts.append(columns)
        if len(parts) == group:
            batch = Columns.finish_all(parts)
            pq.write_table(pa.Table.from_batches([batch]), io.BytesIO(), compression="zstd", compression_level=3)
            records += batch.num_rows
            parts.clear()
    return records / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per configuration")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--records", type=int, default=20, help="records per request (captures are scaled)")
    parser.add_argument("--group-args", default="", help="extra server flags for the group-commit mode")
    parser.add_argument("--json", action="store_true", help="also the group-commit server fed the mix in OTLP/JSON")
    parser.add_argument("--signals", default="metrics,logs,traces", help="the signals of the mix (e.g. logs)")
    args = parser.parse_args()
    mix = [p for p in build_mix(args.records) if p.signal in args.signals.split(",")]
    print(
        f"Replay mix: {len(mix)} captured requests scaled to ~{args.records} records, "
        f"{sum(p.records for p in mix) / len(mix):.0f} records and "
        f"{sum(len(p.body) for p in mix) / len(mix) / 1024:.1f} KiB protobuf per request on average."
    )
    modes = {"group": tuple(args.group_args.split()), "naive": ("--commit-max-rows", "1", "--commit-max-delay", "0")}
    if args.json:
        modes["json"] = modes["group"]
    json_mix = as_json(mix) if args.json else mix
    results = []
    for clients in (int(c) for c in args.clients.split(",")):
        for mode, extra in modes.items():
            result = measure(mode, extra, json_mix if mode == "json" else mix, clients, args.seconds)
            results.append(result)
            print(f"  measured {mode} with {clients} clients: {result.records_per_s:,.0f} records/s", flush=True)
    ceiling = limit(mix, args.seconds)
    header = (
        f"{'mode':6} {'clients':>7} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'commits':>8} {'files':>6} "
        f"{'disk B/rec':>10} {'after maint':>11} {'OTLP B/rec':>10} {'CPU s/100k':>10} {'errors':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.mode:6} {r.clients:7d} {r.records_per_s:10,.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.commits:8d} "
            f"{r.files:6d} {r.disk_per_record:10.1f} {r.disk_per_record_after:11.1f} {r.raw_per_record:10.1f} "
            f"{r.cpu_per_100k:10.2f} {r.errors:6d}"
        )
    decoder = "native" if decode.use_native() else "python"
    print(
        f"\n(c) limit, decode ({decoder}) + Arrow + Parquet in one process, 32 requests per Parquet file: "
        f"{ceiling:,.0f} records/s"
    )
    by = {(r.mode, r.clients): r for r in results}
    for clients in sorted({r.clients for r in results}):
        group, naive = by[("group", clients)], by[("naive", clients)]
        print(
            f"clients={clients:2d}: (a)/(b) = {group.records_per_s / max(naive.records_per_s, 1e-9):5.1f}x   "
            f"(a)/(c) = {group.records_per_s / ceiling:5.2f} (c is {ceiling / max(group.records_per_s, 1e-9):.1f}x (a))"
            + (
                f"   protobuf/JSON = {group.records_per_s / max(by[('json', clients)].records_per_s, 1e-9):4.2f}x"
                if args.json
                else ""
            )
        )


if __name__ == "__main__":
    main()
