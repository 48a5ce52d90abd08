"""Do open and commit times stay flat as a table accumulates versions?

    python bench/versions.py [--versions 2000] [--every 250]

Appends one small batch per commit, as a lightly loaded server does, through a
long-lived DeltaTable object the way ``TableWriter`` holds one, and every ``--every``
versions prints: the time to open the table from scratch (a new server process, a
reader), the median commit time over the last stretch, and the checkpoint files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import deltalake
import pyarrow as pa
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_ingest.flatten import flatten_logs  # noqa: E402
from otel_ingest.tables import TableName, Warehouse  # noqa: E402
from otel_ingest.writer import REOPEN_EVERY, TableWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument(
        "--log-retention",
        default=None,
        help="set delta.logRetentionDuration (e.g. 'interval 10 seconds') to see the steady state of a "
        "table whose log is cleaned at each checkpoint; default: the tables' own 1 day",
    )
    args = parser.parse_args()
    request = ExportLogsServiceRequest()
    request.ParseFromString((ROOT / "tests" / "captures" / "cc_hello" / "1.bin").read_bytes())
    data = pa.Table.from_batches([flatten_logs(request).batch])
    warehouse = Warehouse(tempfile.mkdtemp(prefix="otel-versions-"))
    name = TableName("main", "bench", "versions_otel_logs")
    table = warehouse.create_for_signal(name, "logs")
    location = warehouse.location(name)
    if args.log_retention:
        table.alter.set_table_properties({"delta.logRetentionDuration": args.log_retention})
    print(f"One {data.num_rows}-row commit per version; the writer reopens its table every {REOPEN_EVERY} versions.")
    print(f"{'version':>8} {'open ms':>8} {'commit ms (median)':>19} {'checkpoints':>12} {'log files':>10}")
    commits: list[float] = []
    for version in range(1, args.versions + 1):
        started = time.perf_counter()
        deltalake.write_deltalake(table, data, mode="append")
        commits.append(time.perf_counter() - started)
        table = TableWriter.fresh_table(table, location, None)
        if version % args.every == 0:
            started = time.perf_counter()
            opened = deltalake.DeltaTable(location)
            open_ms = (time.perf_counter() - started) * 1000
            assert opened.version() == version + (1 if args.log_retention else 0)
            log_files = list(Path(location, "_delta_log").iterdir())
            checkpoints = sum(1 for f in log_files if f.name.endswith(".checkpoint.parquet"))
            median = statistics.median(commits) * 1000
            print(f"{version:8d} {open_ms:8.1f} {median:19.1f} {checkpoints:12d} {len(log_files):10d}")
            commits.clear()


if __name__ == "__main__":
    main()
