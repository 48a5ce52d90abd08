"""Property tests of decoding and flattening (SPEC §3, §4).

Random *valid* OTLP export requests of all three signals are encoded as protobuf and
as OTLP/JSON (several dialects), decoded by ``wire.decode_request`` and flattened:
every path must give the same rows, in the DDL-derived schema, one row per record in
request order. A request with one invalid record must lose exactly that record.
The AnyValue → STRING rules are checked against an oracle written from the SPEC table.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otel_ingest import otlp_json, wire
from otel_ingest.decode import jsonpb
from otel_ingest.flatten import FLATTENERS
from otel_ingest.flatten.common import MAX_ANY_VALUE_DEPTH, Flattened, any_value_text, attributes
from otel_ingest.schema import SIGNALS, Signal, signal_schema

MAX_LONG = 2**63 - 1
MAX_U64 = 2**64 - 1
MAX_U32 = 2**32 - 1
METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- strategies

U64 = st.one_of(st.integers(0, MAX_LONG), st.sampled_from([0, 1, MAX_LONG]))
U32 = st.one_of(st.integers(0, MAX_U32), st.sampled_from([0, 2**31 - 1, 2**31, MAX_U32]))
INT64 = st.one_of(st.integers(-(2**63), MAX_LONG), st.sampled_from([-(2**63), -1, 0, MAX_LONG]))
SINT32 = st.integers(-(2**31), 2**31 - 1)
DOUBLES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1e-07, 3.0, math.nan, math.inf, -math.inf]),
)
TEXT = st.text(max_size=6)
# Short names from a small alphabet, so that empty strings and repeats are common.
NAMES = st.one_of(st.just(""), st.text(alphabet="abc._", min_size=1, max_size=4), TEXT)
KEYS = st.one_of(st.sampled_from(["a", "b", "session.id", ""]), st.text(max_size=4))
TRACE_IDS = st.one_of(st.just(b""), st.binary(min_size=16, max_size=16))
SPAN_IDS = st.one_of(st.just(b""), st.binary(min_size=8, max_size=8))
# Proto3 enums are open: numbers outside the enum are valid and must survive.
OUT_OF_ENUM = st.integers(-5, 1000)
SEVERITIES = st.one_of(st.sampled_from(list(SeverityNumber.values())), OUT_OF_ENUM)
TEMPORALITIES = st.one_of(st.sampled_from(list(AggregationTemporality.values())), OUT_OF_ENUM)
SPAN_KINDS = st.one_of(st.sampled_from(list(Span.SpanKind.values())), OUT_OF_ENUM)
STATUS_CODES = st.one_of(st.sampled_from(list(Status.StatusCode.values())), OUT_OF_ENUM)


def _small_lists(elements: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[list[Any]]:
    return st.lists(elements, max_size=max_size)


def _key_values(values: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[KeyValue]:
    with_value = st.builds(lambda key, value: KeyValue(key=key, value=value), KEYS, values)
    return st.one_of(with_value, KEYS.map(lambda key: KeyValue(key=key)))


def _any_values(depth: int) -> st.SearchStrategy[AnyValue]:
    """AnyValues nesting at most ``depth`` arrays/kvlists deep."""
    leaves = st.one_of(
        st.just(AnyValue()),
        TEXT.map(lambda v: AnyValue(string_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        INT64.map(lambda v: AnyValue(int_value=v)),
        DOUBLES.map(lambda v: AnyValue(double_value=v)),
        st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
    )
    if depth == 0:
        return leaves
    inner = _any_values(depth - 1)
    return st.one_of(
        leaves,
        _small_lists(inner).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        _small_lists(_key_values(inner)).map(lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs))),
    )


ANY_VALUES = _any_values(3)  # an AnyValue holding up to 3 levels of arrays/kvlists: 4 levels in all
ATTRIBUTES = _small_lists(_key_values(_any_values(2)))

RESOURCES = st.builds(
    lambda attrs, dropped: Resource(attributes=attrs, dropped_attributes_count=dropped), ATTRIBUTES, U32
)
SCOPES = st.builds(
    lambda name, version, attrs, dropped: InstrumentationScope(
        name=name, version=version, attributes=attrs, dropped_attributes_count=dropped
    ),
    NAMES,
    NAMES,
    ATTRIBUTES,
    U32,
)
SCHEMA_URLS = st.one_of(st.just(""), st.sampled_from(["https://opentelemetry.io/schemas/1.26.0"]), TEXT)
NUMBERS = st.one_of(st.none(), DOUBLES, INT64)  # a NumberDataPoint/Exemplar value: absent, as_double, as_int
OPTIONAL_DOUBLES = st.one_of(st.none(), DOUBLES)


def _set_number(message: NumberDataPoint | Exemplar, value: float | int | None) -> None:
    if isinstance(value, float):
        message.as_double = value
    elif isinstance(value, int):
        message.as_int = value


@st.composite
def exemplars(draw: st.DrawFn) -> Exemplar:
    exemplar = Exemplar(
        filtered_attributes=draw(ATTRIBUTES),
        time_unix_nano=draw(U64),
        span_id=draw(SPAN_IDS),
        trace_id=draw(TRACE_IDS),
    )
    _set_number(exemplar, draw(NUMBERS))
    return exemplar


EXEMPLARS = _small_lists(exemplars(), max_size=2)


def _point_common(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "attributes": draw(ATTRIBUTES),
        "start_time_unix_nano": draw(U64),
        "time_unix_nano": draw(U64),
        "flags": draw(U32),
    }


@st.composite
def number_points(draw: st.DrawFn) -> NumberDataPoint:
    point = NumberDataPoint(**_point_common(draw), exemplars=draw(EXEMPLARS))
    _set_number(point, draw(NUMBERS))
    return point


def _set_optional(point: Message, draw: st.DrawFn, *names: str) -> None:
    for name in names:
        value = draw(OPTIONAL_DOUBLES)
        if value is not None:
            setattr(point, name, value)


@st.composite
def histogram_points(draw: st.DrawFn) -> HistogramDataPoint:
    point = HistogramDataPoint(
        **_point_common(draw),
        count=draw(U64),
        bucket_counts=draw(_small_lists(U64, 4)),
        explicit_bounds=draw(_small_lists(DOUBLES, 3)),
        exemplars=draw(EXEMPLARS),
    )
    _set_optional(point, draw, "sum", "min", "max")
    return point


@st.composite
def exponential_points(draw: st.DrawFn) -> ExponentialHistogramDataPoint:
    buckets = st.builds(
        lambda offset, counts: ExponentialHistogramDataPoint.Buckets(offset=offset, bucket_counts=counts),
        SINT32,
        _small_lists(U64, 4),
    )
    point = ExponentialHistogramDataPoint(
        **_point_common(draw),
        count=draw(U64),
        scale=draw(SINT32),
        zero_count=draw(U64),
        zero_threshold=draw(DOUBLES),
        exemplars=draw(EXEMPLARS),
    )
    if draw(st.booleans()):
        point.positive.CopyFrom(draw(buckets))
    if draw(st.booleans()):
        point.negative.CopyFrom(draw(buckets))
    _set_optional(point, draw, "sum", "min", "max")
    return point


@st.composite
def summary_points(draw: st.DrawFn) -> SummaryDataPoint:
    quantiles = st.builds(lambda q, v: SummaryDataPoint.ValueAtQuantile(quantile=q, value=v), DOUBLES, DOUBLES)
    return SummaryDataPoint(
        **_point_common(draw),
        count=draw(U64),
        sum=draw(DOUBLES),
        quantile_values=draw(_small_lists(quantiles)),
    )


@st.composite
def metrics(draw: st.DrawFn) -> Metric:
    metric = Metric(name=draw(NAMES), description=draw(NAMES), unit=draw(NAMES), metadata=draw(ATTRIBUTES))
    kind = draw(st.sampled_from([*METRIC_KINDS, None]))  # None: a metric without data (no rows)
    if kind == "gauge":
        metric.gauge.CopyFrom(Gauge(data_points=draw(_small_lists(number_points()))))
    elif kind == "sum":
        metric.sum.CopyFrom(
            Sum(
                data_points=draw(_small_lists(number_points())),
                aggregation_temporality=draw(TEMPORALITIES),
                is_monotonic=draw(st.booleans()),
            )
        )
    elif kind == "histogram":
        metric.histogram.CopyFrom(
            Histogram(data_points=draw(_small_lists(histogram_points())), aggregation_temporality=draw(TEMPORALITIES))
        )
    elif kind == "exponential_histogram":
        metric.exponential_histogram.CopyFrom(
            ExponentialHistogram(
                data_points=draw(_small_lists(exponential_points())), aggregation_temporality=draw(TEMPORALITIES)
            )
        )
    elif kind == "summary":
        metric.summary.CopyFrom(Summary(data_points=draw(_small_lists(summary_points()))))
    return metric


@st.composite
def log_records(draw: st.DrawFn) -> LogRecord:
    record = LogRecord(
        time_unix_nano=draw(U64),
        observed_time_unix_nano=draw(U64),
        severity_number=draw(SEVERITIES),
        severity_text=draw(NAMES),
        attributes=draw(ATTRIBUTES),
        dropped_attributes_count=draw(U32),
        flags=draw(U32),
        trace_id=draw(TRACE_IDS),
        span_id=draw(SPAN_IDS),
        event_name=draw(NAMES),
    )
    if draw(st.booleans()):  # otherwise no body at all
        record.body.CopyFrom(draw(ANY_VALUES))
    return record


@st.composite
def spans(draw: st.DrawFn) -> Span:
    events = st.builds(
        lambda t, name, attrs, dropped: Span.Event(
            time_unix_nano=t, name=name, attributes=attrs, dropped_attributes_count=dropped
        ),
        U64,
        NAMES,
        ATTRIBUTES,
        U32,
    )
    links = st.builds(
        lambda trace_id, span_id, state, attrs, dropped, flags: Span.Link(
            trace_id=trace_id,
            span_id=span_id,
            trace_state=state,
            attributes=attrs,
            dropped_attributes_count=dropped,
            flags=flags,
        ),
        TRACE_IDS,
        SPAN_IDS,
        NAMES,
        ATTRIBUTES,
        U32,
        U32,
    )
    return Span(
        trace_id=draw(TRACE_IDS),
        span_id=draw(SPAN_IDS),
        trace_state=draw(NAMES),
        parent_span_id=draw(SPAN_IDS),
        flags=draw(U32),
        name=draw(NAMES),
        kind=draw(SPAN_KINDS),
        start_time_unix_nano=draw(U64),
        end_time_unix_nano=draw(U64),
        attributes=draw(ATTRIBUTES),
        dropped_attributes_count=draw(U32),
        events=draw(_small_lists(events, 2)),
        dropped_events_count=draw(U32),
        links=draw(_small_lists(links, 2)),
        dropped_links_count=draw(U32),
        status=Status(message=draw(NAMES), code=draw(STATUS_CODES)),
    )


def _requests(
    request: type[Message],
    resource_type: type[Message],
    scope_type: type[Message],
    names: tuple[str, str, str],
    records: st.SearchStrategy[Message],
) -> st.SearchStrategy[Message]:
    """request(resource_x=[ResourceX(resource, schema_url, scope_x=[ScopeX(scope, schema_url, records=[...])])]).

    ``names`` are the repeated fields at each level, e.g. resource_logs, scope_logs, log_records.
    A missing resource or scope (None) is left unset.
    """
    resources_field, scopes_field, records_field = names
    scopes = st.builds(
        lambda scope, url, items: scope_type(scope=scope, schema_url=url, **{records_field: items}),
        st.one_of(st.none(), SCOPES),
        SCHEMA_URLS,
        _small_lists(records),
    )
    resources = st.builds(
        lambda resource, url, items: resource_type(resource=resource, schema_url=url, **{scopes_field: items}),
        st.one_of(st.none(), RESOURCES),
        SCHEMA_URLS,
        _small_lists(scopes, 2),
    )
    return st.lists(resources, min_size=1, max_size=2).map(lambda items: request(**{resources_field: items}))


REQUESTS: dict[Signal, st.SearchStrategy[Message]] = {
    "metrics": _requests(
        ExportMetricsServiceRequest,
        ResourceMetrics,
        ScopeMetrics,
        ("resource_metrics", "scope_metrics", "metrics"),
        metrics(),
    ),
    "logs": _requests(
        ExportLogsServiceRequest, ResourceLogs, ScopeLogs, ("resource_logs", "scope_logs", "log_records"), log_records()
    ),
    "traces": _requests(
        ExportTraceServiceRequest, ResourceSpans, ScopeSpans, ("resource_spans", "scope_spans", "spans"), spans()
    ),
}

# --------------------------------------------------------------------------- helpers


@dataclass
class Record:
    """One row-producing record of a request, with what surrounds it."""

    container: Any  # the repeated field holding it
    index: int
    message: Any
    resource: Any  # ResourceX
    scope: Any  # ScopeX
    metric: Metric | None = None

    @property
    def kind(self) -> str | None:
        return self.metric.WhichOneof("data") if self.metric is not None else None


def records_of(signal: Signal, request: Any) -> list[Record]:
    """Data points / log records / spans in request order, found without the code under test."""
    found: list[Record] = []
    if signal == "metrics":
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    points = getattr(metric, kind).data_points
                    found += [Record(points, i, p, rm, sm, metric) for i, p in enumerate(points)]
    elif signal == "logs":
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                found += [Record(sl.log_records, i, r, rl, sl) for i, r in enumerate(sl.log_records)]
    else:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                found += [Record(ss.spans, i, s, rs, ss) for i, s in enumerate(ss.spans)]
    return found


def copy_of(message: Message) -> Any:
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


def normalised(value: Any) -> Any:
    """Rows with floats made comparable: NaN equals NaN, and 0.0 differs from -0.0."""
    if isinstance(value, float):
        return "float:NaN" if math.isnan(value) else f"float:{value!r}"
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalised(v) for v in value]
    return value


def rows(result: Flattened) -> list[Any]:
    return normalised(result.batch.to_pylist())


def _int64_as_numbers(node: Any) -> Any:
    """OTLP/JSON int64/uint64 fields given as JSON numbers instead of strings."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _INT64_KEYS and isinstance(value, str):
                out[key] = int(value)
            elif key in _INT64_KEYS and isinstance(value, list):
                out[key] = [int(v) for v in value]
            else:
                out[key] = _int64_as_numbers(value)
        return out
    if isinstance(node, list):
        return [_int64_as_numbers(item) for item in node]
    return node


_INT64_FIELDS = (
    "time_unix_nano",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "observed_time_unix_nano",
    "count",
    "zero_count",
    "bucket_counts",
    "int_value",
    "as_int",
)
_INT64_KEYS = frozenset(
    {*_INT64_FIELDS, *(name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:]) for name in _INT64_FIELDS)}
)
_SNAKE_ID_KEYS = frozenset({"trace_id", "span_id", "parent_span_id"})


def _base64_ids_to_upper_hex(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: base64.b64decode(value).hex().upper() if key in _SNAKE_ID_KEYS else _base64_ids_to_upper_hex(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_base64_ids_to_upper_hex(item) for item in node]
    return node


def json_bodies(request: Message) -> Iterator[tuple[str, bytes]]:
    """The request in the OTLP/JSON dialects clients send (SPEC §4)."""
    yield "camelCase, int64 strings, enum names", otlp_json.dumps(request)
    as_numbers = _int64_as_numbers(otlp_json.to_dict(request))
    yield "camelCase, int64 numbers", json.dumps(as_numbers).encode()
    snake = json_format.MessageToDict(request, preserving_proto_field_name=True, use_integers_for_enums=True)
    snake = _int64_as_numbers(_base64_ids_to_upper_hex(snake))
    yield "snake_case, int64 numbers, enum numbers, upper-case hex, pretty", json.dumps(snake, indent=2).encode()


def assert_transcoded(signal: Signal, body: bytes, decoded: Message) -> None:
    """The C OTLP/JSON transcoder (decode/jsonpb.py) decides the body and gives json_format's message."""
    if not jsonpb.available():
        return
    proto = jsonpb.transcode(signal, body)
    assert proto is not None, "the JSON transcoder declined a valid request"
    transcoded = wire.REQUESTS[signal].FromString(proto)
    assert transcoded.SerializeToString(deterministic=True) == decoded.SerializeToString(deterministic=True)


def hex_or_none(value: bytes) -> str | None:
    return value.hex() if value else None


def text_or_none(value: str) -> str | None:
    return value or None


def int32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


# --------------------------------------------------------------------------- oracle of SPEC §3


def _json_form(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else spec_text(value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [_json_form(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        obj: dict[str, Any] = {}
        for kv in value.kvlist_value.values:
            obj[kv.key] = _json_form(kv.value)
        return obj
    return getattr(value, kind)


def spec_text(value: AnyValue) -> str | None:
    """SPEC §3 'AnyValue → STRING', written from the table."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return f"{value.int_value:d}"
    if kind == "double_value":
        number = value.double_value
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return repr(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return json.dumps(_json_form(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def spec_attributes(pairs: Any) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for kv in pairs:
        result[kv.key] = spec_text(kv.value)
    return result


def as_dict(map_value: list[tuple[str, str | None]]) -> dict[str, str | None]:
    """A MAP column value; its keys must be unique (Spark rejects duplicate map keys)."""
    keys = [k for k, _ in map_value]
    assert len(keys) == len(set(keys)), f"duplicate map keys {keys}"
    return dict(map_value)


_MAP_FIELDS = frozenset({"attributes", "filtered_attributes", "metadata"})


def maps_as_dicts(value: Any) -> Any:
    """A flattened row with every MAP value (a list of pairs in ``to_pylist``) as a dict."""
    if isinstance(value, dict):
        return {
            k: as_dict(v) if k in _MAP_FIELDS and isinstance(v, list) else maps_as_dicts(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [maps_as_dicts(v) for v in value]
    return value


def enum_text(enum: Any, number: int) -> str:
    return enum.Name(number) if number in enum.values() else str(number)


def _number(message: Any) -> float | None:
    kind = message.WhichOneof("value")
    return None if kind is None else float(getattr(message, kind))


def _optional(point: Any, name: str) -> float | None:
    return getattr(point, name) if point.HasField(name) else None


def _exemplar_rows(exemplars: Any) -> list[dict[str, Any]]:
    return [
        {
            "time_unix_nano": e.time_unix_nano,
            "value": _number(e),
            "span_id": hex_or_none(e.span_id),
            "trace_id": hex_or_none(e.trace_id),
            "filtered_attributes": spec_attributes(e.filtered_attributes),
        }
        for e in exemplars
    ]


def _point_struct(kind: str, data: Any, p: Any) -> dict[str, Any]:
    common = {
        "start_time_unix_nano": p.start_time_unix_nano,
        "time_unix_nano": p.time_unix_nano,
        "attributes": spec_attributes(p.attributes),
        "flags": int32(p.flags),
    }
    if kind == "gauge":
        return {**common, "value": _number(p), "exemplars": _exemplar_rows(p.exemplars)}
    if kind == "summary":  # Summary has no aggregation_temporality
        return {
            **common,
            "count": p.count,
            "sum": p.sum,
            "quantile_values": [{"quantile": q.quantile, "value": q.value} for q in p.quantile_values],
        }
    temporality = {"aggregation_temporality": enum_text(AggregationTemporality, data.aggregation_temporality)}
    if kind == "sum":
        struct = {**common, "value": _number(p), "exemplars": _exemplar_rows(p.exemplars)}
        return {**struct, **temporality, "is_monotonic": data.is_monotonic}
    if kind == "histogram":
        return {
            **common,
            "count": p.count,
            "sum": _optional(p, "sum"),
            "bucket_counts": list(p.bucket_counts),
            "explicit_bounds": list(p.explicit_bounds),
            "exemplars": _exemplar_rows(p.exemplars),
            "min": _optional(p, "min"),
            "max": _optional(p, "max"),
            **temporality,
        }
    if kind == "exponential_histogram":
        return {
            **common,
            "count": p.count,
            "sum": _optional(p, "sum"),
            "scale": p.scale,
            "zero_count": p.zero_count,
            "positive_bucket": {"offset": p.positive.offset, "bucket_counts": list(p.positive.bucket_counts)},
            "negative_bucket": {"offset": p.negative.offset, "bucket_counts": list(p.negative.bucket_counts)},
            "exemplars": _exemplar_rows(p.exemplars),
            "min": _optional(p, "min"),
            "max": _optional(p, "max"),
            "zero_threshold": p.zero_threshold,
            **temporality,
        }
    raise AssertionError(kind)


def _context(record: Record, scope_url_column: str) -> dict[str, Any]:
    resource, scope = record.resource.resource, record.scope.scope
    return {
        "resource": {
            "attributes": spec_attributes(resource.attributes),
            "dropped_attributes_count": int32(resource.dropped_attributes_count),
        },
        "resource_schema_url": text_or_none(record.resource.schema_url),
        "instrumentation_scope": {
            "name": text_or_none(scope.name),
            "version": text_or_none(scope.version),
            "attributes": spec_attributes(scope.attributes),
            "dropped_attributes_count": int32(scope.dropped_attributes_count),
        },
        scope_url_column: text_or_none(record.scope.schema_url),
    }


def expected_row(signal: Signal, record: Record) -> dict[str, Any]:
    """The whole row of a record, computed from the proto by the SPEC §3 rules."""
    m = record.message
    if signal == "logs":
        return {
            "event_name": text_or_none(m.event_name),
            "trace_id": hex_or_none(m.trace_id),
            "span_id": hex_or_none(m.span_id),
            "time_unix_nano": m.time_unix_nano,
            "observed_time_unix_nano": m.observed_time_unix_nano,
            "severity_number": enum_text(SeverityNumber, m.severity_number),
            "severity_text": text_or_none(m.severity_text),
            "body": spec_text(m.body),
            "attributes": spec_attributes(m.attributes),
            "dropped_attributes_count": int32(m.dropped_attributes_count),
            "flags": int32(m.flags),
            **_context(record, "log_schema_url"),
        }
    if signal == "traces":
        return {
            "trace_id": hex_or_none(m.trace_id),
            "span_id": hex_or_none(m.span_id),
            "trace_state": text_or_none(m.trace_state),
            "parent_span_id": hex_or_none(m.parent_span_id),
            "flags": int32(m.flags),
            "name": text_or_none(m.name),
            "kind": enum_text(Span.SpanKind, m.kind),
            "start_time_unix_nano": m.start_time_unix_nano,
            "end_time_unix_nano": m.end_time_unix_nano,
            "attributes": spec_attributes(m.attributes),
            "dropped_attributes_count": int32(m.dropped_attributes_count),
            "events": [
                {
                    "time_unix_nano": e.time_unix_nano,
                    "name": text_or_none(e.name),
                    "attributes": spec_attributes(e.attributes),
                    "dropped_attributes_count": int32(e.dropped_attributes_count),
                }
                for e in m.events
            ],
            "dropped_events_count": int32(m.dropped_events_count),
            "links": [
                {
                    "trace_id": hex_or_none(link.trace_id),
                    "span_id": hex_or_none(link.span_id),
                    "trace_state": text_or_none(link.trace_state),
                    "attributes": spec_attributes(link.attributes),
                    "dropped_attributes_count": int32(link.dropped_attributes_count),
                    "flags": int32(link.flags),
                }
                for link in m.links
            ],
            "dropped_links_count": int32(m.dropped_links_count),
            "status": {"message": text_or_none(m.status.message), "code": enum_text(Status.StatusCode, m.status.code)},
            **_context(record, "span_schema_url"),
        }
    metric, kind = record.metric, record.kind
    assert metric is not None and kind is not None
    return {
        "name": text_or_none(metric.name),
        "description": text_or_none(metric.description),
        "unit": text_or_none(metric.unit),
        "metric_type": kind,
        **{k: _point_struct(k, getattr(metric, k), m) if k == kind else None for k in METRIC_KINDS},
        "metadata": spec_attributes(metric.metadata),
        **_context(record, "metric_schema_url"),
    }


# --------------------------------------------------------------------------- properties

signals = pytest.mark.parametrize("signal", SIGNALS)


@signals
@PROPERTY
@given(data=st.data())
def test_protobuf_and_every_json_dialect_give_identical_rows(signal: Signal, data: st.DataObject) -> None:
    request = data.draw(REQUESTS[signal], label="request")
    flatten = FLATTENERS[signal]
    reference = flatten(request)
    assert reference.rejected == 0, reference.first_error
    assert reference.first_error is None
    expected = rows(reference)

    decoded, encoding = wire.decode_request(signal, request.SerializeToString(), "protobuf")
    assert encoding == "protobuf"
    assert decoded == request
    assert rows(flatten(decoded)) == expected

    for dialect, body in json_bodies(request):
        decoded, encoding = wire.decode_request(signal, body, "json")
        assert encoding == "json"
        assert_transcoded(signal, body, decoded)
        result = flatten(decoded)
        assert result.rejected == 0, (dialect, result.first_error)
        assert rows(result) == expected, dialect


@signals
@PROPERTY
@given(data=st.data())
def test_flattened_batch_has_the_ddl_schema(signal: Signal, data: st.DataObject) -> None:
    request = data.draw(REQUESTS[signal], label="request")
    batch = FLATTENERS[signal](request).batch
    assert isinstance(batch, pa.RecordBatch)
    assert batch.schema.equals(signal_schema(signal)), batch.schema
    batch.validate(full=True)


@signals
def test_empty_request_gives_an_empty_batch_in_the_schema(signal: Signal) -> None:
    request = wire.REQUESTS[signal]()
    result = FLATTENERS[signal](request)
    assert (result.rows, result.rejected, result.first_error) == (0, 0, None)
    assert result.batch.schema.equals(signal_schema(signal))


@signals
@PROPERTY
@given(data=st.data())
def test_one_row_per_record_in_request_order_with_the_spec_values(signal: Signal, data: st.DataObject) -> None:
    request = data.draw(REQUESTS[signal], label="request")
    records = records_of(signal, request)
    result = FLATTENERS[signal](request)
    assert result.rows == len(records)
    assert result.rejected == 0
    actual = [normalised(maps_as_dicts(row)) for row in result.batch.to_pylist()]
    expected = [normalised(expected_row(signal, record)) for record in records]
    assert (
        [list(row) for row in actual] == [list(row) for row in expected] == [signal_schema(signal).names] * len(records)
    )
    for position, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == want, f"row {position}"


def _bad_id(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=2 * size + 1).filter(lambda b: len(b) != size)


BAD_TRACE_IDS = _bad_id(16)
BAD_SPAN_IDS = _bad_id(8)
ABOVE_LONG = st.one_of(st.integers(MAX_LONG + 1, MAX_U64), st.sampled_from([MAX_LONG + 1, MAX_U64]))

# A mutation breaks one rule of SPEC §3 in one record; it returns the field the rejection must name.
Mutation = Callable[[Any, st.DataObject], str]


def _setter(field: str, values: st.SearchStrategy[Any], label: str | None = None) -> Mutation:
    def mutate(message: Any, data: st.DataObject) -> str:
        setattr(message, field, data.draw(values, label=field))
        return label or field

    return mutate


def _add(repeated: str, field: str, values: st.SearchStrategy[Any], label: str) -> Mutation:
    def mutate(message: Any, data: st.DataObject) -> str:
        item = getattr(message, repeated).add()
        setattr(item, field, data.draw(values, label=label))
        return label

    return mutate


def _append(path: str, label: str) -> Mutation:
    """Put one value above 2^63-1 at a random place among valid ones in a repeated uint64 field."""

    def mutate(message: Any, data: st.DataObject) -> str:
        target = message
        for part in path.split(".")[:-1]:
            target = getattr(target, part)
        values = getattr(target, path.split(".")[-1])
        values.extend(data.draw(st.lists(U64, min_size=1, max_size=3), label="valid " + label))
        counts = list(values)
        counts.insert(data.draw(st.integers(0, len(counts)), label="at"), data.draw(ABOVE_LONG, label=label))
        del values[:]
        values.extend(counts)
        return label

    return mutate


_TIME_MUTATIONS = [_setter("start_time_unix_nano", ABOVE_LONG), _setter("time_unix_nano", ABOVE_LONG)]
_EXEMPLAR_MUTATIONS = [
    _add("exemplars", "trace_id", BAD_TRACE_IDS, "exemplar trace_id"),
    _add("exemplars", "span_id", BAD_SPAN_IDS, "exemplar span_id"),
    _add("exemplars", "time_unix_nano", ABOVE_LONG, "exemplar time_unix_nano"),
]
MUTATIONS: dict[str, list[Mutation]] = {
    "logs": [
        _setter("trace_id", BAD_TRACE_IDS),
        _setter("span_id", BAD_SPAN_IDS),
        _setter("time_unix_nano", ABOVE_LONG),
        _setter("observed_time_unix_nano", ABOVE_LONG),
    ],
    "traces": [
        _setter("trace_id", BAD_TRACE_IDS),
        _setter("span_id", BAD_SPAN_IDS),
        _setter("parent_span_id", BAD_SPAN_IDS),
        _setter("start_time_unix_nano", ABOVE_LONG),
        _setter("end_time_unix_nano", ABOVE_LONG),
        _add("events", "time_unix_nano", ABOVE_LONG, "event time_unix_nano"),
        _add("links", "trace_id", BAD_TRACE_IDS, "link trace_id"),
        _add("links", "span_id", BAD_SPAN_IDS, "link span_id"),
    ],
    "gauge": [*_TIME_MUTATIONS, *_EXEMPLAR_MUTATIONS],
    "sum": [*_TIME_MUTATIONS, *_EXEMPLAR_MUTATIONS],
    "histogram": [
        *_TIME_MUTATIONS,
        *_EXEMPLAR_MUTATIONS,
        _setter("count", ABOVE_LONG),
        _append("bucket_counts", "bucket_counts"),
    ],
    "exponential_histogram": [
        *_TIME_MUTATIONS,
        *_EXEMPLAR_MUTATIONS,
        _setter("count", ABOVE_LONG),
        _setter("zero_count", ABOVE_LONG),
        _append("positive.bucket_counts", "positive bucket_counts"),
        _append("negative.bucket_counts", "negative bucket_counts"),
    ],
    "summary": [*_TIME_MUTATIONS, _setter("count", ABOVE_LONG)],
}
NOUNS = {"metrics": "data point", "logs": "log record", "traces": "span"}


@signals
@PROPERTY
@given(data=st.data())
def test_one_invalid_record_is_rejected_alone(signal: Signal, data: st.DataObject) -> None:
    request = data.draw(REQUESTS[signal].filter(lambda r: records_of(signal, r)), label="request")
    total = len(records_of(signal, request))
    position = data.draw(st.integers(0, total - 1), label="position")

    invalid = copy_of(request)
    target = records_of(signal, invalid)[position]
    mutation = data.draw(st.sampled_from(MUTATIONS[target.kind or signal]), label="mutation")
    field = mutation(target.message, data)

    without = copy_of(request)
    removed = records_of(signal, without)[position]
    del removed.container[removed.index]
    expected = rows(FLATTENERS[signal](without))
    assert len(expected) == total - 1

    bodies = [("in memory", invalid), ("protobuf", invalid.SerializeToString())]
    bodies += [(dialect, body) for dialect, body in json_bodies(invalid)]
    for how, body in bodies:
        if isinstance(body, bytes):
            raw = body
            body, _ = wire.decode_request(signal, body, "protobuf" if how == "protobuf" else "json")
            if how != "protobuf":
                assert_transcoded(signal, raw, body)
        result = FLATTENERS[signal](body)
        assert result.rejected == 1, how
        assert result.rows == total - 1, how
        assert rows(result) == expected, how
        assert result.first_error is not None
        assert field in result.first_error, (how, result.first_error)
        assert NOUNS[signal] in result.first_error, result.first_error
        assert result.batch.schema.equals(signal_schema(signal))


def _nested(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


@pytest.mark.parametrize("where", ["resource", "scope", "record"])
def test_too_deep_any_value_rejects_only_the_records_it_belongs_to(where: str) -> None:
    """AnyValue nesting is bounded (MAX_ANY_VALUE_DEPTH); an invalid resource or scope rejects
    the records under it, and the records of other resources and scopes are kept."""
    too_deep = KeyValue(key="deep", value=_nested(MAX_ANY_VALUE_DEPTH + 1))
    deep_but_fine = KeyValue(key="ok", value=_nested(MAX_ANY_VALUE_DEPTH - 1))
    request = ExportLogsServiceRequest()
    bad_resource = request.resource_logs.add()
    bad_scope = bad_resource.scope_logs.add()
    bad_scope.log_records.add(time_unix_nano=1, attributes=[deep_but_fine])
    bad_scope.log_records.add(time_unix_nano=2)
    bad_resource.scope_logs.add().log_records.add(time_unix_nano=3)
    request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=4)
    if where == "resource":
        bad_resource.resource.attributes.append(too_deep)
        rejected, kept = 3, [4]
    elif where == "scope":
        bad_scope.scope.attributes.append(too_deep)
        rejected, kept = 2, [3, 4]
    else:
        bad_scope.log_records[1].body.CopyFrom(too_deep.value)
        rejected, kept = 1, [1, 3, 4]
    for decoded in (request, wire.decode_request("logs", request.SerializeToString(), "protobuf")[0]):
        result = FLATTENERS["logs"](decoded)
        assert result.rejected == rejected
        assert result.batch.column("time_unix_nano").to_pylist() == kept
        assert result.first_error is not None
        assert f"{rejected} log record" in result.first_error
        assert result.batch.schema.equals(signal_schema("logs"))


# --------------------------------------------------------------------------- AnyValue → STRING


@PROPERTY
@given(value=ANY_VALUES)
def test_any_value_text_follows_the_spec_table(value: AnyValue) -> None:
    text = any_value_text(value)
    assert text == spec_text(value)
    if value.WhichOneof("value") in ("array_value", "kvlist_value"):
        assert text is not None
        # Compact, strict JSON (no bare NaN/Infinity tokens).
        parsed = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token} in {text}"))
        assert json.dumps(parsed, separators=(",", ":"), ensure_ascii=False) == text


@PROPERTY
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_double_text_is_the_shortest_round_trip(number: float) -> None:
    text = any_value_text(AnyValue(double_value=number))
    assert text is not None
    assert float(text) == number
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, number)
    assert text == repr(number)  # Python's repr is the shortest string that round-trips


def _array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=values))


def _kvlist(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AnyValue(string_value="claude_code.api_request"), "claude_code.api_request"),
        (AnyValue(string_value='say "hi"'), 'say "hi"'),
        (AnyValue(string_value=""), ""),
        (AnyValue(bool_value=True), "true"),
        (AnyValue(bool_value=False), "false"),
        (AnyValue(int_value=42), "42"),
        (AnyValue(int_value=-7), "-7"),
        (AnyValue(int_value=0), "0"),
        (AnyValue(int_value=-(2**63)), "-9223372036854775808"),
        (AnyValue(double_value=0.5), "0.5"),
        (AnyValue(double_value=1e-07), "1e-07"),
        (AnyValue(double_value=3.0), "3.0"),
        (AnyValue(double_value=0.1), "0.1"),
        (AnyValue(double_value=math.nan), "NaN"),
        (AnyValue(double_value=math.inf), "Infinity"),
        (AnyValue(double_value=-math.inf), "-Infinity"),
        (AnyValue(bytes_value=b"\x00\xffhi"), "AP9oaQ=="),
        (AnyValue(bytes_value=b"\xfb\xff"), "+/8="),  # standard alphabet, padded
        (
            _array(
                AnyValue(string_value="a"),
                AnyValue(int_value=1),
                AnyValue(bool_value=True),
                AnyValue(),
            ),
            '["a",1,true,null]',
        ),
        (_kvlist(k=AnyValue(string_value="v"), n=AnyValue(int_value=1)), '{"k":"v","n":1}'),
        (
            _kvlist(
                outer=_kvlist(list=_array(AnyValue(double_value=0.5), AnyValue(bytes_value=b"hi"))),
                empty=_array(),
            ),
            '{"outer":{"list":[0.5,"aGk="]},"empty":[]}',
        ),
        (_array(AnyValue(double_value=math.nan), AnyValue(double_value=-math.inf)), '["NaN","-Infinity"]'),
        (_array(), "[]"),
        (AnyValue(kvlist_value=KeyValueList()), "{}"),
        (AnyValue(), None),
    ],
    ids=lambda v: None if isinstance(v, (AnyValue, type(None))) else repr(v),
)
def test_any_value_text_examples(value: AnyValue, expected: str | None) -> None:
    assert any_value_text(value) == expected


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def test_duplicate_attribute_keys_last_wins() -> None:
    pairs = [_kv("a", "1"), _kv("b", "2"), _kv("a", "3")]
    assert attributes(pairs) == {"a": "3", "b": "2"}

    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend([_kv("service.name", "x"), _kv("service.name", "y")])
    resource_logs.scope_logs.add().log_records.add(attributes=pairs)
    (row,) = FLATTENERS["logs"](request).batch.to_pylist()
    assert as_dict(row["attributes"]) == {"a": "3", "b": "2"}
    assert as_dict(row["resource"]["attributes"]) == {"service.name": "y"}


def test_flags_and_dropped_counts_above_int32_keep_their_bit_pattern() -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            flags=MAX_U32, dropped_attributes_count=2**31, dropped_events_count=2**31 - 1, dropped_links_count=2**31 + 5
        )
    )
    span.links.add(flags=0x80000101)
    (row,) = FLATTENERS["traces"](request).batch.to_pylist()
    assert row["flags"] == -1
    assert row["dropped_attributes_count"] == -(2**31)
    assert row["dropped_events_count"] == 2**31 - 1
    assert row["dropped_links_count"] == -(2**31) + 5
    assert row["links"][0]["flags"] == 0x80000101 - 2**32
    assert pa.array([row["links"][0]["flags"]], pa.int32()).view(pa.uint32()).to_pylist() == [0x80000101]

    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(flags=0xFFFFFF01)
    (log_row,) = FLATTENERS["logs"](logs).batch.to_pylist()
    assert log_row["flags"] == 0xFFFFFF01 - 2**32


def test_enum_numbers_outside_the_enum_are_written_as_decimal_strings() -> None:
    traces = ExportTraceServiceRequest()
    scope_spans = traces.resource_spans.add().scope_spans.add()
    scope_spans.spans.add(kind=Span.SPAN_KIND_SERVER, status=Status(code=Status.STATUS_CODE_ERROR))
    scope_spans.spans.add(kind=42, status=Status(code=9))
    known, unknown = FLATTENERS["traces"](traces).batch.to_pylist()
    assert (known["kind"], known["status"]["code"]) == ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR")
    assert (unknown["kind"], unknown["status"]["code"]) == ("42", "9")

    logs = ExportLogsServiceRequest()
    scope_logs = logs.resource_logs.add().scope_logs.add()
    scope_logs.log_records.add(severity_number=SeverityNumber.SEVERITY_NUMBER_INFO)
    scope_logs.log_records.add(severity_number=99)
    scope_logs.log_records.add()
    assert FLATTENERS["logs"](logs).batch.column("severity_number").to_pylist() == [
        "SEVERITY_NUMBER_INFO",
        "99",
        "SEVERITY_NUMBER_UNSPECIFIED",
    ]

    metrics_request = ExportMetricsServiceRequest()
    scope_metrics = metrics_request.resource_metrics.add().scope_metrics.add()
    delta = scope_metrics.metrics.add(name="delta")
    delta.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    delta.sum.data_points.add(as_int=1)
    odd = scope_metrics.metrics.add(name="odd")
    odd.histogram.aggregation_temporality = 7
    odd.histogram.data_points.add(count=1)
    first, second = FLATTENERS["metrics"](metrics_request).batch.to_pylist()
    assert first["sum"]["aggregation_temporality"] == "AGGREGATION_TEMPORALITY_DELTA"
    assert second["histogram"]["aggregation_temporality"] == "7"
