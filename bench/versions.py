"""Do open and commit times stay flat as a table accumulates versions?

    python bench/versions.py [--versions 2000] [--every 250] [--signal logs|metrics]
                             [--maintain-every N]

Appends one small batch per commit, as a lightly loaded server does, through a
long-lived DeltaTable object the way ``TableWriter`` holds one, and every ``--every``
versions prints: the time to open the table from scratch (a new server process, a
reader), the median commit time (wall and CPU) over the last stretch, the data files
the table references, and the checkpoint and log files. ``--maintain-every N`` runs
``maintain`` (compaction, checkpoint, vacuum, log clean-up) every N versions, as the
server's background maintenance does.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_ingest import wire  # noqa: E402
from otel_ingest.flatten import FLATTENERS  # noqa: E402
from otel_ingest.maintenance import maintain  # noqa: E402
from otel_ingest.tables import TableName, Warehouse  # noqa: E402
from otel_ingest.writer import REOPEN_EVERY, WRITER_PROPERTIES, TableWriter  # noqa: E402


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
    parser.add_argument(
        "--tombstone-retention",
        default=None,
        help="set delta.deletedFileRetentionDuration (e.g. 'interval 10 seconds') to see the steady state of "
        "a maintained table whose compacted files have left the log; default: Delta's 7 days",
    )
    parser.add_argument("--signal", choices=["logs", "metrics"], default="logs")
    parser.add_argument("--maintain-every", type=int, default=0, help="run maintain every N versions (0: never)")
    args = parser.parse_args()
    # Claude Code's first export of the signal: logs has a narrow schema, metrics a wide
    # one (five point structs), which makes each file's statistics larger.
    capture = {"logs": "1", "metrics": "2"}[args.signal]
    body = (ROOT / "tests" / "captures" / "cc_hello" / f"{capture}.bin").read_bytes()
    message, _ = wire.decode_request(args.signal, body, "protobuf")
    data = pa.Table.from_batches([FLATTENERS[args.signal](message).batch])
    warehouse = Warehouse(tempfile.mkdtemp(prefix="otel-versions-"))
    name = TableName("main", "bench", f"versions_otel_{args.signal}")
    table = warehouse.create_for_signal(name, args.signal)
    location = warehouse.location(name)
    if args.log_retention:
        table.alter.set_table_properties({"delta.logRetentionDuration": args.log_retention})
    if args.tombstone_retention:
        table.alter.set_table_properties({"delta.deletedFileRetentionDuration": args.tombstone_retention})
    print(f"One {data.num_rows}-row commit per version; the writer reopens its table every {REOPEN_EVERY} versions.")
    print(
        f"{'appends':>8} {'open ms':>8} {'commit ms':>10} {'commit CPU ms':>14} {'data files':>11} "
        f"{'checkpoints':>12} {'log files':>10}"
    )
    commits: list[float] = []
    cpu: list[float] = []
    opened_at = table.version()
    for version in range(1, args.versions + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        deltalake.write_deltalake(table, data, mode="append", writer_properties=WRITER_PROPERTIES)
        commits.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        fresh = TableWriter.fresh_table(table, location, None, opened_at)
        if fresh is not table:
            table, opened_at = fresh, fresh.version()
        if args.maintain_every and version % args.maintain_every == 0:
            maintain(warehouse, name)
            table = deltalake.DeltaTable(location)
            opened_at = table.version()
        if version % args.every == 0:
            started = time.perf_counter()
            opened = deltalake.DeltaTable(location)
            open_ms = (time.perf_counter() - started) * 1000
            log_files = list(Path(location, "_delta_log").iterdir())
            checkpoints = sum(1 for f in log_files if f.name.endswith(".checkpoint.parquet"))
            print(
                f"{version:8d} {open_ms:8.1f} {statistics.median(commits) * 1000:10.1f} "
                f"{statistics.median(cpu) * 1000:14.1f} {len(opened.file_uris()):11d} "
                f"{checkpoints:12d} {len(log_files):10d}"
            )
            commits.clear()
            cpu.clear()


if __name__ == "__main__":
    main()
