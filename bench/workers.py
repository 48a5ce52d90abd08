"""``--workers 2`` against ``--workers 1`` under a load generator that needs little CPU.

    python bench/workers.py [--rounds 3] [--seconds 10] [--connections 48] [--tables 1,4]

bench/writers.py drives the servers with Python clients, which on this 2-core machine take
about a core themselves: the second worker then has no core to run on. Here the load comes
from ``wrk`` (Debian's package ``wrk``, written in C): ``--connections`` keep-alive
connections post 20-record protobuf log requests as fast as they are answered (closed
loop), spread round-robin over ``--tables`` tables of their own table sets. Every body
differs (a fixed-width counter is written into one attribute by wrk's Lua script), so the
resend registry never mistakes one for a resend. Records/s are the rows read back from the
tables (polars) over wrk's measured duration. Rounds interleave ``--workers 1`` and
``--workers 2``; the medians and their ratio are printed with every round's figure and the
load average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from load import logs_body  # noqa: E402
from writers import _wait_for_workers  # noqa: E402

from support import Server  # noqa: E402

MARKER = "SEQMARKER0000000"  # 16 characters, replaced by a 16-digit counter per request
LUA = """
local prefix, suffix
local counter = 0
local tables = {}
local thread_id = 0

function setup(thread)
  thread:set("tid", tostring(math.random(1, 99999999)))
end

function init(args)
  local f = io.open(args[1], "rb")
  local body = f:read("*all")
  f:close()
  local s, e = string.find(body, "SEQMARKER0000000", 1, true)
  prefix = string.sub(body, 1, s - 1)
  suffix = string.sub(body, e + 1)
  for i = 2, #args do tables[#tables + 1] = args[i] end
  thread_id = tonumber(tid) or 0
end

function request()
  counter = counter + 1
  local name = tables[(counter % #tables) + 1]
  local body = prefix .. string.format("%08d%08d", thread_id % 100000000, counter) .. suffix
  return wrk.format("POST", "/v1/logs",
    {["Content-Type"] = "application/x-protobuf", ["X-Databricks-UC-Table-Name"] = name}, body)
end
"""


def measure(folder: Path, workers: int, tables: int, connections: int, seconds: float) -> float:
    """Records/s stored by one server with ``workers`` workers over ``tables`` tables."""
    run = folder / f"w{workers}-t{tables}-{len(list(folder.iterdir()))}"
    run.mkdir()
    prefixes = [f"main.telemetry.load{i}" for i in range(tables)]
    names = [f"{prefix}_otel_logs" for prefix in prefixes]
    server = Server(
        run / "warehouse",
        *("--create-tables", ",".join(prefixes), "--log-level", "warning"),
        *("--maintenance-interval", "0", "--workers", str(workers)),
    )
    try:
        if workers > 1:
            _wait_for_workers(server, workers)
        for name in names:  # every table opened before the clock starts
            server.post("/v1/logs", b"{}", {"content-type": "application/json", "x-databricks-uc-table-name": name})
        command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
        command += ["-s", str(folder / "post.lua"), server.url, "--", str(folder / "body.bin"), *names]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        server.stop()
    match = re.search(r"requests in ([\d.]+)(m?s)", output)
    assert match, output
    duration = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    warehouse = run / "warehouse" / "main" / "telemetry"
    rows = sum(pl.read_delta(str(warehouse / name.split(".")[-1])).height for name in names)
    return rows / duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--tables", default="1,4", help="tables the load is spread over; a list measures each")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    (folder / "post.lua").write_text(LUA)
    (folder / "body.bin").write_bytes(logs_body([MARKER] + [f"record-{k:02d}" for k in range(19)]))
    table_counts = [int(n) for n in args.tables.split(",")]
    results: dict[tuple[int, int], list[float]] = {}
    print(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for round_ in range(args.rounds):
        for tables in table_counts:
            for workers in (1, 2):
                rate = measure(folder, workers, tables, args.connections, args.seconds)
                results.setdefault((tables, workers), []).append(rate)
                print(
                    f"round {round_}: {tables} table(s), --workers {workers}: {rate:,.0f} records/s "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    print(f"\nwrk, {args.connections} connections, 20-record requests, {args.seconds:g} s per round")
    for tables in table_counts:
        one, two = (statistics.median(results[(tables, w)]) for w in (1, 2))
        print(
            f"  {tables} table(s): --workers 1 {one:,.0f}, --workers 2 {two:,.0f} records/s = {two / one:.2f}x "
            f"(rounds: {[round(r) for r in results[(tables, 1)]]} vs {[round(r) for r in results[(tables, 2)]]})"
        )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
