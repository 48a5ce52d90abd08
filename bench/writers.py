"""Several writers on one table, measured side by side in one run.

    python bench/writers.py [--seconds 10] [--clients 12,48] [--records 20] [--server-args "..."]

For local disk and for the S3 test server (moto, serialized as in the tests), starts 1
server, then 3 servers on one warehouse with the commit backoff off (``--commit-max-backoff
0``) and on (the default), spreads closed-loop clients round-robin over them, and prints
records/s, commits, and conflicts per commit: the ``num_retries`` delta-rs records in each
commit's ``commitInfo`` (a lost race for a log version, retried), plus, on S3, the failed
conditional PUTs counted by the server. The local rows also run one server with
``--workers 2`` (two processes on one port, one committer per table: handoff.py) against
the one server of ``--workers 1``, measured after both workers have started.

Each client sends its next request when the last is answered (closed loop). Few clients
are bound by the commit latency (each waits for a commit), many keep the server's CPU busy;
``--clients`` takes a list, and every row is measured with each. The machine is shared and
noisy: compare the figures of one run, not across runs, and note the load average printed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import deltalake

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from load import PREFIX, TABLE, Load  # noqa: E402
from s3_server import S3Server, start_s3  # noqa: E402

from support import Server  # noqa: E402

WARM_UP = 2.0  # seconds of load before the clock starts


@dataclass
class Row:
    store: str
    clients: int
    writers: str
    records_per_s: float
    commits: int
    conflicts_per_commit: float
    failed_puts_per_commit: float | None
    statuses: str
    load_average: float  # the machine's 1-minute load average when the row was measured


def _table_uri(warehouse: str) -> str:
    return f"{warehouse.rstrip('/')}/{TABLE.replace('.', '/')}"


def _wait_for_workers(server: Server, workers: int, timeout: float = 120) -> None:
    """Wait until every worker of ``server`` has claimed its slot (its socket exists in the
    folder ``serve`` made for them): on a loaded machine workers start seconds apart, and
    until then one worker takes every request."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folders = set()
        for pid in children.read_text().split():
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            folders |= {line.split(b"=", 1)[1] for line in environment if line.startswith(b"OTEL_INGEST_HANDOFF_DIR=")}
        if folders and all(
            os.path.exists(Path(os.fsdecode(next(iter(folders)))) / f"slot-{n}.sock") for n in range(workers)
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the {workers} workers did not all start in {timeout:g} s")


def measure(
    store: str,
    writers: int,
    workers: int,
    label: str,
    args: list[str],
    clients: int,
    records: int,
    seconds: float,
    folder: Path,
    s3: S3Server | None,
) -> Row:
    run = folder / f"{store}-{writers}x{workers}-{time.monotonic_ns()}"
    if s3 is not None:
        s3.requests()
    run.mkdir()
    if s3 is None:
        warehouse, env, options = str(run / "warehouse"), {}, None
    else:
        warehouse, env, options = f"s3://{s3.bucket}/{run.name}", s3.env, s3.storage_options()
    common = ["--log-level", "warning", "--maintenance-interval", "0", "--workers", str(workers), *args]
    servers = [Server(run / "warehouse", "--create-tables", PREFIX, *common, env=env, warehouse_uri=warehouse)]
    try:
        servers += [Server(run / "warehouse", *common, env=env, warehouse_uri=warehouse) for _ in range(writers - 1)]
        if workers > 1:
            for server in servers:
                _wait_for_workers(server, workers)
        for server in servers:  # every process has opened the table before the clock starts
            server.post("/v1/logs", b"{}", {"content-type": "application/json", "x-databricks-uc-table-name": TABLE})
        table = deltalake.DeltaTable(_table_uri(warehouse), storage_options=options)
        load = Load([s.url for s in servers], clients=clients, records=records, retry_unavailable=True).start()
        time.sleep(WARM_UP)  # connections made, first commits done: not counted
        table.update_incremental()
        first, acked_before = table.version(), len(load.result.acked)
        started = time.monotonic()
        time.sleep(seconds)
        acked = len(load.result.acked) - acked_before
        elapsed = time.monotonic() - started
        version = deltalake.DeltaTable(_table_uri(warehouse), storage_options=options).version()
        load.stop.set()
        result = load.join()
    finally:
        for server in servers:
            server.stop()
    table.update_incremental()
    history = [h for h in table.history() if first < h["version"] <= version and h.get("operation") == "WRITE"]
    retries = [int(h.get("operationMetrics", {}).get("num_retries", 0)) for h in history]
    failed_puts = None
    if s3 is not None:  # over the whole run, warm-up included
        puts = [r for r in s3.requests() if r["method"] == "PUT" and str(r["path"]).endswith(".json")]
        made = sum(1 for r in puts if r["status"] == 200)
        failed_puts = sum(1 for r in puts if r["status"] == 412) / max(1, made)
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    return Row(
        store,
        clients,
        label,
        acked / elapsed,
        len(history),
        statistics.fmean(retries) if retries else 0.0,
        failed_puts,
        statuses,
        os.getloadavg()[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", default="12,48", help="closed-loop clients; a list measures each")
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--server-args", default="", help="extra flags for every server")
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--only", default="", help="row labels to run, separated by ;, e.g. '1 server;--workers 2'")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the plan this many times, interleaved; ratios of the medians"
    )
    options = parser.parse_args()
    args = shlex.split(options.server_args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-writers-") as temp:
        folder = Path(temp)
        stores = options.stores.split(",")
        s3 = start_s3(folder) if "s3" in stores else None
        try:
            off = ["--commit-max-backoff", "0"]  # never above --commit-max-delay: no backoff
            plan = []
            for store in stores:
                plan += [
                    (store, 1, 1, "1 server", []),
                    (store, 3, 1, "3 servers, no backoff", off),
                    (store, 3, 1, "3 servers, adaptive", []),
                ]
                if store == "local":
                    plan.append(("local", 1, 2, "--workers 2", []))
            if options.only:
                plan = [step for step in plan if step[3] in options.only.split(";")]
            for _round, clients, (store, writers, workers, label, extra) in [
                (r, int(c), step) for r in range(options.rounds) for c in options.clients.split(",") for step in plan
            ]:
                row = measure(
                    store,
                    writers,
                    workers,
                    label,
                    [*args, *extra],
                    clients,
                    options.records,
                    options.seconds,
                    folder,
                    s3 if store == "s3" else None,
                )
                rows.append(row)
                print(
                    f"  {clients} clients, {row.store} {row.writers}: {row.records_per_s:,.0f} records/s",
                    file=sys.stderr,
                )
        finally:
            if s3 is not None:
                s3.stop()
    print(f"\nclosed-loop clients, {options.records} records per request, {options.seconds:g} s each")
    if args:
        print(f"server flags: {' '.join(args)}")
    print(
        "| clients | store | writers | records/s | commits | conflicts/commit | failed PUTs/commit | statuses | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        failed = "-" if row.failed_puts_per_commit is None else f"{row.failed_puts_per_commit:.2f}"
        print(
            f"| {row.clients} | {row.store} | {row.writers} | {row.records_per_s:,.0f} | {row.commits} "
            f"| {row.conflicts_per_commit:.2f} | {failed} | {row.statuses} | {row.load_average:.1f} |"
        )
    medians: dict[tuple[int, str, str], float] = {}
    for key in dict.fromkeys((row.clients, row.store, row.writers) for row in rows):
        medians[key] = statistics.median(
            row.records_per_s for row in rows if (row.clients, row.store, row.writers) == key
        )
    print(f"ratios to 1 server (--workers 1) on the same store with the same clients (medians of {options.rounds}):")
    for (clients, store, writers), median in medians.items():
        base = medians.get((clients, store, "1 server"))
        if writers != "1 server" and base:
            print(
                f"  {clients} clients, {store}, {writers}: {median:,.0f} / {base:,.0f} records/s = {median / base:.2f}×"
            )


if __name__ == "__main__":
    main()
