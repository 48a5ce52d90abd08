"""Group commit (issue 3): concurrent requests to one table share commits, and a queue
reaching --commit-max-rows or --commit-max-bytes commits without waiting for the age
limit. Commits are counted in the Delta log itself; rows are read back with polars."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support import Server, load_captures, row_count, table_path

LOGS = "main.telemetry.claude_otel_logs"
HEADERS = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": LOGS}


def _appends(warehouse: Path) -> list[int]:
    """Rows added by each append commit of the logs table, in version order."""
    log_dir = table_path(warehouse, LOGS) / "_delta_log"
    rows = []
    for entry in sorted(log_dir.glob("*.json")):
        actions = [json.loads(line) for line in entry.read_text().splitlines()]
        added = [json.loads(a["add"]["stats"])["numRecords"] for a in actions if "add" in a]
        if added:
            rows.append(sum(added))
    return rows


def _capture() -> tuple[bytes, int]:
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    return capture.body, capture.expected_rows


def test_concurrent_requests_share_commits(start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude", "--commit-max-delay", "1")
    body, rows = _capture()
    assert server.post("/v1/logs", body, HEADERS).status_code == 200  # an idle table commits at once

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: server.post("/v1/logs", body, HEADERS).status_code, range(16)))

    assert statuses == [200] * 16
    appends = _appends(server.warehouse)
    print(f"17 requests of {rows} rows in commits of {appends} rows")
    assert appends[0] == rows
    # The 16 concurrent requests arrived within the 1 s age limit: they share commits.
    assert sum(appends[1:]) == 16 * rows
    assert len(appends[1:]) <= 3
    assert row_count(server.warehouse, LOGS) == 17 * rows


@pytest.mark.parametrize("limit", [["--commit-max-rows", "1"], ["--commit-max-bytes", "1"]])
def test_a_full_queue_commits_before_the_age_limit(start_server: Callable[..., Server], limit: list[str]) -> None:
    """With a 60 s age limit, only the row or byte limit can commit the second request
    before the client's 20 s timeout."""
    server = start_server("--create-tables", "main.telemetry.claude", "--commit-max-delay", "60", *limit)
    body, rows = _capture()
    with httpx.Client(base_url=server.url, timeout=20) as client:
        for _ in range(4):
            assert client.post("/v1/logs", content=body, headers=HEADERS).status_code == 200
    assert _appends(server.warehouse) == [rows] * 4


ONE_PER_COMMIT = ("--commit-max-delay", "0", "--commit-max-rows", "1")


def test_commit_log_line_names_the_version_it_made(tmp_path: Path) -> None:
    """Two servers append to one table, past the writer's reopen at version 100; each
    "Committed … (version V)" line must name the version holding that server's own commit
    (its writer marker and row count), not the newest version the server has seen."""
    warehouse = tmp_path / "warehouse"
    first = Server(warehouse, "--create-tables", "main.telemetry.claude", *ONE_PER_COMMIT)
    second = Server(warehouse, *ONE_PER_COMMIT)
    body, _ = _capture()
    try:
        with ThreadPoolExecutor(6) as pool:
            statuses = list(
                pool.map(lambda n: (first, second)[n % 2].post("/v1/logs", body, HEADERS).status_code, range(150))
            )
    finally:
        first.stop()
        second.stop()
    assert statuses == [200] * 150
    log_dir = table_path(warehouse, LOGS) / "_delta_log"
    commits = {}
    for entry in log_dir.glob("*.json"):
        actions = [json.loads(line) for line in entry.read_text().splitlines()]
        info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
        if "otelIngestCommit" in info:
            commits[int(entry.stem)] = (info["otelIngestCommit"], info["operationMetrics"]["num_added_rows"])
    assert max(commits) > 100  # crossed a reopen
    logged = 0
    for server in (first, second):
        writers = set()
        for line in server.log().splitlines():
            match = re.search(r"Committed ([\d,]+) rows .* \(version (\d+)\)", line)
            if match:
                logged += 1
                marker, added = commits[int(match.group(2))]
                assert added == int(match.group(1).replace(",", "")), line
                writers.add(marker.rsplit("/", 1)[0])
        assert len(writers) == 1  # every version a server logged holds that server's own commit
    assert logged == len(commits)
