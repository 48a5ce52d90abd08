"""ExportMetricsServiceRequest → rows of the ``*_otel_metrics`` table: one per data point.

``metric_type`` names the Metric's data field and only the struct column of that name
is filled; the other four are NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    NumberDataPoint,
    SummaryDataPoint,
)

from otel_ingest.errors import RecordRejected
from otel_ingest.flatten.common import (
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    Columns,
    Flattened,
    Rejections,
    arrow_bytes,
    attributes,
    enum_name,
    enum_names,
    hex_id,
    int32_bits,
    long,
    longs,
    scoped,
    text,
)
from otel_ingest.schema import signal_schema

_TEMPORALITIES = enum_names(AggregationTemporality.DESCRIPTOR)
METRIC_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_ROW = ("name", "description", "unit", "metric_type", *METRIC_TYPES, "metadata")


def _exemplars(exemplars: Iterable[Exemplar]) -> list[dict[str, Any]]:
    return [
        {
            "time_unix_nano": long(exemplar.time_unix_nano, "exemplar time_unix_nano"),
            "value": _number(exemplar),
            "span_id": hex_id(exemplar.span_id, SPAN_ID_BYTES, "exemplar span_id"),
            "trace_id": hex_id(exemplar.trace_id, TRACE_ID_BYTES, "exemplar trace_id"),
            "filtered_attributes": attributes(exemplar.filtered_attributes),
        }
        for exemplar in exemplars
    ]


def _number(point: NumberDataPoint | Exemplar) -> float | None:
    kind = point.WhichOneof("value")
    if kind == "as_double":
        return point.as_double
    if kind == "as_int":
        return float(point.as_int)
    return None


def _optional(point: Any, field: str) -> float | None:
    return getattr(point, field) if point.HasField(field) else None


# Each builder returns the struct of its column in one dict literal: this runs once per
# data point, so no intermediate dicts are merged.


def _gauge(point: NumberDataPoint, data: Any) -> dict[str, Any]:
    return {
        "start_time_unix_nano": long(point.start_time_unix_nano, "start_time_unix_nano"),
        "time_unix_nano": long(point.time_unix_nano, "time_unix_nano"),
        "value": _number(point),
        "exemplars": _exemplars(point.exemplars) if point.exemplars else [],
        "attributes": attributes(point.attributes),
        "flags": int32_bits(point.flags),
    }


def _sum(point: NumberDataPoint, data: Any) -> dict[str, Any]:
    return {
        "start_time_unix_nano": long(point.start_time_unix_nano, "start_time_unix_nano"),
        "time_unix_nano": long(point.time_unix_nano, "time_unix_nano"),
        "value": _number(point),
        "exemplars": _exemplars(point.exemplars) if point.exemplars else [],
        "attributes": attributes(point.attributes),
        "flags": int32_bits(point.flags),
        "aggregation_temporality": enum_name(_TEMPORALITIES, data.aggregation_temporality),
        "is_monotonic": data.is_monotonic,
    }


def _histogram(point: HistogramDataPoint, data: Any) -> dict[str, Any]:
    return {
        "start_time_unix_nano": long(point.start_time_unix_nano, "start_time_unix_nano"),
        "time_unix_nano": long(point.time_unix_nano, "time_unix_nano"),
        "count": long(point.count, "count"),
        "sum": _optional(point, "sum"),
        "bucket_counts": longs(point.bucket_counts, "bucket_counts"),
        "explicit_bounds": list(point.explicit_bounds),
        "exemplars": _exemplars(point.exemplars) if point.exemplars else [],
        "attributes": attributes(point.attributes),
        "flags": int32_bits(point.flags),
        "min": _optional(point, "min"),
        "max": _optional(point, "max"),
        "aggregation_temporality": enum_name(_TEMPORALITIES, data.aggregation_temporality),
    }


def _exponential_histogram(point: ExponentialHistogramDataPoint, data: Any) -> dict[str, Any]:
    return {
        "attributes": attributes(point.attributes),
        "start_time_unix_nano": long(point.start_time_unix_nano, "start_time_unix_nano"),
        "time_unix_nano": long(point.time_unix_nano, "time_unix_nano"),
        "count": long(point.count, "count"),
        "sum": _optional(point, "sum"),
        "scale": point.scale,
        "zero_count": long(point.zero_count, "zero_count"),
        "positive_bucket": {
            "offset": point.positive.offset,
            "bucket_counts": longs(point.positive.bucket_counts, "positive bucket_counts"),
        },
        "negative_bucket": {
            "offset": point.negative.offset,
            "bucket_counts": longs(point.negative.bucket_counts, "negative bucket_counts"),
        },
        "flags": int32_bits(point.flags),
        "exemplars": _exemplars(point.exemplars) if point.exemplars else [],
        "min": _optional(point, "min"),
        "max": _optional(point, "max"),
        "zero_threshold": point.zero_threshold,
        "aggregation_temporality": enum_name(_TEMPORALITIES, data.aggregation_temporality),
    }


def _summary(point: SummaryDataPoint, data: Any) -> dict[str, Any]:
    return {
        "start_time_unix_nano": long(point.start_time_unix_nano, "start_time_unix_nano"),
        "time_unix_nano": long(point.time_unix_nano, "time_unix_nano"),
        "count": long(point.count, "count"),
        "sum": point.sum,
        "quantile_values": [{"quantile": q.quantile, "value": q.value} for q in point.quantile_values],
        "attributes": attributes(point.attributes),
        "flags": int32_bits(point.flags),
    }


_POINT_STRUCTS: dict[str, Callable[[Any, Any], dict[str, Any]]] = {
    "gauge": _gauge,
    "sum": _sum,
    "histogram": _histogram,
    "exponential_histogram": _exponential_histogram,
    "summary": _summary,
}


def flatten_metrics(request: ExportMetricsServiceRequest) -> Flattened:
    """One row per data point, in request order; metrics without data add no rows."""
    columns = Columns(signal_schema("metrics"), scope_url_column="metric_schema_url")
    rejections = Rejections("data point")
    index = 0
    for metric in scoped(columns, request.resource_metrics, "scope_metrics", "metrics"):
        kind = metric.WhichOneof("data")
        if kind is None:
            continue
        data = getattr(metric, kind)
        to_struct = _POINT_STRUCTS[kind]
        position = METRIC_TYPES.index(kind)
        name, description, unit = text(metric.name), text(metric.description), text(metric.unit)
        metadata = None
        repeated = 0
        for point in data.data_points:
            index += 1
            try:
                if columns.context_error is not None:
                    raise columns.context_error
                if metadata is None:
                    metadata = attributes(metric.metadata)
                    repeated = arrow_bytes((name, description, unit, metadata))
                structs: list[Any] = [None] * len(METRIC_TYPES)
                structs[position] = to_struct(point, data)
            except RecordRejected as error:
                rejections.add(index, error)
                continue
            columns.append_row(_ROW, (name, description, unit, kind, *structs, metadata), repeated)
    return Flattened(columns, rejections.count, rejections.message())
