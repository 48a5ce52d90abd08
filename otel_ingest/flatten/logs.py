"""ExportLogsServiceRequest → rows of the ``*_otel_logs`` table: one per LogRecord."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from otel_ingest.flatten.common import (
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    Columns,
    Flattened,
    Rejections,
    any_value_text,
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

_SEVERITIES = enum_names(SeverityNumber.DESCRIPTOR)
_ROW = (
    "event_name",
    "trace_id",
    "span_id",
    "time_unix_nano",
    "observed_time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "attributes",
    "dropped_attributes_count",
    "flags",
)


def flatten_logs(request: ExportLogsServiceRequest) -> Flattened:
    """One row per log record, in request order."""
    columns = Columns(signal_schema("logs"), scope_url_column="log_schema_url")
    records = scoped(columns, request.resource_logs, "scope_logs", "log_records")
    return flatten_records(columns, Rejections("log record"), records, _ROW, _log_row)


def _log_row(record: LogRecord) -> tuple[Any, ...]:
    return (
        text(record.event_name),
        hex_id(record.trace_id, TRACE_ID_BYTES, "trace_id"),
        hex_id(record.span_id, SPAN_ID_BYTES, "span_id"),
        long(record.time_unix_nano, "time_unix_nano"),
        long(record.observed_time_unix_nano, "observed_time_unix_nano"),
        enum_name(_SEVERITIES, record.severity_number),
        text(record.severity_text),
        any_value_text(record.body),
        attributes(record.attributes),
        int32_bits(record.dropped_attributes_count),
        int32_bits(record.flags),
    )
