"""``otel-ingest usage blocks``: ccusage-style 5-hour billing windows per person, from Claude
Code's real ``api_request`` event replayed at chosen times for two people into a real server."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_usage_gateway import _attributes, _document, _records

from support import Server, load_captures

USAGE = (sys.executable, "-m", "otel_ingest", "usage")
DAY = datetime(2026, 11, 27, tzinfo=UTC)
# person → call times (hours after midnight UTC). A block starts at the hour of the first
# call after the previous block ended and lasts five hours (the end is exclusive).
CALLS = {
    "ada": [10 + 20 / 60, 11.0, 14 + 59 / 60, 15 + 20 / 60, 21.0],
    "bo": [12.5, 17.5],
}
EXPECTED = {  # (person, block start) → calls, by the rule above
    ("ada", "2026-11-27T10:00Z"): 3,
    ("ada", "2026-11-27T15:00Z"): 1,
    ("ada", "2026-11-27T21:00Z"): 1,
    ("bo", "2026-11-27T12:00Z"): 1,
    ("bo", "2026-11-27T17:00Z"): 1,
}


def _events() -> tuple[dict[str, Any], int, str]:
    """Claude Code's logs export with one api_request per planned call; its input tokens."""
    capture = next(c for c in load_captures("cc_hello") if c.signal == "logs")
    document = _document(capture)
    scope = document["resourceLogs"][0]["scopeLogs"][0]
    template = next(r for r in _records(document) if _attributes(r).get("event.name") == "api_request")
    a = _attributes(template)
    tokens = int(a["input_tokens"]) + int(a["cache_read_tokens"]) + int(a["cache_creation_tokens"])
    records = []
    for person, hours in CALLS.items():
        for hour in hours:
            record = copy.deepcopy(template)
            when = DAY + timedelta(hours=hour)
            record["timeUnixNano"] = record["observedTimeUnixNano"] = str(int(when.timestamp() * 1e9))
            for attribute in record["attributes"]:
                if attribute["key"] == "user.id":
                    attribute["value"] = {"stringValue": person}
            records.append(record)
    scope["logRecords"] = records
    return document, tokens, str(capture.table)


def test_blocks_per_person(tmp_path: Path) -> None:
    document, tokens, table = _events()
    server = Server(tmp_path / "warehouse", "--auto-create")
    try:
        headers = {"content-type": "application/json", "x-databricks-uc-table-name": table}
        response = server.post("/v1/logs", json.dumps(document).encode(), headers)
        assert (response.status_code, response.json()) == (200, {}), response.text
    finally:
        server.stop()
    out = subprocess.run(
        [*USAGE, "blocks", "--by", "user", "--json", "--warehouse", str(server.warehouse)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    items = json.loads(out)
    assert {(i["user"], i["block"]): i["calls"] for i in items} == EXPECTED
    for item in items:
        assert list(item)[:3] == ["block", "user", "calls"]
        assert item["input_tokens"] == item["calls"] * tokens
        start = datetime.fromisoformat(item["block"])
        assert datetime.fromisoformat(item["block_end"]) == start + timedelta(hours=5)
        assert start <= datetime.fromisoformat(item["first_call"]) <= datetime.fromisoformat(item["last_call"])
        assert datetime.fromisoformat(item["last_call"]) < start + timedelta(hours=5)
    table_out = subprocess.run(
        [*USAGE, "blocks", "--warehouse", str(server.warehouse)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "2026-11-27T21:00Z" in table_out
