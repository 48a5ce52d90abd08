"""Group commit (issue 3): concurrent requests to one table share commits, and a queue
reaching --commit-max-rows or --commit-max-bytes commits without waiting for the age
limit. Commits are counted in the Delta log itself; rows are read back with polars."""

from __future__ import annotations

import json
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
