"""The usage and inference tables, and the buffer that keeps logging from breaking calls.

``usage`` has one row per call, modelled on Databricks' ``system.ai_gateway.usage`` (the
token details are flat columns so that a union with other usage sources is plain SQL).
``inference`` holds request and response payloads, modelled on Databricks' payload
tables. Column meanings are in docs/gateway.md.

Rows are handed to ``TableLog.add``, which never waits and never raises: a background
task commits them through the ingestion's group-commit ``TableWriter`` (one Delta
transaction per batch, so nothing is half-written). If the warehouse is down, rows wait
in a bounded buffer and the task retries; when the buffer is full new rows are dropped,
counted in ``/metrics`` (``otel_ingest_gateway_log_rows_dropped``) and logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

import pyarrow as pa

from otel_ingest.errors import IngestError
from otel_ingest.flatten.common import Columns
from otel_ingest.monitoring import Monitoring
from otel_ingest.tables import TABLE_DEFAULTS, TableName, Warehouse
from otel_ingest.writer import CommitPolicy, TableWriter

log = logging.getLogger("otel_ingest.gateway.tables")

SCHEMA_PROPERTY = "otel_ingest.gateway.schemaVersion"
SCHEMA_VERSION = "v1"
BATCH_ROWS = 5_000
# Usage rows are not awaited by anyone: fewer, larger commits cost the relay less CPU (each
# commit of a small batch is tens of ms of CPU: at 1 s per table it was half the gateway's
# CPU per call in bench/gateway.py). [gateway] commit_every_seconds overrides it.
COMMIT_EVERY_SECONDS = 5.0
RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)
DROP_LOG_EVERY_SECONDS = 10.0

_TIME = pa.timestamp("us", tz="UTC")

USAGE_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("event_time", _TIME, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("endpoint_name", pa.string()),
        pa.field("route", pa.string()),
        pa.field("api_type", pa.string()),
        pa.field("destination_type", pa.string()),
        pa.field("destination_model", pa.string()),
        pa.field("requester", pa.string()),
        pa.field("agent", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("client_request_id", pa.string()),
        pa.field("ip_address", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("error", pa.string()),
        pa.field("streaming", pa.bool_()),
        pa.field("latency_ms", pa.int64()),
        pa.field("ttfb_ms", pa.int64()),
        pa.field("input_tokens", pa.int64()),
        pa.field("cache_read_input_tokens", pa.int64()),
        pa.field("cache_creation_input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("reasoning_output_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("cost_source", pa.string()),
        pa.field("request_tags", pa.map_(pa.string(), pa.string())),
    ]
)

INFERENCE_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("client_request_id", pa.string()),
        pa.field("request_date", pa.date32(), nullable=False),
        pa.field("request_time", _TIME, nullable=False),
        pa.field("status_code", pa.int32()),
        pa.field("sampling_fraction", pa.float64()),
        pa.field("execution_duration_ms", pa.int64()),
        pa.field("request", pa.string()),
        pa.field("response", pa.string()),
        pa.field("logging_error_codes", pa.list_(pa.string())),
        pa.field("served_entity", pa.string()),
        pa.field("destination_model", pa.string()),
        pa.field("requester", pa.string()),
    ]
)


class Rows(Columns):
    """Rows of a gateway table in the ingestion's column builder, so that the group-commit
    writer commits them like any other batch (these schemas share no resource columns)."""

    def __init__(self, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
        super().__init__(schema, "")
        for row in rows:
            for name in schema.names:
                self.values[name].append(row.get(name))

    @property
    def num_rows(self) -> int:
        return len(self.values[self.schema.names[0]])


class TableLog:
    """A bounded buffer of rows for one table, committed in the background."""

    def __init__(
        self,
        warehouse: Warehouse,
        name: TableName,
        schema: pa.Schema,
        max_rows: int,
        monitoring: Monitoring,
        dropped: Any,
        commit_every: float = COMMIT_EVERY_SECONDS,
    ) -> None:
        self.warehouse = warehouse
        self.commit_every = commit_every
        self.name = name
        self.schema = schema
        self.max_rows = max_rows
        self.monitoring = monitoring
        self.dropped = dropped  # a prometheus Counter labelled by table
        self.buffer: collections.deque[dict[str, Any]] = collections.deque()
        self.written = 0
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._writer: TableWriter | None = None
        self._last_drop_log = -1e9
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"gateway log {self.name}")

    def add(self, row: dict[str, Any]) -> None:
        """Queue a row; never blocks or raises. Full buffer: the row is dropped and counted."""
        if len(self.buffer) >= self.max_rows:
            self.dropped.labels(str(self.name)).inc()
            now = time.monotonic()
            if now - self._last_drop_log > DROP_LOG_EVERY_SECONDS:
                self._last_drop_log = now
                log.error(
                    "The %s buffer is full (%d rows waiting for the warehouse); dropping rows. "
                    "See otel_ingest_gateway_log_rows_dropped in /metrics.",
                    self.name,
                    len(self.buffer),
                )
            return
        self.buffer.append(row)
        self._wake.set()

    async def _open(self) -> TableWriter:
        table = await asyncio.to_thread(
            self.warehouse.create, self.name, self.schema, {SCHEMA_PROPERTY: SCHEMA_VERSION, **TABLE_DEFAULTS}
        )
        return TableWriter(
            self.name,
            table,
            CommitPolicy(max_rows=BATCH_ROWS, max_delay=self.commit_every),
            self.warehouse.location(self.name),
            self.warehouse.storage_options,
            self.monitoring,
        )

    async def _run(self) -> None:
        failures = 0
        while True:
            while not self.buffer:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            batch = [self.buffer[i] for i in range(min(BATCH_ROWS, len(self.buffer)))]
            try:
                if self._writer is None:
                    self._writer = await self._open()
                await self._writer.append(Rows(self.schema, batch), 0)
            except (IngestError, Exception) as error:  # storage fails in many ways; all mean "retry"
                failures += 1
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
                log.warning(
                    "Could not write %d rows to %s (%s); %d rows wait, retry in %g s.",
                    len(batch),
                    self.name,
                    error,
                    len(self.buffer),
                    delay,
                )
                if self._closing and failures >= 3:
                    log.error("Giving up %d rows of %s at shutdown.", len(self.buffer), self.name)
                    self.dropped.labels(str(self.name)).inc(len(self.buffer))
                    return
                # New rows do not hasten the retry; shutting down does.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
                continue
            failures = 0
            for _ in batch:
                self.buffer.popleft()
            self.written += len(batch)

    async def close(self) -> None:
        """Write what is buffered (a few tries), then stop."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._writer is not None:
            await self._writer.close()
