"""HTTP behaviour of SPEC §4 against a real server: encodings, partial success, and
every error status with its body, message, and proof that nothing was written."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import deltalake
import httpx
import pyarrow as pa
import pytest
import zstandard
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from otel_ingest import otlp_json
from otel_ingest.schema import signal_schema
from support import Server, export_reply, load_captures, row_count, table_path

LOGS = "main.telemetry.claude_otel_logs"
METRICS = "main.telemetry.claude_otel_metrics"
LOGS_PATH = "/api/2.0/otel/v1/logs"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _capture_logs() -> ExportLogsServiceRequest:
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    message = ExportLogsServiceRequest()
    message.ParseFromString(capture.body)
    return message


def _records(message: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server("--create-tables", "main.telemetry.claude", "--max-body-bytes", "1MiB")


def _status(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    if response.headers["content-type"] == JSON:
        json_format.Parse(response.content, status)
    else:
        assert response.headers["content-type"] == PROTOBUF
        status.ParseFromString(response.content)
    return status


def _assert_error(
    response: httpx.Response, status: int, encoding: str, *fragments: str, server: Server | None = None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == encoding
    message = _status(response).message
    for fragment in fragments:
        assert fragment in message, message
    if server is not None:
        assert row_count(server.warehouse, LOGS) == 0
        assert row_count(server.warehouse, METRICS) == 0


# --- encodings that must work -------------------------------------------------------


@pytest.mark.parametrize(
    "coding, compress",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, as some clients send
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("identity", lambda b: b),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw", "zstd", "identity"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_content_encodings(server: Server, coding: str, compress: Callable[[bytes], bytes], chunked: bool) -> None:
    message = _capture_logs()
    headers = {"Content-Type": PROTOBUF, "Content-Encoding": coding, "X-Databricks-UC-Table-Name": LOGS}
    response = server.post(LOGS_PATH, compress(message.SerializeToString()), headers, chunked=chunked)
    assert response.status_code == 200, response.text
    assert row_count(server.warehouse, LOGS) == _records(message)


def test_json_labelled_protobuf_is_read_as_json(server: Server) -> None:
    """Codex CLI can send OTLP/JSON under a protobuf Content-Type."""
    message = _capture_logs()
    headers = {"content-type": PROTOBUF, "x-databricks-uc-table-name": LOGS}
    response = server.post(LOGS_PATH, otlp_json.dumps(message), headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    assert json.loads(response.content) == {}
    assert row_count(server.warehouse, LOGS) == _records(message)


@pytest.mark.parametrize("content_type", [PROTOBUF, "application/protobuf", JSON, "application/json; charset=utf-8"])
def test_empty_request_is_a_success(server: Server, content_type: str) -> None:
    body = b"{}" if "json" in content_type else b""
    response = server.post("/v1/logs", body, {"content-type": content_type, "x-databricks-uc-table-name": LOGS})
    assert response.status_code == 200, response.text
    assert row_count(server.warehouse, LOGS) == 0


def test_standard_paths_and_default_table(start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude", "--default-logs-table", LOGS)
    message = _capture_logs()
    response = server.post("/v1/logs", message.SerializeToString(), {"content-type": PROTOBUF})
    assert response.status_code == 200, response.text
    assert row_count(server.warehouse, LOGS) == _records(message)
    # The header still wins over the default.
    response = server.post(
        "/v1/metrics", b"{}", {"content-type": JSON, "x-databricks-uc-table-name": "main.telemetry.nope_otel_metrics"}
    )
    _assert_error(response, 404, JSON, "main.telemetry.nope_otel_metrics")


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_partial_success(server: Server, encoding: str) -> None:
    message = _capture_logs()
    records = message.resource_logs[0].scope_logs[0].log_records
    records[0].trace_id = b"\x01" * 5  # wrong length: this record alone is rejected
    records[1].time_unix_nano = 2**64 - 1  # above 2^63-1: rejected too
    body = message.SerializeToString() if encoding == PROTOBUF else otlp_json.dumps(message)
    response = server.post(LOGS_PATH, body, {"content-type": encoding, "x-databricks-uc-table-name": LOGS})
    reply = export_reply(response, ExportLogsServiceResponse())
    assert reply.partial_success.rejected_log_records == 2
    assert "trace_id must be 16 bytes, got 5" in reply.partial_success.error_message
    assert row_count(server.warehouse, LOGS) == _records(message) - 2


# --- every error status ----------------------------------------------------------------


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_400_malformed_body(server: Server, encoding: str) -> None:
    body = b"\x0a\xff\xff\xff" if encoding == PROTOBUF else b'{"resourceLogs": [ {'
    response = server.post(LOGS_PATH, body, {"content-type": encoding, "x-databricks-uc-table-name": LOGS})
    _assert_error(response, 400, encoding, "ExportLogsServiceRequest", server=server)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"resourceLogs": "nope"}', "not a valid OTLP ExportLogsServiceRequest"),
        (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}', "traceId 'zz' is not a hex string"),
        (b"[1, 2]", "must be an object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
    ids=["wrong-type", "bad-hex", "not-object", "not-utf8"],
)
def test_400_invalid_json(server: Server, body: bytes, fragment: str) -> None:
    response = server.post(LOGS_PATH, body, {"content-type": JSON, "x-databricks-uc-table-name": LOGS})
    _assert_error(response, 400, JSON, fragment, server=server)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("main.telemetry", "three dot-separated parts"),
        ("main..claude_otel_logs", "empty part"),
        ("main.telemetry.a.b", "three dot-separated parts"),
        ("main.tele/metry.claude_otel_logs", "may only hold"),
        ("main.`x`.claude_otel_logs", "may only hold"),
        ("main.telemetry.-x", "may only hold"),
        ("main.telemetry." + "x" * 256, "the limit is 255"),
    ],
)
def test_400_bad_table_name(server: Server, name: str, fragment: str) -> None:
    response = server.post(LOGS_PATH, b"", {"content-type": PROTOBUF, "x-databricks-uc-table-name": name})
    _assert_error(response, 400, PROTOBUF, fragment, server=server)
    assert sorted(p.name for p in server.warehouse.iterdir()) == ["main"]
    assert sorted(p.name for p in (server.warehouse / "main").iterdir()) == ["telemetry"]


def test_400_missing_table_header(server: Server) -> None:
    response = server.post(LOGS_PATH, _capture_logs().SerializeToString(), {"content-type": PROTOBUF})
    _assert_error(response, 400, PROTOBUF, "X-Databricks-UC-Table-Name header is missing", server=server)


def test_400_schema_mismatch(server: Server) -> None:
    """Logs sent to a metrics table: rejected, the message names table and column."""
    response = server.post(
        LOGS_PATH,
        _capture_logs().SerializeToString(),
        {"content-type": PROTOBUF, "x-databricks-uc-table-name": METRICS},
    )
    _assert_error(response, 400, PROTOBUF, METRICS, "column event_name is missing", server=server)


def test_400_other_schema_version(server: Server) -> None:
    """A table marked for another version of the v1 schemas is not written."""
    location = table_path(server.warehouse, LOGS)
    deltalake.DeltaTable(str(location)).alter.set_table_properties(
        {"otel.schemaVersion": "v2"}, raise_if_not_exists=False
    )
    response = server.post(
        LOGS_PATH, _capture_logs().SerializeToString(), {"content-type": JSON, "x-databricks-uc-table-name": LOGS}
    )
    _assert_error(response, 400, JSON, LOGS, "otel.schemaVersion='v2'; this server writes 'v1'", server=server)


def test_404_missing_table(server: Server) -> None:
    name = "main.telemetry.absent_otel_logs"
    response = server.post(
        LOGS_PATH, _capture_logs().SerializeToString(), {"content-type": PROTOBUF, "x-databricks-uc-table-name": name}
    )
    _assert_error(response, 404, PROTOBUF, name, "--auto-create", server=server)
    assert not table_path(server.warehouse, name).exists()


def test_404_unknown_path(server: Server) -> None:
    response = server.post("/api/2.0/otel/v1/profiles", b"", {"content-type": JSON})
    _assert_error(response, 404, JSON, "/api/2.0/otel/v1/{metrics,logs,traces}", server=server)


def test_405_wrong_method(server: Server) -> None:
    response = server.client.get(LOGS_PATH, headers={"content-type": PROTOBUF})
    _assert_error(response, 405, PROTOBUF, "POST", server=server)
    assert response.headers["allow"] == "POST"


def test_413_too_large_as_sent(server: Server) -> None:
    body = b"\x00" * (1024 * 1024 + 1)
    for chunked in (False, True):
        response = server.post(
            LOGS_PATH, body, {"content-type": PROTOBUF, "x-databricks-uc-table-name": LOGS}, chunked=chunked
        )
        _assert_error(response, 413, PROTOBUF, "larger than 1,048,576 bytes", server=server)


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_413_too_large_after_decompression(server: Server, coding: str) -> None:
    raw = b"\x00" * (8 * 1024 * 1024)
    body = gzip.compress(raw) if coding == "gzip" else zstandard.ZstdCompressor().compress(raw)
    assert len(body) < 1024 * 1024
    headers = {"content-type": PROTOBUF, "content-encoding": coding, "x-databricks-uc-table-name": LOGS}
    response = server.post(LOGS_PATH, body, headers)
    _assert_error(response, 413, PROTOBUF, "after decompression", server=server)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_415_media_type(server: Server, content_type: str | None) -> None:
    headers = {"x-databricks-uc-table-name": LOGS}
    if content_type:
        headers["content-type"] = content_type
    response = server.post(LOGS_PATH, _capture_logs().SerializeToString(), headers)
    _assert_error(response, 415, JSON, "application/x-protobuf or application/json", server=server)


def test_415_content_encoding(server: Server) -> None:
    headers = {"content-type": PROTOBUF, "content-encoding": "br", "x-databricks-uc-table-name": LOGS}
    response = server.post(LOGS_PATH, _capture_logs().SerializeToString(), headers)
    _assert_error(response, 415, PROTOBUF, "'br'", server=server)


def test_400_corrupt_compressed_body(server: Server) -> None:
    headers = {"content-type": PROTOBUF, "content-encoding": "gzip", "x-databricks-uc-table-name": LOGS}
    truncated = gzip.compress(_capture_logs().SerializeToString())[:-20]
    response = server.post(LOGS_PATH, truncated, headers)
    _assert_error(response, 400, PROTOBUF, "not valid gzip", server=server)


def test_503_storage_unavailable(server: Server) -> None:
    """A commit that keeps failing answers 503 with Retry-After; nothing becomes visible,
    and the server recovers once storage works again."""
    message = _capture_logs()
    headers = {"content-type": PROTOBUF, "x-databricks-uc-table-name": LOGS}

    def body(n: int) -> bytes:
        """The capture with its first record's time moved by n ns: distinct requests (a
        byte-identical one would be answered as a resend of the first)."""
        record = message.resource_logs[0].scope_logs[0].log_records[0]
        record.time_unix_nano += n
        data = message.SerializeToString()
        record.time_unix_nano -= n
        return data

    assert server.post(LOGS_PATH, body(0), headers).status_code == 200
    log_dir = table_path(server.warehouse, LOGS) / "_delta_log"
    saved = log_dir.with_name("saved_log")
    log_dir.rename(saved)
    log_dir.write_text("storage is broken")  # a file where the log folder was: every commit fails
    response = server.post(LOGS_PATH, body(1), headers)
    _assert_error(response, 503, PROTOBUF, LOGS, "retry later")
    assert int(response.headers["retry-after"]) >= 1
    log_dir.unlink()
    saved.rename(log_dir)
    assert row_count(server.warehouse, LOGS) == _records(message)
    assert server.post(LOGS_PATH, body(1), headers).status_code == 200  # the failed one, resent
    assert row_count(server.warehouse, LOGS) == 2 * _records(message)


def test_client_mistakes_never_500(server: Server) -> None:
    """Garbage of every kind to every path, each with its own signal's table, so that the
    body is parsed: always a 400 naming the expected message, never a 5xx, nothing written."""
    garbage = [b"\x00", b"{", b"null", b"[]", b"\xff" * 64]
    malformed = {
        "metrics": b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":7}]}]}]}',
        "logs": b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":7}]}]}]}',
        "traces": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":[]}]}]}]}',
    }
    tables = {"metrics": METRICS, "logs": LOGS, "traces": "main.telemetry.claude_otel_spans"}
    for signal, table in tables.items():
        expected = f"Export{'Trace' if signal == 'traces' else signal.title()}ServiceRequest"
        for body in [*garbage, malformed[signal]]:
            for content_type in (PROTOBUF, JSON):
                response = server.post(
                    f"/v1/{signal}", body, {"content-type": content_type, "x-databricks-uc-table-name": table}
                )
                assert response.status_code == 400, (signal, body, content_type, response.text)
                assert expected in _status(response).message, response.text
    for table in tables.values():
        assert row_count(server.warehouse, table) == 0


def test_auto_create(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server("--auto-create")
    message = _capture_logs()
    name = "Main.Other.New_otel_logs"  # names are case-insensitive, stored lower-case
    response = server.post(
        "/v1/logs", message.SerializeToString(), {"content-type": PROTOBUF, "x-databricks-uc-table-name": name}
    )
    assert response.status_code == 200, response.text
    assert table_path(server.warehouse, name.lower()).is_dir()
    assert row_count(server.warehouse, name.lower()) == _records(message)


@pytest.mark.parametrize(
    "column, make_strict, fragment",
    [
        ("body", lambda t: pa.field("body", t, nullable=False), "column body is NOT NULL"),
        (
            "attributes",
            lambda t: pa.field("attributes", pa.map_(pa.string(), pa.field("value", pa.string(), nullable=False))),
            "column attributes holds no NULL values",
        ),
    ],
)
def test_400_hand_made_table_with_stricter_columns(
    start_server: Callable[..., Server],
    tmp_path: Path,
    column: str,
    make_strict: Callable[[pa.DataType], pa.Field],
    fragment: str,
) -> None:
    """A table made by another tool that forbids NULLs the v1 schema allows is refused."""
    schema = signal_schema("logs")
    index = schema.get_field_index(column)
    strict = schema.set(index, make_strict(schema.field(index).type))
    location = tmp_path / "warehouse" / "main" / "hand" / "made_otel_logs"
    location.mkdir(parents=True)
    deltalake.DeltaTable.create(str(location), strict)
    server = start_server()
    headers = {"content-type": PROTOBUF, "x-databricks-uc-table-name": "main.hand.made_otel_logs"}
    response = server.post(LOGS_PATH, _capture_logs().SerializeToString(), headers)
    _assert_error(response, 400, PROTOBUF, "main.hand.made_otel_logs", fragment)
    assert row_count(server.warehouse, "main.hand.made_otel_logs") == 0
