"""ExportLogsServiceRequest → rows of the ``*_otel_logs`` table: one per LogRecord."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from otel_ingest.errors import RecordRejected
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
    hex_id,
    int32_bits,
    long,
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
    rejections = Rejections("log record")
    index = 0
    for resource_logs in request.resource_logs:
        columns.enter_resource(resource_logs.resource, resource_logs.schema_url)
        for scope_logs in resource_logs.scope_logs:
            columns.enter_scope(scope_logs.scope, scope_logs.schema_url)
            for record in scope_logs.log_records:
                index += 1
                try:
                    if columns.context_error is not None:
                        raise columns.context_error
                    row = (
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
                except RecordRejected as error:
                    rejections.add(index, error)
                    continue
                columns.append_row(_ROW, row)
    return Flattened(columns, rejections.count, rejections.message())
