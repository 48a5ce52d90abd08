"""Helpers shared by the three flatteners: AnyValue, attributes, ids, integers, enums,
and the column-wise batch builder.

Conversions that can reject a record (ids of the wrong length, unsigned values above
2^63−1, AnyValue nested too deeply) raise ``RecordRejected``; a flattener computes
every value of a row before appending any, so a rejected record leaves no trace.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pyarrow as pa
from google.protobuf.descriptor import EnumDescriptor
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_ingest.errors import RecordRejected

MAX_LONG = (1 << 63) - 1
# Deeper AnyValue nesting than this rejects the record: no real attribute needs it,
# and it keeps a hostile payload from exhausting the stack.
MAX_ANY_VALUE_DEPTH = 32
TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8


@dataclass(frozen=True)
class Flattened:
    """The rows of one request that passed the mapping rules, and what was rejected.

    The rows stay Python column lists until ``batch`` is asked for: the writer merges
    the columns of every request in a commit and converts them to Arrow once.
    """

    columns: Columns
    rejected: int = 0
    first_error: str | None = None

    @property
    def rows(self) -> int:
        return self.columns.num_rows

    @property
    def repeated_bytes(self) -> int:
        """About the bytes that values shared by many rows take once copied into each."""
        return self.columns.repeated_bytes

    @cached_property
    def batch(self) -> pa.RecordBatch:
        return self.columns.finish()


class Rejections:
    """Counts rejected records and keeps the first reason for ``partial_success``."""

    def __init__(self, noun: str) -> None:
        self.noun = noun
        self.count = 0
        self.first: str | None = None

    def add(self, index: int, error: RecordRejected) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{self.noun} {index}: {error}"

    def message(self) -> str | None:
        if not self.count:
            return None
        plural = self.noun + ("s" if self.count > 1 else "")
        return f"{self.count} {plural} rejected; first: {self.first}"


class Columns:
    """Column-wise row builder for one signal's schema.

    Plain columns are Python lists converted to Arrow once per batch. The columns that
    repeat per resource and scope (``resource``, ``resource_schema_url``,
    ``instrumentation_scope`` and the scope's schema URL) keep each distinct value once
    plus a per-row index, so a resource with 1,000 data points is converted once.
    """

    def __init__(self, schema: pa.Schema, scope_url_column: str) -> None:
        self.schema = schema
        self.values: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.shared = ("resource", "resource_schema_url", "instrumentation_scope", scope_url_column)
        self.indices: dict[str, list[int]] = {name: [] for name in self.shared}
        self._current = [0, 0, 0, 0]
        self._resource_error: RecordRejected | None = None
        self.context_error: RecordRejected | None = None
        # A resource or scope is kept once here, but becomes a copy in every row of the
        # Arrow batch: a 1 MB resource attribute over 2,000 records is 2 GB at commit time.
        # The copies' size is counted so that the request can be charged for it up front.
        self._context_bytes = [0, 0]
        self.repeated_bytes = 0

    def _share(self, position: int, value: Any) -> None:
        distinct = self.values[self.shared[position]]
        distinct.append(value)
        self._current[position] = len(distinct) - 1

    def enter_resource(self, resource: Resource, schema_url: str) -> None:
        """Start the records of a new ResourceX message."""
        try:
            value: dict[str, Any] | None = resource_value(resource)
            self._resource_error = None
        except RecordRejected as error:
            value, self._resource_error = None, error
        self._share(0, value)
        self._share(1, text(schema_url))
        self._context_bytes[0] = arrow_bytes(value) + len(schema_url)

    def enter_scope(self, scope: InstrumentationScope, schema_url: str) -> None:
        """Start the records of a new ScopeX message; sets ``context_error`` if every
        record under it must be rejected because the resource or scope is invalid."""
        try:
            value: dict[str, Any] | None = scope_value(scope)
            self.context_error = self._resource_error
        except RecordRejected as error:
            value, self.context_error = None, error
        self._share(2, value)
        self._share(3, text(schema_url))
        self._context_bytes[1] = arrow_bytes(value) + len(schema_url)

    def append_row(self, names: tuple[str, ...], row: tuple[Any, ...], repeated_bytes: int = 0) -> None:
        """Append one accepted row: the given columns plus the current resource and scope.

        ``repeated_bytes``: the size of values in ``row`` that other rows share too (a
        metric's name and metadata on each of its data points).
        """
        self.repeated_bytes += self._context_bytes[0] + self._context_bytes[1] + repeated_bytes
        values = self.values
        for name, value in zip(names, row, strict=False):
            values[name].append(value)
        for name, position in zip(self.shared, self._current, strict=False):
            self.indices[name].append(position)

    @property
    def num_rows(self) -> int:
        return len(self.indices["resource"])

    def extend(self, other: Columns) -> None:
        """Append the rows of ``other`` (same schema) after these."""
        self.repeated_bytes += other.repeated_bytes
        for name, values in other.values.items():
            mine = self.values[name]
            if name in self.indices:
                offset = len(mine)
                self.indices[name].extend([index + offset for index in other.indices[name]])
            mine.extend(values)

    @classmethod
    def finish_all(cls, parts: list[Columns]) -> pa.RecordBatch:
        """One record batch holding the rows of all ``parts``, in order; parts already in
        Arrow (``BatchColumns``) are concatenated as they are."""
        batches = cls.finish_each(parts)
        return batches[0] if len(batches) == 1 else pa.concat_batches(batches)

    @classmethod
    def finish_each(cls, parts: list[Columns]) -> list[pa.RecordBatch]:
        """The rows of all ``parts`` in order, as few batches as they allow without a copy: one
        per run of Python-built parts (merged, converted once), each Arrow part as it is."""
        batches: list[pa.RecordBatch] = []
        run: list[Columns] = []
        for part in [*parts, None]:
            if part is not None and not isinstance(part, BatchColumns):
                run.append(part)
                continue
            if len(run) == 1:
                batches.append(run[0].finish())
            elif run:
                merged = cls(run[0].schema, run[0].shared[3])
                for columns in run:
                    merged.extend(columns)
                batches.append(merged.finish())
            run = []
            if part is not None:
                batches.append(part.finish())
        return batches

    def finish(self) -> pa.RecordBatch:
        """Convert the lists to Arrow, once."""
        arrays = []
        for field in self.schema:
            array = pa.array(self.values[field.name], type=field.type)
            if field.name in self.indices:
                array = array.take(pa.array(self.indices[field.name], type=pa.int32()))
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class BatchColumns(Columns):
    """Rows that are already an Arrow batch (the native decoder's), kept as they are."""

    def __init__(self, batch: pa.RecordBatch, size: int) -> None:
        """``size``: the bytes of the batch's buffers."""
        self.schema = batch.schema
        self.batch = batch
        # The batch holds every copy of the shared values already: charge all of it.
        self.repeated_bytes = size

    @property
    def num_rows(self) -> int:
        return int(self.batch.num_rows)

    def extend(self, other: Columns) -> None:
        raise TypeError("rows already in Arrow are concatenated by finish_all, not extended")

    def finish(self) -> pa.RecordBatch:
        return self.batch


def scoped(columns: Columns, resources: Iterable[Any], scopes: str, items: str) -> Iterator[Any]:
    """Every item under every scope of every resource, in request order; the columns'
    current resource and scope follow along for the rows appended meanwhile."""
    for resource in resources:
        columns.enter_resource(resource.resource, resource.schema_url)
        for scope in getattr(resource, scopes):
            columns.enter_scope(scope.scope, scope.schema_url)
            yield from getattr(scope, items)


def flatten_records(
    columns: Columns,
    rejections: Rejections,
    records: Iterable[Any],
    names: tuple[str, ...],
    to_row: Callable[[Any], tuple[Any, ...]],
) -> Flattened:
    """One row per record via ``to_row``; a record that breaks a rule is counted and skipped."""
    for index, record in enumerate(records, 1):
        try:
            if columns.context_error is not None:
                raise columns.context_error
            row = to_row(record)
        except RecordRejected as error:
            rejections.add(index, error)
            continue
        columns.append_row(names, row)
    return Flattened(columns, rejections.count, rejections.message())


def enum_names(descriptor: EnumDescriptor) -> dict[int, str]:
    """Number → proto name of an enum, looked up per value instead of via reflection."""
    return {value.number: value.name for value in descriptor.values}


def enum_name(names: dict[int, str], number: int) -> str:
    """The proto name of ``number``, or its decimal string when the enum lacks it."""
    name = names.get(number)
    return name if name is not None else str(number)


def text(value: str) -> str | None:
    """A proto3 string: empty means absent."""
    return value or None


def hex_id(value: bytes, size: int, field: str) -> str | None:
    """Trace/span id bytes → lower-case hex; empty → NULL; any other length rejects."""
    if not value:
        return None
    if len(value) != size:
        raise RecordRejected(f"{field} must be {size} bytes, got {len(value)}")
    return value.hex()


def long(value: int, field: str) -> int:
    """An unsigned 64-bit value that must fit in a signed LONG column."""
    if value > MAX_LONG:
        raise RecordRejected(f"{field} {value} is above 2^63-1")
    return value


def longs(values: Iterable[int], field: str) -> list[int]:
    result = list(values)
    if result and max(result) > MAX_LONG:
        raise RecordRejected(f"a value of {field} is above 2^63-1")
    return result


def int32_bits(value: int) -> int:
    """A uint32 → INT keeping its bit pattern (values above 2^31−1 become negative)."""
    return value - (1 << 32) if value > 0x7FFFFFFF else value


def double_text(value: float) -> str:
    """Shortest round-trip decimal; NaN and infinities spelled as in OTLP/JSON."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def any_value_text(value: AnyValue, depth: int = 0) -> str | None:
    """An AnyValue as the STRING the tables hold (SPEC §3)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return None
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return double_text(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return json.dumps(_json_form(value, depth), separators=(",", ":"), ensure_ascii=False)


def _json_form(value: AnyValue, depth: int) -> Any:
    if depth >= MAX_ANY_VALUE_DEPTH:
        raise RecordRejected(f"an attribute or body nests deeper than {MAX_ANY_VALUE_DEPTH} levels")
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_json_form(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _json_form(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "double_value":
        number = value.double_value
        # JSON has no NaN or infinities; write them as OTLP/JSON does, as strings.
        return number if math.isfinite(number) else double_text(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind is None:
        return None
    return getattr(value, kind)


def arrow_bytes(value: Any) -> int:
    """About the bytes ``value`` takes in an Arrow column: its strings plus a slot each."""
    if value is None:
        return 1
    if isinstance(value, str):
        return len(value) + 4
    if isinstance(value, dict):
        return sum(len(key) + 4 + arrow_bytes(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return 4 + sum(arrow_bytes(item) for item in value)
    return 8


def attributes(pairs: Iterable[KeyValue]) -> dict[str, str | None]:
    """Repeated KeyValue → map; a repeated key keeps its last value (Spark forbids duplicates)."""
    result: dict[str, str | None] = {}
    for kv in pairs:
        value = kv.value
        # Most attribute values are strings: skip the general conversion for them (hot path).
        if value.WhichOneof("value") == "string_value":
            result[kv.key] = value.string_value
        else:
            result[kv.key] = any_value_text(value)
    return result


def resource_value(resource: Resource) -> dict[str, Any]:
    return {
        "attributes": attributes(resource.attributes),
        "dropped_attributes_count": int32_bits(resource.dropped_attributes_count),
    }


def scope_value(scope: InstrumentationScope) -> dict[str, Any]:
    return {
        "name": text(scope.name),
        "version": text(scope.version),
        "attributes": attributes(scope.attributes),
        "dropped_attributes_count": int32_bits(scope.dropped_attributes_count),
    }
