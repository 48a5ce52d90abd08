"""ExportTraceServiceRequest → rows of the ``*_otel_spans`` table: one per Span."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_ingest.flatten.common import (
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    Columns,
    Flattened,
    Rejections,
    attributes,
    enum_name,
    enum_names,
    flatten_records,
    hex_id,
    int32_bits,
    long,
    scoped,
    text,
)
from otel_ingest.schema import signal_schema

_KINDS = enum_names(Span.SpanKind.DESCRIPTOR)
_STATUS_CODES = enum_names(Status.StatusCode.DESCRIPTOR)
_ROW = (
    "trace_id",
    "span_id",
    "trace_state",
    "parent_span_id",
    "flags",
    "name",
    "kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "attributes",
    "dropped_attributes_count",
    "events",
    "dropped_events_count",
    "links",
    "dropped_links_count",
    "status",
)


def flatten_traces(request: ExportTraceServiceRequest) -> Flattened:
    """One row per span, in request order."""
    columns = Columns(signal_schema("traces"), scope_url_column="span_schema_url")
    spans = scoped(columns, request.resource_spans, "scope_spans", "spans")
    return flatten_records(columns, Rejections("span"), spans, _ROW, _span_row)


def _span_row(span: Span) -> tuple[Any, ...]:
    return (
        hex_id(span.trace_id, TRACE_ID_BYTES, "trace_id"),
        hex_id(span.span_id, SPAN_ID_BYTES, "span_id"),
        text(span.trace_state),
        hex_id(span.parent_span_id, SPAN_ID_BYTES, "parent_span_id"),
        int32_bits(span.flags),
        text(span.name),
        enum_name(_KINDS, span.kind),
        long(span.start_time_unix_nano, "start_time_unix_nano"),
        long(span.end_time_unix_nano, "end_time_unix_nano"),
        attributes(span.attributes),
        int32_bits(span.dropped_attributes_count),
        [
            {
                "time_unix_nano": long(event.time_unix_nano, "event time_unix_nano"),
                "name": text(event.name),
                "attributes": attributes(event.attributes),
                "dropped_attributes_count": int32_bits(event.dropped_attributes_count),
            }
            for event in span.events
        ],
        int32_bits(span.dropped_events_count),
        [
            {
                "trace_id": hex_id(link.trace_id, TRACE_ID_BYTES, "link trace_id"),
                "span_id": hex_id(link.span_id, SPAN_ID_BYTES, "link span_id"),
                "trace_state": text(link.trace_state),
                "attributes": attributes(link.attributes),
                "dropped_attributes_count": int32_bits(link.dropped_attributes_count),
                "flags": int32_bits(link.flags),
            }
            for link in span.links
        ],
        int32_bits(span.dropped_links_count),
        {"message": text(span.status.message), "code": enum_name(_STATUS_CODES, span.status.code)},
    )
