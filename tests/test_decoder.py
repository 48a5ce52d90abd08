"""The native decoder against the Python decoder (the reference), on the same bodies.

For every body — captured requests, the hypothesis strategies of test_properties.py, records
made invalid on purpose, mutated captures and fixed malformed cases — the result of
``otel_ingest.decode.decode`` (native where it decides) equals the Python flatteners' exactly:
same schema, same values, same rejected count and first message, or the same refusal. The
native decoder may decline a body (it then goes to the Python path); the tests also check
that it does decide the valid logs bodies, so the comparison is not empty.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otel_ingest import decode, wire
from otel_ingest.decode import jsonpb, native
from otel_ingest.errors import DecodeError
from otel_ingest.flatten import FLATTENERS
from otel_ingest.flatten.common import MAX_ANY_VALUE_DEPTH
from otel_ingest.schema import Signal, signal_schema
from support import load_captures
from test_properties import MUTATIONS, PROPERTY, REQUESTS, copy_of, normalised, records_of

LIMIT = 64 << 20
CAPTURES = load_captures()


@pytest.fixture(autouse=True)
def _native_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare the two decoders whatever the suite runs with."""
    monkeypatch.delenv(decode.DECODER_VARIABLE, raising=False)


def test_the_native_decoder_is_built() -> None:
    """CI has a compiler: a build that silently fell back would make every comparison trivial."""
    if os.environ.get("OTEL_INGEST_NATIVE") == "0":
        pytest.skip("OTEL_INGEST_NATIVE=0: built without the native decoder on purpose")
    assert native.available()
    assert decode.use_native()


def reference(signal: Signal, body: bytes, encoding: wire.Encoding) -> tuple[Any, ...]:
    try:
        message, encoding = wire.decode_request(signal, body, encoding)
    except DecodeError as error:
        return ("refused", str(error))
    result = FLATTENERS[signal](message)
    return ("rows", encoding, result.batch, result.rejected, result.first_error)


def served(signal: Signal, body: bytes, encoding: wire.Encoding) -> tuple[Any, ...]:
    try:
        result, encoding = decode.decode(signal, body, encoding, LIMIT)
    except DecodeError as error:
        return ("refused", str(error))
    return ("rows", encoding, result.batch, result.rejected, result.first_error)


def assert_same(signal: Signal, body: bytes, encoding: wire.Encoding = "protobuf") -> bool:
    """The served result equals the reference; True when the native decoder decided it."""
    expected = reference(signal, body, encoding)
    actual = served(signal, body, encoding)
    assert actual[0] == expected[0], (expected, actual)
    if expected[0] == "refused":
        assert actual == expected
    else:
        _, encoding_e, batch_e, rejected_e, first_e = expected
        _, encoding_a, batch_a, rejected_a, first_a = actual
        assert (encoding_a, rejected_a, first_a) == (encoding_e, rejected_e, first_e)
        assert batch_a.schema.equals(batch_e.schema)
        batch_a.validate(full=True)
        if not batch_a.equals(batch_e):  # NaN differs from NaN for equals(): compare values
            for name in batch_e.schema.names:
                column_e, column_a = batch_e.column(name), batch_a.column(name)
                assert normalised(column_a.to_pylist()) == normalised(column_e.to_pylist()), name
    return encoding == "protobuf" and native.decode(signal, body, LIMIT) is not None


# --------------------------------------------------------------------------- captures


def _bodies() -> Iterator[tuple[str, Signal, bytes, wire.Encoding]]:
    for capture in CAPTURES:
        signal: Signal = capture.signal  # type: ignore[assignment]
        body = wire.decompress(capture.body, capture.header("content-encoding"), LIMIT)
        encoding = wire.media_type(capture.header("content-type"))
        yield capture.id, signal, body, encoding
        try:
            message, real = wire.decode_request(signal, body, encoding)
        except DecodeError:
            continue
        if real == "json":  # the same request in protobuf
            yield f"{capture.id} as protobuf", signal, message.SerializeToString(), "protobuf"


BODIES = list(_bodies())


@pytest.mark.parametrize(("signal", "body", "encoding"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES])
def test_every_capture_decodes_the_same(signal: Signal, body: bytes, encoding: wire.Encoding) -> None:
    decided = assert_same(signal, body, encoding)
    if signal in native.SIGNALS and encoding == "protobuf":
        assert decided, "the native decoder declined a valid captured request"


# --------------------------------------------------------------------------- generated messages


# 80 examples per signal rather than PROPERTY's 120: three signals, and the suite has a time budget.
EACH_SIGNAL = settings(PROPERTY, max_examples=80)


@pytest.mark.parametrize("signal", native.SIGNALS)
@EACH_SIGNAL
@given(data=st.data())
def test_generated_requests_decode_the_same(signal: Signal, data: st.DataObject) -> None:
    """(OTLP/JSON takes the Python path whatever the decoder.)"""
    request = data.draw(REQUESTS[signal], label="request")
    assert assert_same(signal, request.SerializeToString())


@pytest.mark.parametrize("signal", native.SIGNALS)
@settings(PROPERTY, max_examples=50)
@given(data=st.data())
def test_invalid_records_are_rejected_the_same(signal: Signal, data: st.DataObject) -> None:
    request = data.draw(REQUESTS[signal].filter(lambda r: records_of(signal, r)), label="request")
    invalid = copy_of(request)
    records = records_of(signal, invalid)
    for _ in range(data.draw(st.integers(1, 3), label="how many")):
        target = records[data.draw(st.integers(0, len(records) - 1), label="position")]
        data.draw(st.sampled_from(MUTATIONS[target.kind or signal]), label="mutation")(target.message, data)
    assert assert_same(signal, invalid.SerializeToString())


@PROPERTY
@given(numbers=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=200))
def test_doubles_are_written_as_python_writes_them(numbers: list[float]) -> None:
    """repr() of every double, at the top of an attribute and inside a JSON array."""
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    for i, number in enumerate(numbers):
        record.attributes.add(key=f"d{i}", value=AnyValue(double_value=number))
    record.body.array_value.values.extend(AnyValue(double_value=number) for number in numbers)
    assert assert_same("logs", request.SerializeToString())


def test_doubles_at_the_edges() -> None:
    edges = [0.0, -0.0, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 0.1, 1 / 3, 5e-324, 2.2250738585072014e-308]
    edges += [1.7976931348623157e308, 123456789.125, -1.5e-7, 2**53, 2**63, math.pi, 1e22, 1e23, 2.0**-24]
    edges += [2.0**k for k in range(-1074, 1024, 7)] + [-(2.0**k) * 3 for k in range(-1000, 1000, 13)]
    test_doubles_are_written_as_python_writes_them.hypothesis.inner_test(edges)  # type: ignore[attr-defined]


def _nested(depth: int, leaf: AnyValue | None = None, kvlist: bool = False) -> AnyValue:
    value = leaf or AnyValue(string_value="leaf")
    for level in range(depth):
        if kvlist and level % 2:
            value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=value)]))
        else:
            value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


@pytest.mark.parametrize("depth", range(MAX_ANY_VALUE_DEPTH - 2, MAX_ANY_VALUE_DEPTH + 3))
@pytest.mark.parametrize("where", ["resource", "scope", "body", "attribute", "overwritten attribute", "kvlist"])
def test_nesting_limits_decide_the_same(depth: int, where: str) -> None:
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    scope = resource.scope_logs.add()
    scope.log_records.add(time_unix_nano=1)
    record = scope.log_records.add(time_unix_nano=2)
    request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=3)
    deep = _nested(depth, kvlist=where == "kvlist")
    if where == "resource":
        resource.resource.attributes.add(key="deep", value=deep)
    elif where == "scope":
        scope.scope.attributes.add(key="deep", value=deep)
    elif where == "body":
        record.body.CopyFrom(deep)
    elif where == "overwritten attribute":  # a later value for the key does not save the record
        record.attributes.add(key="k", value=deep)
        record.attributes.add(key="k", value=AnyValue(int_value=1))
    else:
        record.attributes.add(key="deep", value=deep)
    # Empty values at the bottom count as a level too.
    record.attributes.add(key="empty", value=_nested(depth, AnyValue()))
    decided = assert_same("logs", request.SerializeToString())
    assert decided or where == "kvlist"  # kvlists nest 3 messages a level: near protobuf's limit


def test_values_of_every_kind_decode_the_same() -> None:
    """Each AnyValue kind at the top and inside arrays and kvlists, with repeated keys,
    escapes, non-ASCII text, bytes, empty values, ids of every length and enum numbers."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add(schema_url="https://r")
    resource_logs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    resource_logs.resource.dropped_attributes_count = 2**32 - 1
    scope_logs = resource_logs.scope_logs.add(schema_url="")
    scope_logs.scope.name = "scope"
    scope_logs.scope.attributes.add(key="", value=AnyValue())
    values = [
        AnyValue(),
        AnyValue(string_value=""),
        AnyValue(string_value='quote " backslash \\ newline \n tab \t bell \x07 del \x7f é 日本 😀'),
        AnyValue(bool_value=True),
        AnyValue(bool_value=False),
        AnyValue(int_value=-(2**63)),
        AnyValue(int_value=2**63 - 1),
        AnyValue(double_value=math.nan),
        AnyValue(double_value=-math.inf),
        AnyValue(bytes_value=b""),
        AnyValue(bytes_value=b"\x00\xff\x10"),
        AnyValue(bytes_value=b"ab"),
        AnyValue(array_value=ArrayValue()),
        AnyValue(kvlist_value=KeyValueList()),
    ]
    mixed = AnyValue(array_value=ArrayValue(values=values))
    pairs = [KeyValue(key=f"k{i % 5}", value=value) for i, value in enumerate(values)]
    pairs.append(KeyValue(key="no value"))
    kvlist = AnyValue(kvlist_value=KeyValueList(values=pairs))
    for severity in (0, 9, 24, 25, -1, 1000, 2**31 - 1, -(2**31)):
        for value in [*values, mixed, kvlist]:
            record = scope_logs.log_records.add(severity_number=severity, flags=2**31, dropped_attributes_count=7)  # type: ignore[arg-type]
            record.body.CopyFrom(value)
            record.attributes.extend(pairs)
            record.attributes.add(key="nested", value=kvlist)
    for size in (0, 1, 8, 15, 16, 17):
        scope_logs.log_records.add(trace_id=bytes(range(size)), span_id=bytes(range(size // 2)))
    scope_logs.log_records.add(time_unix_nano=2**63, observed_time_unix_nano=2**64 - 1)
    scope_logs.log_records.add(observed_time_unix_nano=2**63 - 1, event_name="e", severity_text="INFO")
    many = scope_logs.log_records.add()
    for i in range(300):  # past the linear search: the hash index keeps first position, last value
        many.attributes.add(key=f"key{i % 120}", value=AnyValue(int_value=i))
    assert assert_same("logs", request.SerializeToString())


def _rich_spans() -> bytes:
    """Spans with what the one captured trace lacks: events, links, every status, odd ids and enums."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add(schema_url="https://r")
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope_spans = resource_spans.scope_spans.add(schema_url="https://s")
    scope_spans.scope.name = "scope"
    nested = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="a", value=AnyValue(double_value=0.1))]))
    for i, kind in enumerate((0, 1, 2, 3, 4, 5, 6, -1)):
        span = scope_spans.spans.add(
            trace_id=bytes(range(16)) if i % 3 else b"",
            span_id=bytes(range(i, i + 8)),
            parent_span_id=b"" if i % 2 else bytes(8),
            trace_state="k=v" if i % 2 else "",
            name=f"span {i}" if i else "",
            kind=kind,  # type: ignore[arg-type]
            flags=2**31 + i,
            start_time_unix_nano=i,
            end_time_unix_nano=2**63 - 1,
            dropped_attributes_count=i,
            dropped_events_count=2**32 - 1,
            dropped_links_count=i,
        )
        span.attributes.add(key="nested", value=nested)
        span.attributes.add(key="i", value=AnyValue(int_value=i))
        span.status.code = i % 4  # type: ignore[assignment]
        span.status.message = "failed" if i % 2 else ""
        for k in range(i % 3):
            event = span.events.add(time_unix_nano=k, name=f"e{k}" if k else "", dropped_attributes_count=k)
            event.attributes.add(key="k", value=AnyValue(bytes_value=b"\x00\x01"))
            link = span.links.add(trace_id=bytes(16), span_id=bytes(8) if k else b"", flags=k, trace_state="")
            link.attributes.add(key="k", value=AnyValue(bool_value=True))
    scope_spans.spans.add(trace_id=b"\x01" * 15)  # rejected: a short trace_id
    return request.SerializeToString()


def _rich_metrics() -> bytes:
    """Every metric type, with exemplars, quantiles, buckets both ways, optional fields set and not."""
    request = ExportMetricsServiceRequest()
    scope_metrics = request.resource_metrics.add().scope_metrics.add()
    exemplar = metrics_pb2.Exemplar(time_unix_nano=5, as_int=-3, span_id=bytes(8), trace_id=bytes(16))
    exemplar.filtered_attributes.add(key="k", value=AnyValue(string_value="v"))
    gauge = scope_metrics.metrics.add(name="g", unit="1", description="a gauge")
    gauge.gauge.data_points.add(as_double=math.nan, exemplars=[exemplar, metrics_pb2.Exemplar(as_double=2.5)])
    gauge.gauge.data_points.add(as_int=2**63 - 1, flags=1)
    gauge.gauge.data_points.add()
    gauge.metadata.add(key="m", value=AnyValue(int_value=1))
    total = scope_metrics.metrics.add(name="s")
    total.sum.aggregation_temporality = 1  # type: ignore[assignment]
    total.sum.is_monotonic = True
    total.sum.data_points.add(as_int=7, start_time_unix_nano=1, time_unix_nano=2)
    histogram = scope_metrics.metrics.add(name="h")
    histogram.histogram.aggregation_temporality = 7  # type: ignore[assignment]
    histogram.histogram.data_points.add(count=3, sum=1.5, bucket_counts=[1, 2], explicit_bounds=[0.5], min=0.0)
    histogram.histogram.data_points.add(count=0, exemplars=[exemplar])
    exponential = scope_metrics.metrics.add(name="e")
    point = exponential.exponential_histogram.data_points.add(scale=-3, zero_count=1, zero_threshold=1e-9, max=9.0)
    point.positive.offset = -5
    point.positive.bucket_counts.extend([0, 2**63 - 1])
    exponential.exponential_histogram.data_points.add(sum=-0.0)
    summary = scope_metrics.metrics.add(name="q")
    summary.summary.data_points.add(count=4, sum=8.0, quantile_values=[{"quantile": 0.5, "value": 2.0}])
    summary.summary.data_points.add(count=2**63)  # rejected: count above 2^63-1
    scope_metrics.metrics.add(name="no data")
    return request.SerializeToString()


SYNTHETIC: dict[Signal, list[bytes]] = {"traces": [_rich_spans()], "metrics": [_rich_metrics()]}


@pytest.mark.parametrize("signal", ["traces", "metrics"])
def test_spans_and_points_of_every_shape_decode_the_same(signal: Signal) -> None:
    for body in SYNTHETIC[signal]:
        assert assert_same(signal, body)


# --------------------------------------------------------------------------- malformed bodies


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def _logs_body(record: bytes, resource: bytes = b"", scope: bytes = b"") -> bytes:
    scope_logs = (_message(1, scope) if scope else b"") + _message(2, record)
    resource_logs = (_message(1, resource) if resource else b"") + _message(2, scope_logs)
    return _message(1, resource_logs)


def _deep_arrays(levels: int) -> bytes:
    value = _message(1, b"x")
    for _ in range(levels):
        value = _message(5, _message(1, value))
    return value


MALFORMED: dict[str, bytes] = {
    "length past the end": _message(1, b"")[:-1] + b"\x7f",
    "huge length": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
    "varint of 11 bytes": _logs_body(b"\x10" + b"\xff" * 10 + b"\x01"),
    "field number 0": b"\x02\x00",
    "start group": _logs_body(b"\x0b\x0c"),
    "end group": b"\x0c",
    "wire type 6": b"\x0e",
    "wire type 7": b"\x0f",
    "string as varint": _logs_body(_field(3, 0, b"\x01")),
    "time as varint": _logs_body(_field(1, 0, b"\x05")),
    "time as fixed32": _logs_body(_field(1, 5, b"\x01\x00\x00\x00")),
    "flags as varint": _logs_body(_field(8, 0, b"\x01")),
    "message as fixed64": _logs_body(_field(5, 1, b"\x00" * 8)),
    "invalid UTF-8 in a key": _logs_body(_message(6, _message(1, b"\xff"))),
    "invalid UTF-8 in a value": _logs_body(_message(6, _message(1, b"k") + _message(2, _message(1, b"\xc0\x80")))),
    "surrogate in UTF-8": _logs_body(_message(3, b"\xed\xa0\x80")),
    "invalid UTF-8 in scope name": _logs_body(b"", scope=_message(1, b"\xe2\x82")),
    "invalid bytes in an id (allowed)": _logs_body(_message(9, b"\xff" * 16)),
    "body twice (merged)": _logs_body(_message(5, _message(1, b"a")) + _message(5, _field(2, 0, b"\x01"))),
    "array twice in an AnyValue": _logs_body(_message(5, _message(5, b"") + _message(5, _message(1, b"")))),
    "oneof switched": _logs_body(_message(5, _message(1, b"a") + _field(3, 0, b"\x07") + _message(1, b"b"))),
    "resource twice": _logs_body(b"", resource=b"") + _message(1, _message(1, b"") + _message(1, b"")),
    "severity above int32": _logs_body(_field(2, 0, _varint(2**32 + 5))),
    "severity negative": _logs_body(_field(2, 0, _varint(2**64 - 7))),
    "dropped count above uint32": _logs_body(_field(7, 0, _varint(2**33))),
    "unknown fields of every wire type": _logs_body(
        _field(99, 0, b"\x01") + _field(98, 1, b"\x00" * 8) + _field(97, 2, b"\x01z") + _field(96, 5, b"\x00" * 4)
    ),
    "entity refs": _message(1, _message(1, _message(3, b""))),
    "string index value": _logs_body(_message(5, _field(8, 0, b"\x03"))),
    "string index key": _logs_body(_message(6, _field(3, 0, b"\x03"))),
    "nesting 90 levels": _logs_body(_message(5, _deep_arrays(43))),
    "nesting 200 levels": _logs_body(_message(5, _deep_arrays(100))),
    "scope after records": _message(
        1, _message(2, _message(2, _field(1, 1, b"\x01" + b"\x00" * 7)) + _message(1, _message(1, b"late")))
    ),
    "schema url repeated": _message(1, _message(3, b"a") + _message(2, _message(2, b"")) + _message(3, b"b")),
}


# ResourceSpans/ScopeSpans and ResourceMetrics/ScopeMetrics number their fields as the logs ones do.
_spans_body = _metric_body = _logs_body
_GENERIC = ("length past the end", "huge length", "field number 0", "end group", "wire type 6", "wire type 7")
_SPAN_KV = _message(9, _message(1, b"k") + _message(2, _message(1, b"v")))


def _points(field: int, *points: bytes, extra: bytes = b"") -> bytes:
    """A metric named m of the data field ``field`` (5 gauge ... 11 summary) holding ``points``."""
    return _metric_body(_message(1, b"m") + _message(field, b"".join(_message(1, p) for p in points) + extra))


def _fixed64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


def _double(value: float) -> bytes:
    return struct.pack("<d", value)


_ABOVE = 2**63 + 5
MALFORMED_TRACES: dict[str, bytes] = {
    **{name: MALFORMED[name] for name in _GENERIC},
    "truncated span": _spans_body(_message(5, b"name") + _SPAN_KV)[:-3],
    "oversized length in an event": _spans_body(_message(11, b"\x12\xff\xff\xff\xff\x0f")),
    "start time as varint": _spans_body(_field(7, 0, b"\x05")),
    "flags as varint": _spans_body(_field(16, 0, b"\x01")),
    "event as varint": _spans_body(_field(11, 0, b"\x01")),
    "event time as fixed32": _spans_body(_message(11, _field(1, 5, b"\x00" * 4))),
    "status code as fixed64": _spans_body(_message(15, _field(3, 1, b"\x00" * 8))),
    "kind above int32": _spans_body(_field(6, 0, _varint(2**32 + 1))),
    "kind negative (kept)": _spans_body(_field(6, 0, _varint(2**64 - 3))),
    "status twice (merged)": _spans_body(_message(15, _message(2, b"a")) + _message(15, _field(3, 0, b"\x02"))),
    "status reserved field (skipped)": _spans_body(_message(15, _field(1, 0, b"\x02") + _field(3, 0, b"\x01"))),
    "invalid UTF-8 in a link's trace_state": _spans_body(_message(13, _message(3, b"\xff"))),
    "link id of 3 bytes (rejected)": _spans_body(_message(13, _message(1, b"abc"))),
    "event time above 2^63-1 (rejected)": _spans_body(_message(11, _field(1, 1, _fixed64(_ABOVE)))),
    "scalars repeated (the last wins)": _spans_body(
        _message(5, b"a") + _field(7, 1, _fixed64(1)) + _message(5, b"b") + _field(7, 1, _fixed64(2))
    ),
    "unknown fields of every wire type": _spans_body(
        _field(99, 0, b"\x01") + _field(98, 1, b"\x00" * 8) + _field(97, 2, b"\x01z") + _field(96, 5, b"\x00" * 4)
    ),
    "nesting 90 levels": _spans_body(_message(9, _message(1, b"k") + _message(2, _deep_arrays(41)))),
    "nesting 200 levels": _spans_body(_message(11, _message(3, _message(2, _deep_arrays(100))))),
    "attribute 33 levels deep (rejected)": _spans_body(_message(13, _message(4, _message(2, _deep_arrays(33))))),
    "span in the resource's place": _message(1, _message(1, _message(5, b"x"))),
}

_HISTOGRAM_COUNTS = _field(6, 1, _fixed64(3)) + _message(6, _fixed64(4, 5)) + _field(6, 1, _fixed64(6))
MALFORMED_METRICS: dict[str, bytes] = {
    **{name: MALFORMED[name] for name in _GENERIC},
    "truncated point": _points(5, _field(3, 1, _fixed64(7)) + _SPAN_KV)[:-4],
    "oversized length in a point": _points(9, b"\x4a\xff\xff\xff\xff\x0f"),
    "time as varint": _points(5, _field(3, 0, b"\x07")),
    "as_int as varint": _points(5, _field(6, 0, b"\x01")),
    "data points as fixed32": _metric_body(_message(5, _field(1, 5, b"\x00" * 4))),
    "gauge twice (merged)": _metric_body(_message(5, _message(1, b"")) + _message(5, _message(1, b""))),
    "gauge, sum, gauge (merged)": _metric_body(_message(5, b"") + _message(7, b"") + _message(5, _message(1, b""))),
    "gauge then sum (the last wins)": _metric_body(_message(5, _message(1, b"")) + _message(7, _message(1, b""))),
    "as_double then as_int (the last wins)": _points(5, _field(4, 1, _double(1.5)) + _field(6, 1, _fixed64(2**64 - 7))),
    "bucket counts packed and not (kept in order)": _points(9, _HISTOGRAM_COUNTS),
    "explicit bounds not packed": _points(9, _field(7, 1, _double(0.5)) + _message(7, _double(1.0) + _double(-2.0))),
    "packed bucket counts of 7 bytes": _points(9, _message(6, b"\x00" * 7)),
    "bucket count above 2^63-1 unpacked (rejected)": _points(9, _field(6, 1, _fixed64(_ABOVE))),
    "histogram sum present as 0": _points(9, _field(5, 1, _double(0.0)) + _field(12, 1, _double(-0.0))),
    "exponential buckets packed and not": _points(
        10, _message(8, _field(2, 0, b"\x05") + _message(2, b"\x01\x02") + _field(1, 0, b"\x03"))
    ),
    "exponential bucket above 2^63-1 (rejected)": _points(10, _message(9, _message(2, _varint(_ABOVE)))),
    "packed varints cut short": _points(10, _message(8, _message(2, b"\x80"))),
    "scale of 33 bits": _points(10, _field(6, 0, _varint(2**33))),
    "scale at the int32 edges": _points(10, _field(6, 0, _varint(2**32 - 1)), _field(6, 0, _varint(2**32 - 2))),
    "positive buckets twice (merged)": _points(10, _message(8, b"") + _message(8, b"")),
    "temporality above int32": _metric_body(_message(7, _message(1, b"") + _field(2, 0, _varint(2**40)))),
    "temporality negative, is_monotonic 2": _metric_body(
        _message(7, _message(1, b"") + _field(2, 0, _varint(2**64 - 1)) + _field(3, 0, b"\x02"))
    ),
    "metric without data": _metric_body(_message(1, b"m") + _message(12, _message(1, b"k"))),
    "metadata 33 levels deep (every point rejected)": _metric_body(
        _message(12, _message(1, b"k") + _message(2, _deep_arrays(33))) + _message(5, _message(1, b"") * 2)
    ),
    "quantiles as varint": _points(11, _field(6, 0, b"\x01")),
    "quantiles of every kind": _points(11, _message(6, _field(1, 1, _double(0.5)) + _field(2, 1, _double(-1e300)))),
    "exemplar span_id of 3 bytes (rejected)": _points(7, _message(5, _message(4, b"abc"))),
    "exemplar as_int": _points(5, _message(5, _field(6, 1, _fixed64(2**63)) + _field(2, 1, _fixed64(9)))),
    "nesting 90 levels": _points(5, _message(7, _message(1, b"k") + _message(2, _deep_arrays(40)))),
    "nesting 200 levels": _points(5, _message(5, _message(7, _message(2, _deep_arrays(100))))),
}
MALFORMED_BY_SIGNAL: dict[Signal, dict[str, bytes]] = {
    "logs": MALFORMED,
    "traces": MALFORMED_TRACES,
    "metrics": MALFORMED_METRICS,
}
# Valid bodies among them that the native decoder must decide itself (not leave to Python).
DECIDED = {
    "kind negative (kept)",
    "status reserved field (skipped)",
    "link id of 3 bytes (rejected)",
    "event time above 2^63-1 (rejected)",
    "scalars repeated (the last wins)",
    "attribute 33 levels deep (rejected)",
    "gauge then sum (the last wins)",
    "as_double then as_int (the last wins)",
    "bucket counts packed and not (kept in order)",
    "explicit bounds not packed",
    "bucket count above 2^63-1 unpacked (rejected)",
    "histogram sum present as 0",
    "exponential buckets packed and not",
    "exponential bucket above 2^63-1 (rejected)",
    "scale at the int32 edges",
    "temporality negative, is_monotonic 2",
    "metric without data",
    "metadata 33 levels deep (every point rejected)",
    "quantiles of every kind",
    "exemplar span_id of 3 bytes (rejected)",
    "exemplar as_int",
}
_CASES = [(signal, name, body) for signal, cases in MALFORMED_BY_SIGNAL.items() for name, body in cases.items()]


@pytest.mark.parametrize(("signal", "name", "body"), _CASES, ids=[f"{s}: {n}" for s, n, _ in _CASES])
def test_malformed_bodies_are_answered_the_same(signal: Signal, name: str, body: bytes) -> None:
    decided = assert_same(signal, body)
    if name in DECIDED and signal != "logs":
        assert decided, "the native decoder declined a valid body"


@pytest.mark.parametrize("signal", native.SIGNALS)
def test_every_truncation_of_a_capture_is_answered_the_same(signal: Signal) -> None:
    body = min((b for _, s, b, encoding in BODIES if s == signal and encoding == "protobuf"), key=len)
    for end in range(len(body)):
        assert_same(signal, body[:end])


def _mutations(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        position = rng.randrange(len(data) + 1) if data else 0
        if choice == 0 and data:  # flip a bit
            data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:  # set a byte
            if data:
                data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice == 2:  # insert random bytes
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3 and data:  # repeat a slice (repeated fields, merged messages)
            start = rng.randrange(len(data))
            data[position:position] = data[start : start + rng.randint(1, 64)]
        elif choice == 4:  # cut
            del data[position : position + rng.randint(1, 16)]
        else:  # a large length or varint
            data[position:position] = struct.pack("<Q", rng.getrandbits(64))[: rng.randint(1, 8)]
    return bytes(data)


# Mutated bodies per run and signal (DECODER_MUTATIONS scales them all: 100000 for a long run).
MUTATION_COUNTS: dict[Signal, int] = {"logs": 3000, "traces": 2000, "metrics": 2000}


def mutation_seeds(signal: Signal) -> list[bytes]:
    """The captured requests of ``signal`` in protobuf, and a synthetic one with what they lack."""
    seeds = [body for _, s, body, encoding in BODIES if s == signal and encoding == "protobuf"]
    return [*seeds, *SYNTHETIC.get(signal, [])]


@pytest.mark.parametrize("signal", native.SIGNALS)
def test_mutated_captures_are_answered_the_same(signal: Signal) -> None:
    """Mutations like tests/test_fuzz.py's, in process: thousands of bodies per run."""
    rng = random.Random(13)
    scale = int(os.environ.get("DECODER_MUTATIONS", "3000")) / 3000
    count = int(MUTATION_COUNTS[signal] * scale)
    seeds = mutation_seeds(signal)
    decided = 0
    for i in range(count):
        decided += assert_same(signal, _mutations(seeds[i % len(seeds)], rng))
    assert decided > count // 20, f"the native decoder decided only {decided} of {count} mutated bodies"


# --------------------------------------------------------------------------- shapes and plumbing


def test_the_native_message_shapes_know_every_field_protobuf_knows() -> None:
    """A field added to the OTLP protos (a new opentelemetry-proto) must be added to _native.c,
    or protobuf and the native decoder would read bodies that use it differently."""
    known = native.known_fields()
    messages: list[type[Message]] = [
        common_pb2.AnyValue,
        common_pb2.ArrayValue,
        common_pb2.KeyValueList,
        common_pb2.KeyValue,
        resource_pb2.Resource,
        common_pb2.InstrumentationScope,
        logs_pb2.LogRecord,
        logs_pb2.ScopeLogs,
        logs_pb2.ResourceLogs,
        ExportLogsServiceRequest,
        trace_pb2.Span.Event,
        trace_pb2.Span.Link,
        trace_pb2.Status,
        trace_pb2.Span,
        trace_pb2.ScopeSpans,
        trace_pb2.ResourceSpans,
        ExportTraceServiceRequest,
        metrics_pb2.Exemplar,
        metrics_pb2.NumberDataPoint,
        metrics_pb2.HistogramDataPoint,
        metrics_pb2.ExponentialHistogramDataPoint.Buckets,
        metrics_pb2.ExponentialHistogramDataPoint,
        metrics_pb2.SummaryDataPoint.ValueAtQuantile,
        metrics_pb2.SummaryDataPoint,
        metrics_pb2.Gauge,
        metrics_pb2.Sum,
        metrics_pb2.Histogram,
        metrics_pb2.ExponentialHistogram,
        metrics_pb2.Summary,
        metrics_pb2.Metric,
        metrics_pb2.ScopeMetrics,
        metrics_pb2.ResourceMetrics,
        ExportMetricsServiceRequest,
    ]
    for message in messages:
        numbers = {field.number for field in message.DESCRIPTOR.fields}
        assert numbers <= set(known[message.DESCRIPTOR.name]), message.DESCRIPTOR.name


def _fifty_rows_under_a_big_resource(signal: Signal) -> bytes:
    big = KeyValue(key="big", value=AnyValue(string_value="x" * 100_000))
    if signal == "logs":
        logs = ExportLogsServiceRequest()
        resource_logs = logs.resource_logs.add()
        resource_logs.resource.attributes.append(big)
        resource_logs.scope_logs.add().log_records.extend(logs_pb2.LogRecord() for _ in range(50))
        return logs.SerializeToString()
    if signal == "traces":
        traces = ExportTraceServiceRequest()
        resource_spans = traces.resource_spans.add()
        resource_spans.resource.attributes.append(big)
        resource_spans.scope_spans.add().spans.extend(trace_pb2.Span() for _ in range(50))
        return traces.SerializeToString()
    metrics = ExportMetricsServiceRequest()
    resource_metrics = metrics.resource_metrics.add()
    resource_metrics.resource.attributes.append(big)
    metric = resource_metrics.scope_metrics.add().metrics.add(name="m")
    metric.gauge.data_points.extend(metrics_pb2.NumberDataPoint() for _ in range(50))
    return metrics.SerializeToString()


@pytest.mark.parametrize("signal", native.SIGNALS)
def test_output_past_the_limit_goes_to_the_python_path(signal: Signal) -> None:
    body = _fifty_rows_under_a_big_resource(signal)
    assert native.decode(signal, body, 1 << 20) is None  # 50 copies of 100 kB
    decoded = native.decode(signal, body, 10 << 20)
    assert decoded is not None and decoded.rows == 50
    assert decoded.repeated_bytes >= 50 * 100_000


def test_batches_of_both_decoders_commit_together() -> None:
    """The writer concatenates native batches and Python columns in one commit."""
    from otel_ingest.flatten.common import Columns

    body = next(b for _, signal, b, encoding in BODIES if signal == "logs" and encoding == "protobuf")
    python = FLATTENERS["logs"](wire.decode_request("logs", body, "protobuf")[0])
    compiled = native.decode("logs", body, LIMIT)
    assert compiled is not None
    merged = Columns.finish_all([python.columns, compiled.columns, python.columns, python.columns, compiled.columns])
    expected = pa.Table.from_batches([python.batch] * 5).combine_chunks().to_batches()[0]
    assert merged.equals(expected)


def test_gzip_is_undone_before_decoding() -> None:
    body = next(b for _, signal, b, encoding in BODIES if signal == "logs" and encoding == "protobuf")
    assert assert_same("logs", wire.decompress(gzip.compress(body), "gzip", LIMIT))


# --------------------------------------------------------------------------- the GIL


def _large_logs_json(size: int) -> bytes:
    """The cc_json logs capture's resource repeated to about ``size`` bytes of OTLP/JSON."""
    (capture,) = [c for c in load_captures("cc_json") if c.signal == "logs"]
    document = json.loads(capture.body)
    copies = max(1, size // len(capture.body))
    document["resourceLogs"] = document["resourceLogs"] * copies
    return json.dumps(document).encode()


def _runs_beside(call: Callable[[], Any]) -> tuple[int, Any]:
    """How often this thread ran Python while ``call`` was under way in another thread, and
    what ``call`` returned.

    No timing threshold: with a switch interval of 1,000 s the interpreter never makes a thread
    give the GIL up, so this thread can see ``inside`` true only if ``call`` releases the GIL
    itself (each ``wait`` here lets it go, and the other thread sets and clears ``inside``
    around ``call`` without ever letting it go otherwise)."""
    state: dict[str, Any] = {"inside": False, "result": None}
    done = threading.Event()

    def work() -> None:
        state["inside"] = True
        state["result"] = call()
        state["inside"] = False
        done.set()

    seen = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000)
    try:
        thread = threading.Thread(target=work)
        thread.start()
        while not done.wait(0.0005):
            seen += bool(state["inside"])
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    return seen, state["result"]


@pytest.mark.skipif(not native.available() or not jsonpb.available(), reason="the native decoder was not built")
@pytest.mark.parametrize("step", ["json transcode", "protobuf decode"])
def test_the_compiled_decoders_release_the_gil(step: str) -> None:
    """Two requests decode on two cores at once, in OTLP/JSON too: another thread runs Python
    while the JSON transcoder or the native decoder works on a ~8 MB body (bench/decode.py
    measures the two-thread speed-up). A few attempts: on a loaded machine this thread may not
    be scheduled before a call ends."""
    body = _large_logs_json(8 << 20)
    proto = jsonpb.transcode("logs", body)
    assert proto is not None
    for _ in range(5):
        if step == "json transcode":
            seen, result = _runs_beside(lambda: jsonpb.transcode("logs", body))
            assert result == proto
        else:  # the compiled call alone (pyarrow's import of its batch is not under test)
            seen, result = _runs_beside(lambda: native._native.decode_logs(proto, -1))
            assert result is not None
            batch = pa.RecordBatch._import_from_c(result[3], signal_schema("logs"))  # frees it
            assert batch.num_rows == result[0] > 0
        if seen:
            break
    assert seen, f"no other thread ran while the {step} was under way: it holds the GIL"
