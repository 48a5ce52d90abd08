"""Storage footprint under a steady load, short retention vs Delta's default, side by side.

    python bench/footprint.py [--minutes 10] [--rate 10] [--interval 30] [--retention 'interval 1 minute']

Two servers, each with its own warehouse and background maintenance every
``--interval`` seconds, get the same steady load (``--rate`` requests/s each, captured
requests of every client scaled to ~``--records`` records). Their tables differ only in
their retentions: "short" keeps replaced files and log entries for ``--retention``;
"7-day" keeps them as Delta does by default (files 7 days, log 1 day as otel-ingest
used to). Every ``--sample`` seconds it prints, per server, the bytes in storage per
record acknowledged so far, the number of objects (data files + log files) and the mean
commit time over the last sample period (from /metrics). At the end both servers stop,
each warehouse is compacted and vacuumed to the bone (``maintain --retention-hours 0``)
to get the compacted size, and it prints storage / compacted and commit time at the end
vs the start.

The run compresses time: a retention of minutes in a 10-minute run stands for a
retention of hours in a table that lives for weeks (see docs/operations.md).
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from run import PREFIX, Payload, build_mix  # noqa: E402

from otel_ingest.maintenance import maintain  # noqa: E402
from otel_ingest.tables import (  # noqa: E402
    DELETED_FILE_RETENTION_PROPERTY,
    LOG_RETENTION_PROPERTY,
    Warehouse,
    interval_seconds,
    table_set,
)
from support import Server  # noqa: E402

DELTA_DEFAULTS = {DELETED_FILE_RETENTION_PROPERTY: "interval 7 days", LOG_RETENTION_PROPERTY: "interval 1 day"}


@dataclass
class Paced:
    """``clients`` connections sending requests to one server at a fixed total rate."""

    url: str
    mix: list[Payload]
    rate: float
    clients: int
    records: int = 0
    requests: int = 0
    errors: int = 0
    late: int = 0  # requests sent more than a second behind schedule
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        started = time.monotonic()
        self.threads = [threading.Thread(target=self._client, args=(k, started)) for k in range(self.clients)]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _client(self, index: int, started: float) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        i = index  # client k sends requests k, k + clients, k + 2 clients, ... of the schedule
        while not self.stop.is_set():
            due = started + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
                if self.stop.is_set():
                    break
            elif delay < -1:
                with self.lock:
                    self.late += 1
            payload = self.mix[i % len(self.mix)]
            i += self.clients
            headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": payload.table}
            connection.request("POST", f"/v1/{payload.signal}", body=payload.body, headers=headers)
            response = connection.getresponse()
            response.read()
            with self.lock:
                self.requests += 1
                if response.status == 200:
                    self.records += payload.records
                else:
                    self.errors += 1
        connection.close()


@dataclass(frozen=True)
class Storage:
    data_bytes: int
    log_bytes: int
    data_files: int
    log_files: int

    @property
    def bytes(self) -> int:
        return self.data_bytes + self.log_bytes

    @property
    def objects(self) -> int:
        return self.data_files + self.log_files


def storage(warehouse: Path) -> Storage:
    data_bytes = log_bytes = data_files = log_files = 0
    for log_dir in warehouse.glob("*/*/*/_delta_log"):
        for path in log_dir.parent.rglob("*"):
            if not path.is_file():
                continue
            if log_dir in path.parents:
                log_files += 1
                log_bytes += path.stat().st_size
            else:
                data_files += 1
                data_bytes += path.stat().st_size
    return Storage(data_bytes, log_bytes, data_files, log_files)


def commit_totals(server: Server) -> tuple[float, float]:
    """(seconds, commits) summed over every table, from the server's /metrics."""
    seconds = count = 0.0
    for family in text_string_to_metric_families(server.ops.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "otel_ingest_commit_seconds_sum":
                seconds += sample.value
            elif sample.name == "otel_ingest_commit_seconds_count":
                count += sample.value
    return seconds, count


@dataclass(frozen=True)
class Sample:
    minutes: float
    records: int
    used: Storage
    commit_ms: float  # mean over the sample period


@dataclass
class Side:
    label: str
    warehouse: Path
    server: Server
    load: Paced
    commits: tuple[float, float] = (0.0, 0.0)
    samples: list[Sample] = field(default_factory=list)


def start_side(
    label: str, folder: Path, properties: dict[str, str], args: argparse.Namespace, mix: list[Payload]
) -> Side:
    warehouse = folder / label / "warehouse"
    store = Warehouse(str(warehouse))
    for signal, name in table_set(PREFIX).items():
        store.create_for_signal(name, signal)
        store.set_properties(name, properties)
    # Hours compressed into minutes: the full vacuum (which also deletes unreferenced files)
    # may use the short retention too; commits here take seconds, not a minute.
    env = {"OTEL_INGEST_FULL_VACUUM_MIN_SECONDS": str(interval_seconds(properties[DELETED_FILE_RETENTION_PROPERTY]))}
    server = Server(warehouse, "--maintenance-interval", str(args.interval), "--log-level", "warning", env=env)
    return Side(label, warehouse, server, Paced(server.url, mix, args.rate, args.clients))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="load time (default 10)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s to each server")
    parser.add_argument("--clients", type=int, default=8, help="connections sharing that rate")
    parser.add_argument("--records", type=int, default=20, help="records per request (captures are scaled)")
    parser.add_argument("--interval", type=float, default=30.0, help="--maintenance-interval of both servers")
    parser.add_argument("--retention", default="interval 1 minute", help="both retentions of the short side")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    mix = build_mix(args.records)
    folder = Path(tempfile.mkdtemp(prefix="otel-footprint-"))
    short = {DELETED_FILE_RETENTION_PROPERTY: args.retention, LOG_RETENTION_PROPERTY: args.retention}
    sides = [start_side("short", folder, short, args, mix), start_side("7-day", folder, DELTA_DEFAULTS, args, mix)]
    print(
        f"{args.minutes:g} min at {args.rate:g} requests/s (~{args.rate * args.records:,.0f} records/s) to each "
        f"server; maintenance every {args.interval:g} s; short retention {args.retention!r}; in {folder}",
        flush=True,
    )
    header = (
        f"{'min':>5} {'side':>6} {'records':>9} {'storage B/rec':>13} {'data files':>10} {'log files':>9} "
        f"{'objects':>8} {'commit ms':>9}"
    )
    print(header)
    print("-" * len(header), flush=True)
    started = time.monotonic()
    for side in sides:
        side.commits = commit_totals(side.server)
        side.load.start()
    end = started + args.minutes * 60
    try:
        while time.monotonic() < end:
            time.sleep(max(0.0, min(args.sample, end - time.monotonic())))
            for side in sides:
                seconds, count = commit_totals(side.server)
                window = (seconds - side.commits[0]) / max(1.0, count - side.commits[1]) * 1000
                side.commits = (seconds, count)
                sample = Sample((time.monotonic() - started) / 60, side.load.records, storage(side.warehouse), window)
                side.samples.append(sample)
                records = max(1, sample.records)
                print(
                    f"{sample.minutes:5.1f} {side.label:>6} {sample.records:9,d} "
                    f"{sample.used.bytes / records:13.1f} {sample.used.data_files:10,d} {sample.used.log_files:9,d} "
                    f"{sample.used.objects:8,d} {window:9.1f}",
                    flush=True,
                )
    finally:
        for side in sides:
            side.load.join()
            side.server.stop()
    for side in sides:
        report(side)


def report(side: Side) -> None:
    """The side's end state against its compacted size, and how the overhead evolved."""
    before = storage(side.warehouse)
    warehouse = Warehouse(str(side.warehouse))
    for name in table_set(PREFIX).values():
        done = maintain(warehouse, name, retention_hours=0, force=True)  # the servers have stopped
        assert done.skipped is None, done
    compacted = storage(side.warehouse)
    records = max(1, side.load.records)
    # The data the table needs; the log left after clean-up depends on its own retention.
    compacted_per_record = compacted.data_bytes / records
    periods = max(1, len(side.samples) // 5)
    first = sum(s.commit_ms for s in side.samples[:periods]) / periods
    last = sum(s.commit_ms for s in side.samples[-periods:]) / periods
    print(
        f"\n{side.label}: {side.load.records:,} records in {side.load.requests:,} requests "
        f"({side.load.errors} errors, {side.load.late} sent >1 s late)\n"
        f"  at the end: {before.bytes / records:.1f} B/record in storage "
        f"({before.data_bytes / records:.1f} data + {before.log_bytes / records:.1f} log), "
        f"{before.objects:,} objects ({before.data_files:,} data, {before.log_files:,} log)\n"
        f"  compacted:  {compacted_per_record:.1f} B/record of data in {compacted.data_files} files; "
        f"storage / compacted = {before.bytes / max(1, compacted.data_bytes):.2f}x "
        f"(data only {before.data_bytes / max(1, compacted.data_bytes):.2f}x)\n"
        f"  commit ms: first {periods} samples {first:.1f}, last {periods} samples {last:.1f} "
        f"(end / start = {last / max(first, 1e-9):.2f})\n"
        f"  overhead = storage - records so far x compacted B/record (what retention keeps), MB:"
    )
    print(
        "   "
        + "  ".join(
            f"{s.minutes:.0f}m {(s.used.bytes - s.records * compacted_per_record) / 1e6:.2f}"
            for s in side.samples[periods - 1 :: periods]
        )
    )


if __name__ == "__main__":
    main()
