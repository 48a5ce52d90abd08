"""The flatteners' output, exactly, in process (issue 10: mutation testing of flatten/).

tests/test_properties.py and tests/test_schema.py check the flatteners against the
schema and with generated input, but take minutes; the tests here build small OTLP
requests by hand that touch every rule of SPEC §3 once — each AnyValue kind, ids of the
wrong length, integers at 2^63−1 and 2^63, uint32 values above 2^31−1, enum numbers
without a name, a resource or scope nested too deeply (every record under it rejected),
records rejected alone, several resources and scopes — and compare the Arrow rows with
values written out here. They run in about a second, so each mutant of
otel_ingest/flatten/ is run against them (tools/mutate.py, docs/testing.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_ingest.errors import RecordRejected
from otel_ingest.flatten import flatten_logs, flatten_metrics, flatten_traces
from otel_ingest.flatten.common import BatchColumns, Columns, any_value_text, arrow_bytes

TRACE = bytes(range(16))
SPAN = bytes(range(8))
TOP = (1 << 63) - 1


def value(item: Any) -> AnyValue:
    """A Python value as an AnyValue: None is an empty one, a dict a kvlist, bytes bytes."""
    result = AnyValue()
    if item is None:
        pass
    elif isinstance(item, bool):
        result.bool_value = item
    elif isinstance(item, int):
        result.int_value = item
    elif isinstance(item, float):
        result.double_value = item
    elif isinstance(item, str):
        result.string_value = item
    elif isinstance(item, bytes):
        result.bytes_value = item
    elif isinstance(item, list):
        result.array_value.SetInParent()
        result.array_value.values.extend(value(i) for i in item)
    else:
        result.kvlist_value.SetInParent()
        result.kvlist_value.values.extend(KeyValue(key=k, value=value(v)) for k, v in item.items())
    return result


def pairs(*items: tuple[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=value(item)) for key, item in items]


def nested(levels: int) -> Any:
    """``levels`` arrays around a string."""
    item: Any = "leaf"
    for _ in range(levels):
        item = [item]
    return item


def rows(batch: pa.RecordBatch, *columns: str) -> list[dict[str, Any]]:
    return [{c: row[c] for c in columns} for row in batch.to_pylist(maps_as_pydicts="strict")]


# --- AnyValue, the integers and the helpers -------------------------------------------


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ("plain", "plain"),
        ("", ""),
        (None, None),
        (True, "true"),
        (False, "false"),
        (-3, "-3"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (1e300, "1e+300"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (b"\x00\xff", "AP8="),
        ([], "[]"),
        (
            [1, "é", True, 1.5, math.nan, math.inf, -math.inf, b"\x00\xff", None, {"a": 2, "b": []}],
            '[1,"é",true,1.5,"NaN","Infinity","-Infinity","AP8=",null,{"a":2,"b":[]}]',
        ),
        ({"k": {"l": [False]}}, '{"k":{"l":[false]}}'),
        (nested(31), json.dumps(nested(31), separators=(",", ":"))),
        ({"k": nested(30)}, json.dumps({"k": nested(30)}, separators=(",", ":"))),
    ],
)
def test_any_values_are_written_as_spec_section_3_says(item: Any, text: str | None) -> None:
    assert any_value_text(value(item)) == text


@pytest.mark.parametrize("item", [nested(32), {"k": nested(31)}, [{"a": nested(30)}]])
def test_any_values_nested_deeper_than_32_levels_are_rejected(item: Any) -> None:
    with pytest.raises(RecordRejected, match="nests deeper than 32 levels"):
        any_value_text(value(item))


def test_arrow_bytes_counts_strings_plus_a_slot_each() -> None:
    assert arrow_bytes(None) == 1
    assert arrow_bytes("abc") == 7
    assert arrow_bytes(5) == 8
    assert arrow_bytes(1.5) == 8
    assert arrow_bytes({"k": "v", "kk": None}) == (1 + 4 + 5) + (2 + 4 + 1)
    assert arrow_bytes(["a", None]) == 4 + 5 + 1
    assert arrow_bytes(("ab", {"k": 1})) == 4 + 6 + (1 + 4 + 8)
    assert arrow_bytes([]) == 4


# --- Logs: resources, scopes, records kept and rejected -------------------------------


def logs_request() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    first = request.resource_logs.add(schema_url="https://r1")
    first.resource.attributes.extend(pairs(("service.name", "svc"), ("n", 7), ("dup", "a"), ("dup", "b")))
    first.resource.dropped_attributes_count = 0xFFFFFFFF
    scope = first.scope_logs.add(schema_url="https://s1")
    scope.scope.name, scope.scope.dropped_attributes_count = "lib", 2
    scope.scope.attributes.extend(pairs(("k", True)))
    record = scope.log_records.add(
        trace_id=TRACE,
        span_id=SPAN,
        time_unix_nano=TOP,
        observed_time_unix_nano=5,
        severity_number=9,
        flags=0x80000000,
        dropped_attributes_count=0x7FFFFFFF,
    )
    record.body.string_value = "hello"
    record.attributes.extend(pairs(("a", "1"), ("b", 2.5), ("c", None)))
    scope.log_records.add(trace_id=b"abc")  # 2: rejected
    scope.log_records.add(time_unix_nano=TOP + 1)  # 3: rejected
    scope.log_records.add(severity_number=99, event_name="e", span_id=b"", observed_time_unix_nano=TOP)  # 4
    scope.log_records.add(span_id=SPAN + b"x")  # 5: rejected
    second = first.scope_logs.add()
    second.log_records.add(severity_text="WARN").body.bool_value = False  # 6
    deep = request.resource_logs.add(schema_url="https://r2")
    deep.resource.attributes.extend(pairs(("deep", nested(32))))
    deep.scope_logs.add().log_records.add(event_name="under a deep resource")  # 7: rejected
    last = request.resource_logs.add()
    last.scope_logs.add(schema_url="https://s4").scope.attributes.extend(pairs(("deep", nested(40))))
    last.scope_logs[0].log_records.add(event_name="under a deep scope")  # 8: rejected
    fine = last.scope_logs.add()
    fine.scope.name, fine.scope.version = "s5", "1.0"
    fine.log_records.add(severity_number=1).body.int_value = -3  # 9
    return request


def test_log_records_become_exactly_these_rows() -> None:
    flattened = flatten_logs(logs_request())
    assert flattened.rejected == 5
    assert flattened.first_error == "5 log records rejected; first: log record 2: trace_id must be 16 bytes, got 3"
    batch = flattened.batch
    assert flattened.rows == batch.num_rows == 4
    assert rows(batch, *batch.schema.names[:11]) == [
        {
            "event_name": None,
            "trace_id": TRACE.hex(),
            "span_id": SPAN.hex(),
            "time_unix_nano": TOP,
            "observed_time_unix_nano": 5,
            "severity_number": "SEVERITY_NUMBER_INFO",
            "severity_text": None,
            "body": "hello",
            "attributes": {"a": "1", "b": "2.5", "c": None},
            "dropped_attributes_count": 0x7FFFFFFF,
            "flags": -(1 << 31),
        },
        {
            "event_name": "e",
            "trace_id": None,
            "span_id": None,
            "time_unix_nano": 0,
            "observed_time_unix_nano": TOP,
            "severity_number": "99",
            "severity_text": None,
            "body": None,
            "attributes": {},
            "dropped_attributes_count": 0,
            "flags": 0,
        },
        {
            "event_name": None,
            "trace_id": None,
            "span_id": None,
            "time_unix_nano": 0,
            "observed_time_unix_nano": 0,
            "severity_number": "SEVERITY_NUMBER_UNSPECIFIED",
            "severity_text": "WARN",
            "body": "false",
            "attributes": {},
            "dropped_attributes_count": 0,
            "flags": 0,
        },
        {
            "event_name": None,
            "trace_id": None,
            "span_id": None,
            "time_unix_nano": 0,
            "observed_time_unix_nano": 0,
            "severity_number": "SEVERITY_NUMBER_TRACE",
            "severity_text": None,
            "body": "-3",
            "attributes": {},
            "dropped_attributes_count": 0,
            "flags": 0,
        },
    ]


def test_spans_become_exactly_these_rows() -> None:
    """Every field of a span, its event and its link holds a value no neighbour holds,
    so two values swapped (trace and span ids, start and end...) change the row."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add(schema_url="https://s")
    span = scope.spans.add(
        trace_id=TRACE,
        span_id=SPAN,
        trace_state="ts=1",
        parent_span_id=bytes(range(8, 16)),
        flags=0x80000001,
        name="op",
        kind=3,
        start_time_unix_nano=10,
        end_time_unix_nano=TOP,
        dropped_attributes_count=4,
        dropped_events_count=6,
        dropped_links_count=10,
    )
    span.attributes.extend(pairs(("x", 1)))
    event = span.events.add(time_unix_nano=7, name="ev", dropped_attributes_count=5)
    event.attributes.extend(pairs(("e", "v")))
    link = span.links.add(
        trace_id=bytes(range(16, 32)),
        span_id=bytes(range(16, 24)),
        trace_state="lt",
        dropped_attributes_count=8,
        flags=9,
    )
    link.attributes.extend(pairs(("l", True)))
    span.status.message, span.status.code = "bad", 2
    scope.spans.add(span_id=b"short")  # rejected
    flattened = flatten_traces(request)
    assert (flattened.rows, flattened.rejected) == (1, 1)
    assert flattened.first_error == "1 span rejected; first: span 2: span_id must be 8 bytes, got 5"
    batch = flattened.batch
    assert rows(batch, *batch.schema.names[:16]) == [
        {
            "trace_id": TRACE.hex(),
            "span_id": SPAN.hex(),
            "trace_state": "ts=1",
            "parent_span_id": bytes(range(8, 16)).hex(),
            "flags": 1 - (1 << 31),
            "name": "op",
            "kind": "SPAN_KIND_CLIENT",
            "start_time_unix_nano": 10,
            "end_time_unix_nano": TOP,
            "attributes": {"x": "1"},
            "dropped_attributes_count": 4,
            "events": [{"time_unix_nano": 7, "name": "ev", "attributes": {"e": "v"}, "dropped_attributes_count": 5}],
            "dropped_events_count": 6,
            "links": [
                {
                    "trace_id": bytes(range(16, 32)).hex(),
                    "span_id": bytes(range(16, 24)).hex(),
                    "trace_state": "lt",
                    "attributes": {"l": "true"},
                    "dropped_attributes_count": 8,
                    "flags": 9,
                }
            ],
            "dropped_links_count": 10,
            "status": {"message": "bad", "code": "STATUS_CODE_ERROR"},
        }
    ]


def test_log_rows_carry_their_own_resource_and_scope() -> None:
    batch = flatten_logs(logs_request()).batch
    r1 = {"attributes": {"service.name": "svc", "n": "7", "dup": "b"}, "dropped_attributes_count": -1}
    s1 = {"name": "lib", "version": None, "attributes": {"k": "true"}, "dropped_attributes_count": 2}
    empty_scope = {"name": None, "version": None, "attributes": {}, "dropped_attributes_count": 0}
    assert rows(batch, "resource", "resource_schema_url", "instrumentation_scope", "log_schema_url") == [
        {
            "resource": r1,
            "resource_schema_url": "https://r1",
            "instrumentation_scope": s1,
            "log_schema_url": "https://s1",
        },
        {
            "resource": r1,
            "resource_schema_url": "https://r1",
            "instrumentation_scope": s1,
            "log_schema_url": "https://s1",
        },
        {
            "resource": r1,
            "resource_schema_url": "https://r1",
            "instrumentation_scope": empty_scope,
            "log_schema_url": None,
        },
        {
            "resource": {"attributes": {}, "dropped_attributes_count": 0},
            "resource_schema_url": None,
            "instrumentation_scope": {"name": "s5", "version": "1.0", "attributes": {}, "dropped_attributes_count": 0},
            "log_schema_url": None,
        },
    ]


def test_rejected_records_are_counted_in_singular_and_plural() -> None:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(trace_id=b"x")
    flattened = flatten_logs(request)
    assert (flattened.rows, flattened.rejected) == (0, 1)
    assert flattened.first_error == "1 log record rejected; first: log record 1: trace_id must be 16 bytes, got 1"
    assert flatten_logs(ExportLogsServiceRequest()).first_error is None
    request.resource_logs[0].scope_logs[0].log_records.add(span_id=b"y")
    two = flatten_logs(request)
    assert two.first_error == "2 log records rejected; first: log record 1: trace_id must be 16 bytes, got 1"


def test_repeated_bytes_count_each_rows_resource_and_scope() -> None:
    """What the copies of shared values will take in the batch (charged to the budget)."""
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add(schema_url="abc")
    resource.resource.attributes.extend(pairs(("k", "vv")))
    scope = resource.scope_logs.add(schema_url="de")
    scope.scope.name = "n"
    scope.log_records.add()
    scope.log_records.add()
    flattened = flatten_logs(request)
    resource_bytes = arrow_bytes({"attributes": {"k": "vv"}, "dropped_attributes_count": 0}) + 3
    scope_bytes = arrow_bytes({"name": "n", "version": None, "attributes": {}, "dropped_attributes_count": 0}) + 2
    assert resource_bytes == (10 + 4 + (1 + 4 + 6)) + (24 + 4 + 8) + 3
    assert flattened.repeated_bytes == 2 * (resource_bytes + scope_bytes)


# --- Merging the columns of several requests into one commit --------------------------


def one_log(service: str, *events: str) -> Columns:
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add(schema_url=f"https://{service}")
    resource.resource.attributes.extend(pairs(("service.name", service)))
    scope = resource.scope_logs.add(schema_url=f"https://{service}/scope")
    scope.scope.name = service
    for event in events:
        scope.log_records.add(event_name=event)
    return flatten_logs(request).columns


def as_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    return batch.to_pylist(maps_as_pydicts="strict")  # type: ignore[no-any-return]


def test_columns_of_several_requests_merge_in_order() -> None:
    parts = [one_log("a", "1", "2"), one_log("b", "3"), one_log("c", "4", "5")]
    expected = [row for part in parts for row in as_rows(part.finish())]
    assert [row["resource"]["attributes"]["service.name"] for row in expected] == ["a", "a", "b", "c", "c"]
    assert as_rows(Columns.finish_all(parts)) == expected
    assert as_rows(Columns.finish_all(parts[:1])) == expected[:2]
    sizes = [part.repeated_bytes for part in parts]
    merged = parts[0]
    merged.extend(parts[1])
    merged.extend(parts[2])
    assert merged.num_rows == 5
    assert merged.repeated_bytes == sum(sizes)
    assert as_rows(merged.finish()) == expected


def test_rows_already_in_arrow_are_kept_in_their_place() -> None:
    """The native decoder's rows (BatchColumns) between Python-built ones."""
    a, b, c, d = one_log("a", "1"), one_log("b", "2", "3"), one_log("c", "4"), one_log("d", "5")
    expected = [row for part in (a, b, c, d) for row in as_rows(part.finish())]
    mixed = [BatchColumns(a.finish(), 100), b, c, BatchColumns(d.finish(), 100)]
    assert as_rows(Columns.finish_all(mixed)) == expected
    assert as_rows(Columns.finish_all([b, BatchColumns(d.finish(), 100)])) == expected[1:3] + expected[4:]
    assert as_rows(Columns.finish_all([BatchColumns(a.finish(), 100)])) == expected[:1]
    assert as_rows(Columns.finish_all([BatchColumns(a.finish(), 1), BatchColumns(d.finish(), 1)])) == [
        expected[0],
        expected[4],
    ]
    with pytest.raises(TypeError, match="concatenated by finish_all"):
        mixed[0].extend(b)


# --- Metrics: one row per data point --------------------------------------------------


def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.extend(pairs(("host", "h")))
    scope = resource.scope_metrics.add()
    scope.scope.name = "m"
    gauge = scope.metrics.add(name="g", description="d", unit="1")
    gauge.metadata.extend(pairs(("m", "v")))
    point = gauge.gauge.data_points.add(as_int=5, start_time_unix_nano=1, time_unix_nano=2, flags=1)  # 1
    point.attributes.extend(pairs(("a", "1")))
    exemplar = point.exemplars.add(time_unix_nano=3, as_double=0.5, span_id=SPAN, trace_id=TRACE)
    exemplar.filtered_attributes.extend(pairs(("x", "y")))
    gauge.gauge.data_points.add(as_double=1.5).exemplars.add(as_int=4)  # 2
    gauge.gauge.data_points.add()  # 3: no value
    total = scope.metrics.add(name="s")
    total.sum.aggregation_temporality, total.sum.is_monotonic = 2, True
    # Every field of the points below holds a value its neighbours do not (start and end
    # times, flags, attributes), so two values swapped in a struct change the row.
    total.sum.data_points.add(as_double=2.0, start_time_unix_nano=11, time_unix_nano=12, flags=2).attributes.extend(
        pairs(("s", "1"))
    )  # 4
    total.sum.data_points.add(as_int=1).exemplars.add(trace_id=b"12345")  # 5: rejected
    scope.metrics.add(name="no data")
    histogram = scope.metrics.add(name="h").histogram
    histogram.aggregation_temporality = 7
    histogram.data_points.add(
        count=3,
        sum=6.0,
        bucket_counts=[1, 2],
        explicit_bounds=[1.0],
        min=0.5,
        start_time_unix_nano=21,
        time_unix_nano=22,
    ).attributes.extend(pairs(("h", "1")))  # 6
    histogram.data_points.add(bucket_counts=[1, TOP + 1])  # 7: rejected
    histogram.data_points.add(count=TOP, bucket_counts=[TOP])  # 8
    exponential = scope.metrics.add(name="e").exponential_histogram
    exponential.aggregation_temporality = 1
    point9 = exponential.data_points.add(
        scale=2, zero_count=1, zero_threshold=0.5, count=4, max=9.0, start_time_unix_nano=31, time_unix_nano=32, flags=4
    )  # 9
    point9.attributes.extend(pairs(("e", "1")))
    point9.positive.offset, point9.negative.offset = -1, 3
    point9.positive.bucket_counts.extend([1, 2])
    summary = scope.metrics.add(name="q").summary
    point10 = summary.data_points.add(count=2, sum=3.0, flags=0xFFFFFFFF, start_time_unix_nano=41, time_unix_nano=42)
    point10.attributes.extend(pairs(("q", "1")))
    quantiles = point10.quantile_values  # 10
    quantiles.add(quantile=0.5, value=1.0)
    quantiles.add(quantile=1.0, value=2.0)
    deep = request.resource_metrics.add()
    deep.resource.attributes.extend(pairs(("deep", nested(33))))
    deep.scope_metrics.add().metrics.add(name="lost").gauge.data_points.add()  # 11: rejected
    deep.scope_metrics[0].metrics[0].gauge.data_points.add()  # 12: rejected
    return request


def test_data_points_become_exactly_these_rows() -> None:
    flattened = flatten_metrics(metrics_request())
    assert flattened.rejected == 4
    assert flattened.first_error == (
        "4 data points rejected; first: data point 5: exemplar trace_id must be 16 bytes, got 5"
    )
    got = rows(flattened.batch, "name", "description", "unit", "metric_type", "metadata")
    assert got == [
        {"name": "g", "description": "d", "unit": "1", "metric_type": "gauge", "metadata": {"m": "v"}},
        {"name": "g", "description": "d", "unit": "1", "metric_type": "gauge", "metadata": {"m": "v"}},
        {"name": "g", "description": "d", "unit": "1", "metric_type": "gauge", "metadata": {"m": "v"}},
        {"name": "s", "description": None, "unit": None, "metric_type": "sum", "metadata": {}},
        {"name": "h", "description": None, "unit": None, "metric_type": "histogram", "metadata": {}},
        {"name": "h", "description": None, "unit": None, "metric_type": "histogram", "metadata": {}},
        {"name": "e", "description": None, "unit": None, "metric_type": "exponential_histogram", "metadata": {}},
        {"name": "q", "description": None, "unit": None, "metric_type": "summary", "metadata": {}},
    ]
    structs = [
        {kind: row[kind] for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary") if row[kind]}
        for row in flattened.batch.to_pylist(maps_as_pydicts="strict")
    ]
    assert [list(s) for s in structs] == [["gauge"]] * 3 + [["sum"], ["histogram"], ["histogram"]] + [
        ["exponential_histogram"],
        ["summary"],
    ]
    gauges = [s["gauge"] for s in structs[:3]]
    assert gauges[0] == {
        "start_time_unix_nano": 1,
        "time_unix_nano": 2,
        "value": 5.0,
        "exemplars": [
            {
                "time_unix_nano": 3,
                "value": 0.5,
                "span_id": SPAN.hex(),
                "trace_id": TRACE.hex(),
                "filtered_attributes": {"x": "y"},
            }
        ],
        "attributes": {"a": "1"},
        "flags": 1,
    }
    assert gauges[1]["value"] == 1.5
    assert gauges[1]["exemplars"] == [
        {"time_unix_nano": 0, "value": 4.0, "span_id": None, "trace_id": None, "filtered_attributes": {}}
    ]
    assert (gauges[2]["value"], gauges[2]["exemplars"]) == (None, [])
    assert structs[3]["sum"] == {
        "start_time_unix_nano": 11,
        "time_unix_nano": 12,
        "value": 2.0,
        "exemplars": [],
        "attributes": {"s": "1"},
        "flags": 2,
        "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
        "is_monotonic": True,
    }
    first, last = structs[4]["histogram"], structs[5]["histogram"]
    assert first == {
        "start_time_unix_nano": 21,
        "time_unix_nano": 22,
        "count": 3,
        "sum": 6.0,
        "bucket_counts": [1, 2],
        "explicit_bounds": [1.0],
        "exemplars": [],
        "attributes": {"h": "1"},
        "flags": 0,
        "min": 0.5,
        "max": None,
        "aggregation_temporality": "7",
    }
    assert (last["count"], last["sum"], last["bucket_counts"]) == (TOP, None, [TOP])
    assert structs[6]["exponential_histogram"] == {
        "attributes": {"e": "1"},
        "start_time_unix_nano": 31,
        "time_unix_nano": 32,
        "count": 4,
        "sum": None,
        "scale": 2,
        "zero_count": 1,
        "positive_bucket": {"offset": -1, "bucket_counts": [1, 2]},
        "negative_bucket": {"offset": 3, "bucket_counts": []},
        "flags": 4,
        "exemplars": [],
        "min": None,
        "max": 9.0,
        "zero_threshold": 0.5,
        "aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA",
    }
    assert structs[7]["summary"] == {
        "start_time_unix_nano": 41,
        "time_unix_nano": 42,
        "count": 2,
        "sum": 3.0,
        "quantile_values": [{"quantile": 0.5, "value": 1.0}, {"quantile": 1.0, "value": 2.0}],
        "attributes": {"q": "1"},
        "flags": -1,
    }


def test_metric_rows_count_their_shared_values_once_per_row() -> None:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    metric = scope.metrics.add(name="abc", unit="s")
    metric.metadata.extend(pairs(("k", "v")))
    metric.gauge.data_points.add(as_int=1)
    metric.gauge.data_points.add(as_int=2)
    context = arrow_bytes({"attributes": {}, "dropped_attributes_count": 0}) + arrow_bytes(
        {"name": None, "version": None, "attributes": {}, "dropped_attributes_count": 0}
    )
    shared = arrow_bytes(("abc", None, "s", {"k": "v"}))
    assert shared == 4 + 7 + 1 + 5 + (1 + 4 + 5)
    assert flatten_metrics(request).repeated_bytes == 2 * (context + shared)
