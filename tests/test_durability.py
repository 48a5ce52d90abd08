"""The write path under faults and load (issue: crash safety, concurrent writers,
storage failure, back-pressure, graceful shutdown). Real servers, real Delta tables,
read back with polars. No timing thresholds: only what was acknowledged vs. stored."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from load import PREFIX, TABLE, Load, logs_body

from otel_ingest.compaction import COMPACTION_METADATA_KEY
from otel_ingest.handoff import owner_slot
from otel_ingest.tables import TableName
from support import Server, metric, peak_rss, read_table, table_path, wait_until

FAST_COMMITS = ("--create-tables", PREFIX, "--commit-max-delay", "0.02")


def stored_seqs(warehouse: Path) -> Counter[str]:
    frame = read_table(warehouse, TABLE)
    if frame.height == 0:
        return Counter()
    return Counter(frame["attributes"].map.get("seq").to_list())


def assert_exactly_once(warehouse: Path, acked: set[str], sent_all: bool = False) -> Counter[str]:
    counts = stored_seqs(warehouse)
    duplicates = {seq: n for seq, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} records stored more than once"
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged records are missing"
    return counts


def test_sigkill_under_load_loses_no_acknowledged_record(start_server: Callable[..., Server]) -> None:
    server = start_server(*FAST_COMMITS)
    load = Load([server.url], clients=6, records=25).start()
    load.wait_for_acks(600)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    load.stop.set()
    result = load.join()
    assert result.statuses[500] == 0

    restarted = start_server(*FAST_COMMITS, warehouse=server.warehouse)
    counts = assert_exactly_once(server.warehouse, result.acked)
    assert len(result.acked) >= 600
    # Rows of requests that were never answered may or may not be there, but whole requests only.
    requests = Counter(seq.rsplit("-", 1)[0] for seq in counts)
    assert set(requests.values()) == {25}
    # The table still takes writes after the crash.
    body = logs_body(["after-crash"])
    headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": TABLE}
    assert restarted.post("/v1/logs", body, headers).status_code == 200
    assert stored_seqs(server.warehouse)["after-crash"] == 1


def test_two_servers_eight_clients_one_table(start_server: Callable[..., Server]) -> None:
    first = start_server(*FAST_COMMITS)
    second = start_server(*FAST_COMMITS, warehouse=first.warehouse)
    load = Load([first.url, second.url], clients=8, records=10, max_requests=15).start()
    result = load.join()
    assert result.statuses == Counter({200: 8 * 15})
    counts = assert_exactly_once(first.warehouse, result.acked)
    assert set(counts) == result.acked
    assert len(counts) == 8 * 15 * 10


def test_workers_share_one_table(start_server: Callable[..., Server]) -> None:
    server = start_server(*FAST_COMMITS, "--workers", "2")
    load = Load([server.url], clients=8, records=10, max_requests=10).start()
    result = load.join()
    assert result.statuses == Counter({200: 80})
    counts = assert_exactly_once(server.warehouse, result.acked)
    assert len(counts) == 800


def _commit_log(warehouse: Path, table: str) -> list[list[dict[str, Any]]]:
    """The actions of every commit in the table's Delta log, read as JSON (not via delta-rs)."""
    log_dir = table_path(warehouse, table) / "_delta_log"
    return [
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in sorted(log_dir.glob("*.json"))
    ]


def test_workers_hand_rows_to_the_tables_one_committer(start_server: Callable[..., Server]) -> None:
    """With --workers 2, every commit to a table is made by one worker (its owner); the
    other hands its rows over and answers only once they are committed (handoff.py)."""
    server = start_server(*FAST_COMMITS, "--workers", "2")
    wait_until(
        lambda: all(f"Worker slot {slot} of 2" in server.log() for slot in (0, 1)),
        "both workers to claim their slot",
    )
    load = Load([server.url], clients=8, records=10, max_requests=10).start()
    result = load.join()
    assert result.statuses == Counter({200: 80})

    def writers() -> tuple[set[str], set[str]]:
        """Who committed (commitInfo's writer ids) and whose rows the commits hold (txn ids)."""
        committers, senders = set(), set()
        for actions in _commit_log(server.warehouse, TABLE):
            for action in actions:
                if "txn" in action:
                    senders.add(action["txn"]["appId"])
                marker = action.get("commitInfo", {}).get("otelIngestCommit")
                if marker:
                    committers.add(marker.rsplit("/", 1)[0])
        return committers, senders

    # Each new connection goes to whichever worker accepts it first: send on fresh
    # connections until the worker that does not own the table has received some.
    extra: set[str] = set()
    sent = 0

    def other_worker_handed_off() -> bool:
        nonlocal sent
        if len(writers()[1]) >= 2:
            return True
        more = Load([server.url], clients=2, records=10, max_requests=1, tag=f"extra{sent}-").start().join()
        assert more.statuses == Counter({200: 2})
        extra.update(more.acked)
        sent += 1
        return False

    wait_until(other_worker_handed_off, "a request accepted by the worker that does not own the table")
    committers, senders = writers()
    assert len(committers) == 1, f"{len(committers)} workers committed to one table"
    assert committers < senders
    counts = assert_exactly_once(server.warehouse, result.acked | extra)
    assert len(counts) == 800 + len(extra)
    assert "unreachable" not in server.log()  # every hand-off reached the owner


def _worker_holding(server: Server, name: str) -> int:
    """The pid of the worker of ``server`` that holds ``name`` (a file in the folder its
    workers share, named by their OTEL_INGEST_HANDOFF_DIR) open; 0 if none does."""
    parent = server.process.pid
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            folder = next(v for v in environment if v.startswith(b"OTEL_INGEST_HANDOFF_DIR=")).split(b"=", 1)[1]
            target = os.path.join(os.fsdecode(folder), name)
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except (OSError, StopIteration):
            continue
    return 0


def test_workers_survive_the_loss_of_the_tables_committer(start_server: Callable[..., Server]) -> None:
    """kill -9 of the worker that commits the table while the other hands rows to it: the
    other reads the table to learn which of its hand-offs landed, commits the rest itself
    (and everything until a new worker owns the slot), and every acknowledged record is
    stored exactly once."""
    server = start_server(*FAST_COMMITS, "--workers", "2")
    wait_until(lambda: all(f"Worker slot {n} of 2" in server.log() for n in (0, 1)), "both workers to claim a slot")
    slot = owner_slot(TableName.parse(TABLE), 2)
    owner = _worker_holding(server, f"slot-{slot}.lock")
    assert owner
    # The clients of the killed worker lose their connection and stop (their last request
    # may or may not be stored: never resent, so never stored twice); the others go on.
    load = Load([server.url], clients=8, records=10, retry_unavailable=True).start()
    wait_until(
        lambda: "handoff-1" in "".join(json.dumps(c) for c in _commit_log(server.warehouse, TABLE)), "a hand-off"
    )
    os.kill(owner, signal.SIGKILL)
    acked_at_kill = len(load.result.acked)
    wait_until(lambda: server.log().count(f"Worker slot {slot} of 2") == 2, "a new worker to take the slot")
    wait_until(lambda: len(load.result.acked) > acked_at_kill + 200, "acknowledgements after the kill")
    load.stop.set()
    result = load.join()
    assert_exactly_once(server.warehouse, result.acked)
    assert set(result.statuses) <= {200, 503}


def _drop_privileges() -> list[str]:
    """Root ignores file permissions; run the server without that power so chmod bites."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_unwritable_warehouse_gives_503_then_recovers(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    server = Server(warehouse, *FAST_COMMITS, command_prefix=_drop_privileges())
    try:
        load = Load([server.url], clients=4, records=10, retry_unavailable=True, max_requests=40).start()
        load.wait_for_acks(100)
        log_dir = table_path(warehouse, TABLE) / "_delta_log"
        table_dir = log_dir.parent
        read_only = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        for directory in (table_dir, log_dir):
            directory.chmod(read_only)
        deadline = time.monotonic() + 60
        while load.result.statuses[503] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        for directory in (table_dir, log_dir):
            directory.chmod(0o755)
        result = load.join()
    finally:
        server.stop()
    assert result.statuses[503] >= 5, result.statuses
    assert set(result.statuses) <= {200, 503}, result.statuses
    assert all(value.isdigit() and int(value) >= 1 for value in result.retry_after)
    # Every request was eventually accepted once storage came back, without a restart.
    assert len(result.acked) == 4 * 40 * 10
    counts = assert_exactly_once(warehouse, result.acked)
    assert set(counts) == result.acked
    assert "Unexpected error" not in server.log()  # every failure was a 503, none a 500


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read peak memory")
def test_back_pressure_bounds_memory(start_server: Callable[..., Server]) -> None:
    """A small buffer and slow commits: requests beyond the bound get 503 + Retry-After at
    once, peak memory does not grow with the number of clients, and every record is stored
    once when clients retry."""
    server = start_server("--create-tables", PREFIX, "--max-buffer-bytes", "12MiB", "--commit-max-delay", "0.5")
    request = {"records": 64, "padding": 16 * 1024}  # ~1 MiB bodies
    # Warm up: one client alone allocates what the process keeps anyway (runtimes, pools).
    warm = Load([server.url], clients=1, max_requests=3, retry_unavailable=True, tag="warm", **request)
    warm.start().join()
    assert warm.result.statuses == Counter({200: 3})
    baseline = peak_rss(server.process.pid)
    # 32 clients at once: without back-pressure the server would hold 32 bodies plus
    # their decoded forms (~5 MiB each, 160 MiB); with a 12 MiB bound it must refuse most.
    load = Load([server.url], clients=32, max_requests=2, retry_unavailable=True, **request)
    result = load.start().join(timeout=300)
    growth = peak_rss(server.process.pid) - baseline
    assert result.statuses[503] > 0, result.statuses
    assert set(result.statuses) <= {200, 503}
    assert all(value.isdigit() and int(value) >= 1 for value in result.retry_after)
    assert len(result.acked) == 32 * 2 * 64
    assert_exactly_once(server.warehouse, result.acked | warm.result.acked)
    assert growth < 80 * 1024 * 1024, f"peak memory grew by {growth / 2**20:.0f} MiB"


def test_sigterm_answers_requests_in_flight(start_server: Callable[..., Server]) -> None:
    """Requests waiting for their commit when SIGTERM arrives are committed and answered 200."""
    # No commit deadline: the eight requests wait up to 10 s for their commit by design, and on a
    # loaded machine the default 8 s deadline would answer them 503 before SIGTERM arrives.
    server = start_server("--create-tables", PREFIX, "--commit-max-delay", "10", "--commit-deadline", "0")
    # The first commit of an idle table goes at once; it starts the 10 s commit interval
    # (long enough for eight requests to arrive on a loaded machine: they must all be held).
    first = Load([server.url], clients=1, records=10, max_requests=1, tag="first").start().join()
    assert first.statuses == Counter({200: 1})
    load = Load([server.url], clients=8, records=10, max_requests=1).start()
    # Wait for the server to hold all eight (queued for the next commit), however loaded the machine.
    wait_until(lambda: metric(server, "otel_ingest_requests_in_flight") == 8, "eight requests in flight")
    assert not load.result.acked
    server.process.send_signal(signal.SIGTERM)
    result = load.join()
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status says SIGTERM.
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert result.statuses == Counter({200: 8})
    assert_exactly_once(server.warehouse, result.acked | first.acked)
    assert "All accepted rows are committed." in server.log()
    frame = pl.read_delta(str(table_path(server.warehouse, TABLE)))
    assert frame.height == 90


def test_background_maintenance_never_fails_an_append(start_server: Callable[..., Server]) -> None:
    """Compaction every 0.3 s while 4 clients append: every request is answered 200, every
    record is stored once, and the table really was compacted meanwhile."""
    server = start_server(*FAST_COMMITS, "--maintenance-interval", "0.3")
    load = Load([server.url], clients=4, records=10, max_requests=60).start()
    result = load.join()
    assert result.statuses == Counter({200: 240})
    counts = assert_exactly_once(server.warehouse, result.acked)
    assert len(counts) == 2400
    log_dir = table_path(server.warehouse, TABLE) / "_delta_log"
    commits = [
        json.loads(line)["commitInfo"]
        for path in sorted(log_dir.glob("*.json"))
        for line in path.read_text().splitlines()
        if "commitInfo" in line
    ]
    # Compaction commits (tiered, see compaction.py) say so in their commitInfo.
    assert any(COMPACTION_METADATA_KEY in commit for commit in commits)
    assert sum(commit["operation"] == "WRITE" and COMPACTION_METADATA_KEY not in commit for commit in commits) >= 2
