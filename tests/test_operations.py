"""What an operator sees: /healthz, /readyz, /metrics (on the ops listener) and the access log."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from test_durability import _drop_privileges

from support import Server, load_captures, row_count, wait_until

LOGS = "main.telemetry.claude_otel_logs"


def _metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = server.ops.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def readyz_until(server: Server, status: int, timeout: float = 30) -> dict[str, object]:
    """Poll /readyz (answered from a cached probe) until it answers ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        response = server.ops.get("/readyz")
        if response.status_code == status:
            document: dict[str, object] = response.json()
            return document
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_healthz_and_readyz(start_server: Callable[..., Server]) -> None:
    server = start_server()
    for client in (server.client, server.ops):
        assert client.get("/healthz").json() == {"status": "ok"}
    ready = readyz_until(server, 200)
    assert ready["status"] == "ready"
    assert ready["warehouse"] == str(server.warehouse)
    assert list(server.warehouse.glob(".otel-ingest-ready-*")) == []  # the probe cleans up


def test_readyz_fails_while_the_warehouse_is_unwritable(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    server = Server(warehouse, "--readiness-interval", "0.1", command_prefix=_drop_privileges())
    try:
        readyz_until(server, 200)
        warehouse.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        document = readyz_until(server, 503)
        assert "not writable" in str(document["reason"])
        assert server.client.get("/healthz").status_code == 200  # the process is still up
        warehouse.chmod(0o755)
        readyz_until(server, 200)
    finally:
        warehouse.chmod(0o755)
        server.stop()


def test_metrics_count_requests_rows_and_commits(start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude")
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": LOGS}
    for _ in range(3):
        assert server.post("/api/2.0/otel/v1/logs", capture.body, headers).status_code == 200
    # One record rejected alone, and one request rejected whole.
    message = ExportLogsServiceRequest()
    message.ParseFromString(capture.body)
    message.resource_logs[0].scope_logs[0].log_records[0].span_id = b"\x01\x02"
    assert server.post("/v1/logs", message.SerializeToString(), headers).status_code == 200
    assert server.post("/v1/logs", b"\xff\xff", headers).status_code == 400

    samples = _metrics(server)
    rows = capture.expected_rows
    label = (("path", "/api/2.0/otel/v1/logs"), ("signal", "logs"), ("status", "200"))
    assert samples[("otel_ingest_requests_total", label)] == 3
    assert samples[("otel_ingest_requests_total", (("path", "/v1/logs"), ("signal", "logs"), ("status", "400")))] == 1
    assert samples[("otel_ingest_rows_written_total", (("table", LOGS),))] == 4 * rows - 1
    assert samples[("otel_ingest_rows_rejected_total", (("table", LOGS),))] == 1
    assert row_count(server.warehouse, LOGS) == 4 * rows - 1
    commits = samples[("otel_ingest_commits_total", (("table", LOGS),))]
    assert 1 <= commits <= 4
    assert samples[("otel_ingest_commit_seconds_count", (("table", LOGS),))] == commits
    assert samples[("otel_ingest_request_seconds_count", (("signal", "logs"),))] == 5
    assert samples[("otel_ingest_buffered_bytes", ())] == 0
    assert samples[("otel_ingest_requests_in_flight", ())] == 0


def test_commit_retries_and_failures_are_counted(start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude")
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": LOGS}
    assert server.post("/v1/logs", capture.body, headers).status_code == 200
    log_dir = server.warehouse / "main" / "telemetry" / "claude_otel_logs" / "_delta_log"
    saved = log_dir.with_name("saved")
    log_dir.rename(saved)
    log_dir.write_text("broken")
    try:
        assert server.post("/v1/logs", capture.body, headers).status_code == 503
    finally:
        log_dir.unlink()
        saved.rename(log_dir)
    samples = _metrics(server)
    assert samples[("otel_ingest_commit_retries_total", (("table", LOGS),))] == 3
    assert samples[("otel_ingest_commit_failures_total", (("table", LOGS),))] == 1


def test_access_log_line_per_request(start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude")
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    headers = {
        "content-type": "application/x-protobuf",
        "x-databricks-uc-table-name": LOGS,
        "authorization": "Bearer some-secret-token-value",
    }
    assert server.post("/v1/logs", capture.body, headers).status_code == 200
    assert server.post("/v1/logs", capture.body, {**headers, "x-databricks-uc-table-name": "a.b"}).status_code == 400
    wait_until(lambda: server.log().count("otel_ingest.access") >= 2, "two access log lines", timeout=10)
    lines = [line for line in server.log().splitlines() if "otel_ingest.access" in line]
    assert len(lines) == 2
    assert f"principal=anonymous table={LOGS} status=200 rows={capture.expected_rows} rejected=0 ms=" in lines[0]
    assert "table=- status=400 rows=0" in lines[1]
    assert "some-secret-token-value" not in server.log()
