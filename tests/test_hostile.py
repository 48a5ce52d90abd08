"""Hostile input (issue 4): every case gets the status it should, a message that says
what is wrong, and leaves storage exactly as it was, or writes only the good records.

A request's effect on storage is judged by listing every file under the warehouse
before and after it; rows are read back with polars.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
import zlib
from collections.abc import Callable, Iterator

import httpx
import polars as pl
import pytest
import zstandard
from google.protobuf.internal.encoder import _VarintBytes
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_ingest import otlp_json
from otel_ingest.flatten.common import MAX_ANY_VALUE_DEPTH
from support import Server, export_reply, load_captures, metric, peak_rss, read_table, wait_until

LOGS = "main.telemetry.claude_otel_logs"
METRICS = "main.telemetry.claude_otel_metrics"
SPANS = "main.telemetry.claude_otel_spans"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
GIB = 1 << 30
MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module; --auto-create, so a bad name that slipped through
    validation would show up as a new folder. No background maintenance: tests compare the
    warehouse's files before and after a request, and a compaction pass (every 300 s by
    default, reached when a loaded machine makes this module run long) would add files."""
    root = tmp_path_factory.mktemp("hostile")
    server = Server(
        root / "warehouse", "--create-tables", "main.telemetry.claude", "--auto-create", "--maintenance-interval", "0"
    )
    yield server
    server.stop()


def storage(server: Server) -> list[str]:
    """Every file and folder under the warehouse."""
    return sorted(str(path.relative_to(server.warehouse)) for path in server.warehouse.rglob("*"))


def post(
    server: Server, signal: str, body: bytes, content_type: str = PROTOBUF, table: str = LOGS, **headers: str
) -> httpx.Response:
    return server.post(
        f"/api/2.0/otel/v1/{signal}",
        body,
        {"content-type": content_type, "x-databricks-uc-table-name": table, **headers},
    )


def status_message(response: httpx.Response) -> str:
    status = status_pb2.Status()
    if response.headers["content-type"] == JSON:
        return str(json.loads(response.content)["message"])
    status.ParseFromString(response.content)
    return status.message


def status_message_of(answer: bytes) -> str:
    """The google.rpc.Status message of a raw protobuf HTTP answer."""
    status = status_pb2.Status()
    status.ParseFromString(answer.partition(b"\r\n\r\n")[2])
    return status.message


def assert_refused(server: Server, response: httpx.Response, before: list[str], code: int, *fragments: str) -> None:
    """The whole request refused with ``code``, a message holding ``fragments``, nothing stored."""
    assert response.status_code == code, response.text
    message = status_message(response)
    for fragment in fragments:
        assert fragment in message, message
    assert storage(server) == before


def _read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(1 << 16):
        answer += chunk
    return answer


def raw_request(port: int, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """An HTTP/1.1 request written byte for byte (httpx refuses NUL and non-ASCII headers)."""
    head = b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: %d\r\n" % (path, len(body))
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        answer = _read_until_closed(sock)
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def log_request(*records: LogRecord) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.extend(records)
    return request


def logs_reply(response: httpx.Response) -> ExportLogsServiceResponse:
    return export_reply(response, ExportLogsServiceResponse())  # type: ignore[return-value]


def rows_with(server: Server, table: str, column: str, marker: str) -> pl.DataFrame:
    frame = read_table(server.warehouse, table)
    return frame.filter(pl.col(column) == marker) if frame.height else frame


# --- table names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fragment",
    [
        (b"main.telemetry..", b"three dot-separated parts"),
        (b"../../../tmp.x.y", b"three dot-separated parts"),
        (b"main.telemetry.../etc", b"three dot-separated parts"),
        (b"main.tele/metry.claude_otel_logs", b"may only hold"),
        (b"/etc.passwd.x", b"may only hold"),
        (b"main.telemetry.a\\..\\b", b"three dot-separated parts"),
        (b"main.telemetry.x\\y", b"may only hold"),
        (b"main.telemetry.logs\x00", b""),  # refused by the HTTP parser itself
        (b"main.tele\x00metry.logs", b""),
        ("main.telemetry.claude_otel_logѕ".encode(), b"ASCII"),  # Cyrillic dze, not s
        ("ｍain.telemetry.claude_otel_logs".encode(), b"ASCII"),  # fullwidth m
        ("main.telemetry.\u212a".encode(), b"ASCII"),  # Kelvin sign: lower() would make it "k"
        ("main.telemetry.claude_otel_logs\u200b".encode(), b"ASCII"),  # zero-width space
        (b".telemetry.claude_otel_logs", b"empty part"),
        (b"main..claude_otel_logs", b"empty part"),
        (b"main.telemetry.", b"empty part"),
        (b"main.telemetry." + b"x" * 256, b"the limit is 255"),
        (b"main.telemetry." + b"x" * 60_000, b"the limit is 255"),  # longer heads get 431
        (b"main.telemetry.%2e%2e", b"may only hold"),
        (b"main.telemetry.a b", b"may only hold"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_hostile_table_names_are_400_and_touch_nothing(server: Server, name: bytes, fragment: bytes) -> None:
    before = storage(server)
    body = log_request(LogRecord(severity_text="INFO")).SerializeToString()
    headers = [(b"content-type", PROTOBUF.encode()), (b"x-databricks-uc-table-name", name)]
    status, answer = raw_request(server.port, b"/v1/logs", headers, body)
    assert status == 400, answer
    assert fragment in answer, answer
    assert storage(server) == before


# --- request heads --------------------------------------------------------------------


def test_request_head_over_64_kib_is_431(server: Server) -> None:
    before = storage(server)
    body = log_request(LogRecord(severity_text="INFO")).SerializeToString()
    table = [(b"content-type", PROTOBUF.encode()), (b"x-databricks-uc-table-name", LOGS.encode())]
    many = [(b"x-h%d" % i, b"v") for i in range(100_000)]
    status, answer = raw_request(server.port, b"/v1/logs", table + many, body)
    assert status == 431
    assert json.loads(answer)["message"].startswith("The request line and headers are larger than 65,536 bytes")
    status, _ = raw_request(server.port, b"/v1/logs", [*table, (b"x-big", b"a" * (10 << 20))], body)
    assert status == 431
    assert storage(server) == before
    # Headers up to the limit are fine.
    status, answer = raw_request(server.port, b"/v1/logs", [*table, (b"x-pad", b"p" * 60_000)], body)
    assert status == 200, answer


def test_pipelined_requests_are_all_answered(server: Server) -> None:
    """The head bounds count each request's head on a connection, not the connection's bytes."""
    body = log_request(LogRecord(event_name="pipelined")).SerializeToString()
    one = (
        b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-protobuf\r\n"
        b"x-databricks-uc-table-name: "
        + LOGS.encode()
        + b"\r\nx-pad: "
        + b"p" * 40_000
        + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body
    )
    last = one.replace(b"host: 127.0.0.1", b"host: 127.0.0.1\r\nconnection: close")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(one * 3 + last)  # 160 KB on one connection, in one write
        answers = _read_until_closed(sock)
    assert answers.count(b"HTTP/1.1 200 OK") == 4
    assert rows_with(server, LOGS, "event_name", "pipelined").height == 4


def test_endless_header_does_not_grow_memory(server: Server) -> None:
    """httptools would buffer a header without end; the server stops reading it at 64 KiB."""
    peak_before = peak_rss(server.process.pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\nx-endless: ")
        try:
            for _ in range(300):
                sock.sendall(b"a" * MIB)
                sent += MIB
        except OSError:
            pass  # closed by the server after its 431
    growth = peak_rss(server.process.pid) - peak_before
    print(f"endless header: {sent / MIB:.0f} MiB sent, peak RSS grew {growth / MIB:.1f} MiB")
    assert growth < 16 * MIB
    assert post(server, "logs", b"").status_code == 200


def test_slow_request_head_is_408_and_idle_connections_close(server: Server) -> None:
    """A head sent a byte at a time, or never, cannot hold a connection for ever."""
    address = ("127.0.0.1", server.port)
    with socket.create_connection(address, timeout=60) as slow, socket.create_connection(address, timeout=60) as idle:
        started = time.monotonic()
        slow.sendall(b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        answer = _read_until_closed(slow)
        idle_answer = _read_until_closed(idle)
        print(f"slow head answered and idle connection closed after {time.monotonic() - started:.1f} s")
    assert answer.startswith(b"HTTP/1.1 408 ")
    body = answer.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["message"].startswith("The request line and headers did not arrive within 10 s")
    assert idle_answer == b""
    assert post(server, "logs", b"").status_code == 200


def test_stalled_body_is_408_and_holds_no_budget(start_server: Callable[..., Server]) -> None:
    """A client that announces a body and stops sending holds neither memory nor, for
    longer than --read-timeout, its connection."""
    server = start_server(
        "--create-tables", "main.telemetry.claude", "--read-timeout", "1", "--max-buffer-bytes", "12MiB"
    )
    normal = log_request(LogRecord(event_name="beside-stall", body=AnyValue(string_value="x" * 200_000)))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as stalled:
        stalled.sendall(
            b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-protobuf\r\n"
            b"x-databricks-uc-table-name: " + LOGS.encode() + b"\r\ncontent-length: 12000000\r\n\r\n" + b"\n" * 1000
        )
        # The stalled request announced 12,000,000 of the 12 MiB but holds the 1,000 bytes sent.
        wait_until(lambda: metric(server, "otel_ingest_buffered_bytes") == 1000, "the stalled request's 1,000 bytes")
        beside = post(server, "logs", normal.SerializeToString())
        answer = _read_until_closed(stalled)
    assert beside.status_code == 200, beside.text
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert "Nothing of the body arrived for 1 s after 1,000 bytes" in status_message_of(answer)
    assert read_table(server.warehouse, LOGS)["event_name"].to_list() == ["beside-stall"]


def test_client_hanging_up_midway_is_logged_as_499_not_an_error(server: Server) -> None:
    before = storage(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-protobuf\r\n"
            b"x-databricks-uc-table-name: " + LOGS.encode() + b"\r\ncontent-length: 1000\r\n\r\n" + b"\n" * 10
        )
        # Hang up only once the server is reading the body (it holds the 10 bytes sent).
        wait_until(lambda: metric(server, "otel_ingest_buffered_bytes") == 10, "the body to be read")
    wait_until(lambda: "status=499" in server.log(), "the 499 in the access log", timeout=10)
    assert f"table={LOGS} status=499" in server.log()
    assert "Unexpected error" not in server.log() and "Traceback" not in server.log()
    assert 'status="499"' in server.ops.get("/metrics").text
    assert storage(server) == before


# --- compression bombs ----------------------------------------------------------------


def _compress_zeros(compressor: zlib._Compress | zstandard.ZstdCompressionObj, size: int) -> bytes:
    """``size`` zero bytes compressed a megabyte at a time, never held whole."""
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(size // MIB)]
    return b"".join(parts) + compressor.flush()


BOMBS = {
    "gzip": lambda: _compress_zeros(zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), GIB),
    "deflate": lambda: _compress_zeros(zlib.compressobj(9), GIB),
    "zstd": lambda: _compress_zeros(zstandard.ZstdCompressor(level=3).compressobj(), GIB),
    # Compressed twice: the outer layer is tiny, the inner one is the bomb.
    "gzip, gzip": lambda: gzip.compress(BOMBS["gzip"]()),
}


@pytest.mark.parametrize("coding", list(BOMBS))
def test_decompression_bomb_is_413_with_bounded_memory(server: Server, coding: str) -> None:
    """1 GiB of zeros, compressed: refused once 64 MiB (the body limit) have come out."""
    bomb = BOMBS[coding]()
    before, peak_before = storage(server), peak_rss(server.process.pid)
    started = time.monotonic()
    response = post(server, "logs", bomb, **{"content-encoding": coding})
    seconds = time.monotonic() - started
    growth = peak_rss(server.process.pid) - peak_before
    print(f"{coding} bomb: {len(bomb):,} B sent, 413 after {seconds:.2f} s, peak RSS grew {growth / MIB:.0f} MiB")
    assert_refused(server, response, before, 413, "after decompression", "67,108,864 bytes")
    # Output stops at the 64 MiB limit and is held once, plus a megabyte being inflated.
    assert growth < 96 * MIB
    assert post(server, "logs", b"").status_code == 200  # still serving


# --- AnyValue nesting -----------------------------------------------------------------


def nested_array(depth: int) -> AnyValue:
    """``depth`` arrays around a string (depth 0 is the string itself)."""
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    return value


def in_kvlist(value: AnyValue) -> AnyValue:
    outer = AnyValue()
    outer.kvlist_value.values.add(key="k", value=value)
    return outer


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_nesting_past_the_depth_limit_rejects_the_record_alone(server: Server, encoding: str) -> None:
    limit = MAX_ANY_VALUE_DEPTH
    deepest_allowed = LogRecord(event_name=f"deep-ok-{encoding}", body=nested_array(limit - 1))
    too_deep_body = LogRecord(event_name=f"deep-body-{encoding}", body=nested_array(limit))
    too_deep_attribute = LogRecord(
        event_name=f"deep-attr-{encoding}", attributes=[KeyValue(key="a", value=in_kvlist(nested_array(limit + 4)))]
    )
    request = log_request(deepest_allowed, too_deep_body, too_deep_attribute)
    body = request.SerializeToString() if encoding == PROTOBUF else otlp_json.dumps(request)

    reply = logs_reply(post(server, "logs", body, encoding))

    assert reply.partial_success.rejected_log_records == 2
    assert f"log record 2: an attribute or body nests deeper than {limit} levels" in (
        reply.partial_success.error_message
    )
    stored = rows_with(server, LOGS, "event_name", f"deep-ok-{encoding}")
    assert stored.height == 1
    value: object = json.loads(stored["body"][0])
    for _ in range(limit - 1):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == "leaf"
    for name in (f"deep-body-{encoding}", f"deep-attr-{encoding}"):
        assert rows_with(server, LOGS, "event_name", name).height == 0


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand: the protobuf library itself
    refuses to build messages nested this deep."""
    return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload


def _raw_nested_log_request(depth: int) -> bytes:
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value → ArrayValue.values
    # ExportLogsServiceRequest.resource_logs → ResourceLogs.scope_logs → ScopeLogs.log_records → LogRecord.body
    return _field(1, _field(2, _field(2, _field(5, value))))


@pytest.mark.parametrize("depth", [60, 200, 100_000])
def test_nesting_beyond_protobufs_own_limit_is_400(server: Server, depth: int) -> None:
    before = storage(server)
    response = post(server, "logs", _raw_nested_log_request(depth))
    assert_refused(server, response, before, 400, "more than 100 levels deep")

    array_open, array_close = b'{"arrayValue":{"values":[', b"]}}"
    document = (
        b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":'
        + array_open * depth
        + b'{"stringValue":"x"}'
        + array_close * depth
        + b"}]}]}]}"
    )
    response = post(server, "logs", document, JSON)
    assert_refused(server, response, before, 400, "nests")


# --- size ----------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "zstd"])
def test_compressed_bodies_larger_than_a_megabyte_inflate_whole(server: Server, coding: str) -> None:
    """Inflation runs a megabyte at a time; a valid body across many rounds arrives intact."""
    text = os.urandom(1_500_000).hex()  # 3 MB, compresses about 2:1
    body = log_request(LogRecord(event_name=f"large-{coding}", body=AnyValue(string_value=text))).SerializeToString()
    compress = {"gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstandard.ZstdCompressor().compress}
    reply = logs_reply(post(server, "logs", compress[coding](body), **{"content-encoding": coding}))
    assert not reply.HasField("partial_success")
    assert rows_with(server, LOGS, "event_name", f"large-{coding}")["body"].to_list() == [text]


def test_100k_attributes_on_one_record(server: Server) -> None:
    record = LogRecord(event_name="wide")
    record.attributes.extend(KeyValue(key=f"k{i}", value=AnyValue(string_value=f"v{i}")) for i in range(100_000))
    body = log_request(record).SerializeToString()
    print(f"100k attributes: {len(body):,} B protobuf")

    reply = logs_reply(post(server, "logs", body))

    assert not reply.HasField("partial_success")
    (stored,) = rows_with(server, LOGS, "event_name", "wide")["attributes"].to_list()
    assert len(stored) == 100_000
    assert stored["k0"] == "v0" and stored["k99999"] == "v99999" and stored["k54321"] == "v54321"


def _wide_resource_logs() -> tuple[str, str, bytes]:
    request = log_request(*(LogRecord(severity_text="INFO") for _ in range(2_000)))
    request.resource_logs[0].resource.attributes.add(key="big", value=AnyValue(string_value="r" * 1_100_000))
    return "logs", LOGS, request.SerializeToString()


def _long_description_metrics() -> tuple[str, str, bytes]:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m", description="d" * 100_000)
    for i in range(20_000):
        metric.gauge.data_points.add(as_int=i)
    return "metrics", METRICS, request.SerializeToString()


@pytest.mark.parametrize("make", [_wide_resource_logs, _long_description_metrics])
def test_shared_values_copied_into_every_row_are_charged(
    server: Server, make: Callable[[], tuple[str, str, bytes]]
) -> None:
    """A resource (or a metric's description) is sent once but stored on every row: a
    1 MB request that would expand to 2 GB at commit time is refused before it is built."""
    signal, table, body = make()
    before, peak_before = storage(server), peak_rss(server.process.pid)
    response = post(server, signal, body, table=table)
    growth = peak_rss(server.process.pid) - peak_before
    print(f"{signal}: {len(body):,} B request refused, peak RSS grew {growth / MIB:.0f} MiB")
    assert_refused(server, response, before, 413, "more than the server's whole buffer of 1,073,741,824 bytes")
    assert growth < 200 * MIB
    assert post(server, "logs", b"").status_code == 200


# --- strings, ids and numbers ---------------------------------------------------------


def test_invalid_utf8_in_a_protobuf_string_is_400(server: Server) -> None:
    body = log_request(LogRecord(body=AnyValue(string_value="PLACEHOLDER"))).SerializeToString()
    broken = body.replace(b"PLACEHOLDER", b"\xff\xfe\xc3(LDER\xed\xa0\x80")  # same length, not UTF-8
    assert len(broken) == len(body)
    before = storage(server)
    assert_refused(server, post(server, "logs", broken), before, 400, "invalid UTF-8")
    json_body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"\xff\xfe"}}]}]}]}'
    assert_refused(server, post(server, "logs", json_body, JSON), before, 400, "not valid JSON", "utf-8")


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_ids_of_the_wrong_length_reject_their_record(server: Server, encoding: str) -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    good = spans.add(name=f"good-{encoding}", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    spans.add(name="short-trace", trace_id=b"\x01" * 15, span_id=b"\x02" * 8)
    spans.add(name="long-span", trace_id=b"\x01" * 16, span_id=b"\x02" * 9)
    spans.add(name="short-parent", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 7)
    spans.add(name="long-trace", trace_id=b"\x01" * 17, span_id=b"\x02" * 8)
    body = request.SerializeToString() if encoding == PROTOBUF else otlp_json.dumps(request)

    reply = export_reply(post(server, "traces", body, encoding, SPANS), ExportTraceServiceResponse())

    assert reply.partial_success.rejected_spans == 4
    assert "span 2: trace_id must be 16 bytes, got 15" in reply.partial_success.error_message
    stored = read_table(server.warehouse, SPANS).filter(pl.col("name").is_in([s.name for s in spans]))
    assert stored["name"].to_list() == [good.name]
    assert stored["trace_id"].to_list() == ["01" * 16]


def test_ids_that_are_not_hex_in_json_are_400(server: Server) -> None:
    before = storage(server)
    for trace_id in ('"xyz"', '"abc"', "12", "[1]"):
        document = '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":' + trace_id + ',"name":"x"}]}]}]}'
        response = post(server, "traces", document.encode(), JSON, SPANS)
        assert_refused(server, response, before, 400, "traceId")


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
def test_times_above_int64_reject_their_record(server: Server, encoding: str) -> None:
    logs = log_request(
        LogRecord(event_name=f"time-ok-{encoding}", time_unix_nano=1_700_000_000_000_000_000),
        LogRecord(event_name="time-max", time_unix_nano=2**64 - 1),
        LogRecord(event_name="observed-over", observed_time_unix_nano=2**63),
    )
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name=f"time-{encoding}")
    metric.gauge.data_points.add(as_int=1, time_unix_nano=2**63 - 1)
    metric.gauge.data_points.add(as_int=2, time_unix_nano=2**63)
    metric.gauge.data_points.add(as_int=3, start_time_unix_nano=2**64 - 1)

    def encode(message: ExportLogsServiceRequest | ExportMetricsServiceRequest) -> bytes:
        return message.SerializeToString() if encoding == PROTOBUF else otlp_json.dumps(message)

    reply = logs_reply(post(server, "logs", encode(logs), encoding))
    assert reply.partial_success.rejected_log_records == 2
    assert "above 2^63-1" in reply.partial_success.error_message
    assert rows_with(server, LOGS, "event_name", f"time-ok-{encoding}").height == 1
    assert rows_with(server, LOGS, "event_name", "time-max").height == 0

    metrics_reply = export_reply(
        post(server, "metrics", encode(metrics), encoding, METRICS), ExportMetricsServiceResponse()
    )
    assert metrics_reply.partial_success.rejected_data_points == 2
    stored = rows_with(server, METRICS, "name", f"time-{encoding}")
    assert stored["gauge"].struct.field("value").to_list() == [1.0]


RECORD = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[%s]}]}]}'


@pytest.mark.parametrize(
    "document, fragment",
    [
        ('{"resourceLogs":"x"}', "resourceLogs must be in []"),
        ('{"resourceLogs":[1]}', "resourceLogs"),
        ('{"resourceLogs":[{"scopeLogs":{}}]}', "scopeLogs"),
        (RECORD % '{"timeUnixNano":true}', "timeUnixNano"),
        (RECORD % '{"timeUnixNano":"soon"}', "timeUnixNano"),
        (RECORD % '{"timeUnixNano":"18446744073709551616"}', "out of range"),  # 2^64
        (RECORD % '{"timeUnixNano":1e400}', "timeUnixNano"),
        (RECORD % '{"body":{"intValue":100000000000000000000000000000}}', "out of range"),
        (RECORD % '{"body":{"doubleValue":1e400}}', "Infinity"),
        (RECORD % ('{"body":{"doubleValue":1' + "0" * 400 + "}}"), "too large"),  # was a 500
        (RECORD % r'{"severityNumber":"\ud800"}', "lone UTF-16 surrogate"),  # was a 500
        (RECORD % '{"body":{"stringValue":"a","intValue":1}}', "oneof"),
        (RECORD % '{"attributes":{"k":"v"}}', "attributes"),
        (RECORD % '{"flags":-1}', "flags"),
        ('{"resourceLogs":[],"resourceLogs":[]}', "the key 'resourceLogs' appears twice"),
        (RECORD % '{"body":{"stringValue":"a"},"body":{"stringValue":"b"}}', "the key 'body' appears twice"),
        ("[]", "must be an object"),
        ('"resourceLogs"', "must be an object"),
        ('{"resourceLogs":' + "[" * 100_000, "nests too deeply"),
        ('{"resourceLogs":[', "not valid JSON"),
    ],
)
def test_json_of_the_wrong_shape_is_400(server: Server, document: str, fragment: str) -> None:
    before = storage(server)
    response = post(server, "logs", document.encode(), JSON)
    assert_refused(server, response, before, 400, fragment)
    assert response.headers["content-type"] == JSON
    assert len(status_message(response)) < 600  # nested field paths are shortened


# --- empty and truncated bodies -------------------------------------------------------


@pytest.mark.parametrize("coding", [None, "gzip", "zstd"])
def test_empty_protobuf_body_is_an_empty_export(server: Server, coding: str | None) -> None:
    """Zero bytes are a valid, empty protobuf request, whatever the Content-Encoding says."""
    before = storage(server)
    headers = {"content-encoding": coding} if coding else {}
    response = post(server, "logs", b"", **headers)
    assert response.status_code == 200, response.text
    assert response.content == b""  # an empty ExportLogsServiceResponse
    assert storage(server) == before


@pytest.mark.parametrize("body", [b"", b"  \r\n"])
def test_empty_json_body_is_400(server: Server, body: bytes) -> None:
    before = storage(server)
    assert_refused(server, post(server, "logs", body, JSON), before, 400, "The body is empty", "at least {}")


def test_truncated_protobuf_is_400_and_writes_nothing(server: Server) -> None:
    tables = {"logs": LOGS, "metrics": METRICS, "traces": SPANS}
    captures = [c for c in load_captures() if c.header("content-type") == PROTOBUF and len(c.body) > 1]
    captures = [c for c in captures if not c.header("content-encoding") and not c.body.lstrip().startswith(b"{")]
    assert len(captures) >= 10
    for capture in captures:
        before = storage(server)
        response = post(server, capture.signal, capture.body[:-1], PROTOBUF, tables[capture.signal])
        assert_refused(server, response, before, 400, "not a valid protobuf")
