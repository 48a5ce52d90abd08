"""Storage footprint under a steady load, short retention vs the default, side by side.

    python bench/footprint.py [--minutes 10] [--rate 2] [--records 200] [--interval 5]
                              [--retention "interval 15 seconds"]

Two servers, each with its own warehouse and background maintenance every ``--interval``
seconds, get the same open-loop load: ``--rate`` requests/s each, sent on schedule
whatever the answers take, of captured requests of every client scaled to ~``--records``
records. Their tables differ only in their retentions: "short" keeps replaced files and
log entries for ``--retention``; "default" keeps them for what ``tables create`` sets
(two hours; within a 10-minute run that is the same as Delta's week: nothing expires).

Every ``--sample`` seconds it prints, per server, the bytes in storage per record
acknowledged so far, the number of objects, and what storage is made of: live files of
commits (level 0), live compacted files, replaced files not yet vacuumed, and the Delta
log. At the end both servers stop and each table is compacted into one file and vacuumed
to the bone (deltalake's own ``optimize.compact``, retention 0) to get the compacted size;
it prints storage / compacted at every sample (records so far x compacted bytes/record)
and the median commit time of the first and the last minute, from the servers' commit
log lines.

The run compresses time: a retention of seconds in a 10-minute run stands for a
retention of hours in a table that lives for weeks (see docs/operations.md, Footprint).
``--records`` sets how many records a commit holds, which sets the bytes per record a
commit writes: 200-record requests at 2/s commit ~200 records per file, as a server
taking ~15,000 records/s in 36-record requests does by group commit (while using far
less of the shared machine's CPU).
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import deltalake
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from run import PREFIX, Payload, build_mix  # noqa: E402

from otel_ingest.compaction import DataFile  # noqa: E402
from otel_ingest.tables import (  # noqa: E402
    DELETED_FILE_RETENTION_PROPERTY,
    LOG_RETENTION_PROPERTY,
    TABLE_DEFAULTS,
    Warehouse,
    interval_seconds,
    table_set,
)
from otel_ingest.writer import COMPACTED_WRITER_PROPERTIES  # noqa: E402
from support import Server  # noqa: E402

COMMITTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) INFO otel_ingest\.writer: Committed .* in (\d+) ms")


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
            # A connection idle longer than the server's keep-alive (5 s) is closed by it: one
            # per request keeps the schedule exact at low rates (loopback connects are cheap).
            connection = http.client.HTTPConnection(host, int(port), timeout=120)
            try:
                connection.request("POST", f"/v1/{payload.signal}", body=payload.body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
            finally:
                connection.close()
            with self.lock:
                self.requests += 1
                if status == 200:
                    self.records += payload.records
                else:
                    self.errors += 1


@dataclass(frozen=True)
class Storage:
    """Bytes and objects in one warehouse, by what they are."""

    commits: int = 0  # live files written by commits (level 0)
    compacted: int = 0  # live files written by compaction
    replaced: int = 0  # files no longer in the current version, not yet vacuumed
    log: int = 0  # _delta_log: commit JSON and checkpoints
    data_files: int = 0
    log_files: int = 0

    @property
    def bytes(self) -> int:
        return self.commits + self.compacted + self.replaced + self.log

    @property
    def data_bytes(self) -> int:
        return self.commits + self.compacted + self.replaced

    @property
    def objects(self) -> int:
        return self.data_files + self.log_files


def storage(warehouse: Path) -> Storage:
    commits = compacted = replaced = log = data_files = log_files = 0
    for log_dir in warehouse.glob("*/*/*/_delta_log"):
        root = log_dir.parent
        try:
            live = {a["path"] for a in pa.table(deltalake.DeltaTable(str(root)).get_add_actions()).to_pylist()}
        except Exception:  # a log entry vacuumed between listing and reading: count all as live
            live = None
        for path in root.rglob("*"):
            try:
                size = path.stat().st_size if path.is_file() else -1
            except FileNotFoundError:  # vacuumed meanwhile
                continue
            if size < 0:
                continue
            if log_dir in path.parents:
                log_files += 1
                log += size
                continue
            data_files += 1
            relative = str(path.relative_to(root))
            if live is not None and relative not in live:
                replaced += size
            elif DataFile(relative, size, 0).level:
                compacted += size
            else:
                commits += size
    return Storage(commits, compacted, replaced, log, data_files, log_files)


@dataclass(frozen=True)
class Sample:
    minutes: float
    records: int
    used: Storage
    reference_ms: float  # what a commit to a new table costs on this machine at that moment


# 200 log-like rows: the reference commit's batch.
REFERENCE_BATCH = pa.table(
    {
        "time_unix_nano": pa.array(range(200), pa.int64()),
        "body": pa.array([f"reference record {i} " + "x" * 200 for i in range(200)]),
        "attributes": pa.array([{"session.id": f"s{i % 7}", "model": "m"} for i in range(200)]),
    }
)


def reference_commit_ms(folder: Path) -> float:
    """Median of five appends to a table created just now: the machine's commit speed at this
    moment, with no history to slow it. The servers' commit times are divided by it, so that
    a machine that gets busier during the run (it is shared) is not mistaken for tables that
    get slower as they grow."""
    path = folder / f"reference-{time.monotonic_ns()}"
    deltalake.write_deltalake(str(path), REFERENCE_BATCH)
    times = []
    for _ in range(5):
        begun = time.perf_counter()
        deltalake.write_deltalake(str(path), REFERENCE_BATCH, mode="append")
        times.append((time.perf_counter() - begun) * 1000)
    shutil.rmtree(path, ignore_errors=True)
    return statistics.median(times)


@dataclass
class Side:
    label: str
    warehouse: Path
    server: Server
    load: Paced
    samples: list[Sample] = field(default_factory=list)


def start_side(
    label: str, folder: Path, properties: dict[str, str], args: argparse.Namespace, mix: list[Payload]
) -> Side:
    warehouse = folder / label / "warehouse"
    store = Warehouse(str(warehouse))
    for signal, name in table_set(PREFIX).items():
        store.create_for_signal(name, signal)
        store.set_properties(name, properties)
    # Hours compressed into seconds: the full vacuum (which also deletes unreferenced files)
    # may use the short retention too; commits here take seconds, not an hour.
    env = {"OTEL_INGEST_FULL_VACUUM_MIN_SECONDS": str(interval_seconds(properties[DELETED_FILE_RETENTION_PROPERTY]))}
    server = Server(warehouse, "--maintenance-interval", str(args.interval), "--log-level", "info", env=env)
    return Side(label, warehouse, server, Paced(server.url, mix, args.rate, args.clients))


def commit_times(server: Server) -> list[tuple[float, float]]:
    """(seconds since the epoch, commit ms) of every commit, from the server's log."""
    times = []
    for line in server.log().splitlines():
        match = COMMITTED.match(line)
        if match:
            at = time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
            times.append((at, float(match.group(2))))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="load time (default 10)")
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s to each server")
    parser.add_argument(
        "--clients", type=int, default=16, help="connections sharing that rate (enough to stay on schedule)"
    )
    parser.add_argument("--records", type=int, default=200, help="records per request (captures are scaled)")
    parser.add_argument("--interval", type=float, default=5.0, help="--maintenance-interval of both servers")
    parser.add_argument("--retention", default="interval 15 seconds", help="both retentions of the short side")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    mix = build_mix(args.records)
    folder = Path(tempfile.mkdtemp(prefix="otel-footprint-"))
    short = {DELETED_FILE_RETENTION_PROPERTY: args.retention, LOG_RETENTION_PROPERTY: args.retention}
    sides = [start_side("short", folder, short, args, mix), start_side("default", folder, TABLE_DEFAULTS, args, mix)]
    records = sum(p.records for p in mix) / len(mix)
    print(
        f"{args.minutes:g} min at {args.rate:g} requests/s (~{args.rate * records:,.0f} records/s) to each "
        f"server; maintenance every {args.interval:g} s; short retention {args.retention!r}, default "
        f"{TABLE_DEFAULTS[DELETED_FILE_RETENTION_PROPERTY]!r}; in {folder}",
        flush=True,
    )
    print(f"load average at the start: {_load()}", flush=True)
    header = (
        f"{'min':>5} {'side':>7} {'records':>9} {'B/rec':>6} {'objects':>7} {'data':>5} {'log':>5} "
        f"{'commits MB':>10} {'compacted MB':>12} {'replaced MB':>11} {'log MB':>6} {'ref ms':>6}"
    )
    print(header)
    print("-" * len(header), flush=True)
    started = time.monotonic()
    for side in sides:
        side.load.start()
    end = started + args.minutes * 60
    try:
        while time.monotonic() < end:
            time.sleep(max(0.0, min(args.sample, end - time.monotonic())))
            reference = reference_commit_ms(folder)
            for side in sides:
                sample = Sample(
                    (time.monotonic() - started) / 60, side.load.records, storage(side.warehouse), reference
                )
                side.samples.append(sample)
                used = sample.used
                print(
                    f"{sample.minutes:5.1f} {side.label:>7} {sample.records:9,d} "
                    f"{used.bytes / max(1, sample.records):6.1f} {used.objects:7,d} {used.data_files:5,d} "
                    f"{used.log_files:5,d} {used.commits / 1e6:10.2f} {used.compacted / 1e6:12.2f} "
                    f"{used.replaced / 1e6:11.2f} {used.log / 1e6:6.2f} {sample.reference_ms:6.1f}",
                    flush=True,
                )
    finally:
        for side in sides:
            side.load.join()
        print(f"load average at the end: {_load()}", flush=True)
        for side in sides:
            side.server.stop()
    for side in sides:
        report(side)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def compact_fully(warehouse: Path) -> Storage:
    """Every table compacted into as few files as deltalake makes, nothing else kept."""
    for log_dir in warehouse.glob("*/*/*/_delta_log"):
        table = deltalake.DeltaTable(str(log_dir.parent))
        table.optimize.compact(writer_properties=COMPACTED_WRITER_PROPERTIES)
        table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    return storage(warehouse)


def report(side: Side) -> None:
    """The side's end state against its compacted size, and commit times."""
    before = storage(side.warehouse)
    commits = commit_times(side.server)
    compacted = compact_fully(side.warehouse)
    records = max(1, side.load.records)
    per_record = compacted.data_bytes / records  # the data the records need, compacted
    first = [ms for at, ms in commits if at < commits[0][0] + 60] if commits else [0.0]
    last = [ms for at, ms in commits if at >= commits[-1][0] - 60] if commits else [0.0]
    print(
        f"\n{side.label}: {side.load.records:,} records in {side.load.requests:,} requests "
        f"({side.load.errors} errors, {side.load.late} sent >1 s late), {len(commits):,} commits\n"
        f"  at the end: {before.bytes / records:.1f} B/record in storage, {before.objects:,} objects "
        f"({before.data_files:,} data, {before.log_files:,} log); MB: commits {before.commits / 1e6:.2f}, "
        f"compacted {before.compacted / 1e6:.2f}, replaced {before.replaced / 1e6:.2f}, log {before.log / 1e6:.2f}\n"
        f"  compacted:  {per_record:.1f} B/record in {compacted.data_files} files; "
        f"storage / compacted = {before.bytes / max(1, compacted.data_bytes):.2f}x\n"
        f"  commit ms, median: first minute {statistics.median(first):.0f} ({len(first)} commits), "
        f"last minute {statistics.median(last):.0f} ({len(last)}); "
        f"end / start = {statistics.median(last) / max(statistics.median(first), 1e-9):.2f}"
    )
    if len(side.samples) >= 4:
        # The machine's own drift over the run: median reference commit of the first and the
        # last quarter of the samples (one sample alone swings several-fold on a shared machine).
        quarter = max(2, len(side.samples) // 4)
        ref_first = statistics.median(s.reference_ms for s in side.samples[:quarter])
        ref_last = statistics.median(s.reference_ms for s in side.samples[-quarter:])
        growth = statistics.median(last) / max(statistics.median(first), 1e-9)
        print(
            f"  reference commit to a new table, ms (median of {quarter} samples): first {ref_first:.1f}, "
            f"last {ref_last:.1f} (the machine: x{ref_last / ref_first:.2f}); commit time end / start "
            f"relative to it = {growth / (ref_last / ref_first):.2f}"
        )
    print(f"  storage / compacted at each sample (records so far x {per_record:.1f} B/record):")
    print(
        "   "
        + "  ".join(f"{s.minutes:.1f}m {s.used.bytes / max(1.0, s.records * per_record):.2f}x" for s in side.samples)
    )
    overhead = [(s.minutes, s.used.bytes - s.records * per_record) for s in side.samples]
    print("   overhead MB (storage - compacted so far): " + "  ".join(f"{o / 1e6:.1f}" for _, o in overhead))
    # Steady state: storage <= 2x compacted once the compacted data outweighs the overhead.
    # If the overhead still grows (second half of the run) faster than the compacted data,
    # that never happens; else it happens at overhead / compacted bytes per minute.
    half = [o for o in overhead if o[0] >= overhead[-1][0] / 2] if overhead else []
    growth = (half[-1][1] - half[0][1]) / max(1e-9, half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    compacted_per_minute = records / max(1e-9, side.samples[-1].minutes) * per_record if side.samples else 0.0
    if not overhead or growth >= compacted_per_minute:
        verdict = "never: the overhead grows faster than the compacted data"
    else:
        verdict = f"once the table holds ~{overhead[-1][1] / compacted_per_minute:.0f} min of data at this rate"
    print(
        f"   overhead growth in the second half {growth / 1e6:.2f} MB/min vs compacted data "
        f"{compacted_per_minute / 1e6:.3f} MB/min: storage <= 2x compacted {verdict}"
    )


if __name__ == "__main__":
    main()
