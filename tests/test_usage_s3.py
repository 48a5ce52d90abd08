"""``otel-ingest usage`` on an object-store warehouse: a real server writes the captures to
S3 (moto's server, tests/s3_server.py), the report refreshes the derived tables there,
incrementally, and its totals equal what the model APIs returned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_server import S3Server, start_s3
from test_usage import TOKENS, api_usage

from support import Capture, Server, load_captures

FIRST = ("cc_hello", "gemini_hello", "codex_hello")
LATER = ("cc_tool", "codex_json")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


def _replay(s3: S3Server, warehouse: str, folder: Path, runs: tuple[str, ...]) -> list[Capture]:
    folder.mkdir()
    server = Server(folder / "unused", "--auto-create", env=s3.env, warehouse_uri=warehouse)
    sent = []
    try:
        for run in runs:
            for capture in load_captures(run):
                if capture.signal in ("logs", "metrics"):
                    response = server.replay(capture)
                    assert response.status_code == 200, (capture.id, response.text)
                    sent.append(capture)
    finally:
        server.stop()
    return sent


def _usage(s3: S3Server, warehouse: str, *args: str) -> str:
    options = ",".join(f"{k}={v}" for k, v in s3.storage_options().items())
    return subprocess.run(
        [sys.executable, "-m", "otel_ingest", "usage", *args, "--warehouse", warehouse, "--storage-options", options],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **s3.env},
    ).stdout


def _expected(captures: list[Capture]) -> dict[tuple[str, str], dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"calls": 0, **dict.fromkeys(TOKENS, 0)})
    for agent, calls in api_usage(captures).items():
        for call in calls:
            group = totals[(agent, call["model"])]
            group["calls"] += 1
            for c in TOKENS:
                group[c] += call[c]
    return dict(totals)


def _report(s3: S3Server, warehouse: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = json.loads(_usage(s3, warehouse, "--json", "--by", "agent,model"))
    return {(i["agent"], i["model"]): {c: i[c] for c in ("calls", *TOKENS)} for i in items}


def test_usage_refreshes_on_s3_incrementally(s3: S3Server, tmp_path: Path) -> None:
    warehouse = f"s3://{s3.bucket}/usage-{os.getpid()}-{time.monotonic_ns()}"
    sent = _replay(s3, warehouse, tmp_path / "first", FIRST)
    assert _report(s3, warehouse) == _expected(sent)  # refreshes first
    again = _usage(s3, warehouse, "--refresh-only")
    assert again.startswith("Refreshed from 6 raw tables: read 0 files"), again  # nothing new
    sent += _replay(s3, warehouse, tmp_path / "later", LATER)
    later = _usage(s3, warehouse, "--refresh-only")
    new_files = len(sent) - 6  # one request, one commit, one file
    read = int(later.split("read ", 1)[1].split(" files", 1)[0])
    assert 0 < read <= new_files, later
    assert _report(s3, warehouse) == _expected(sent)  # (nothing left to refresh)
