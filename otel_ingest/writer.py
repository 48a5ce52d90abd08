"""Buffering accepted rows per table and committing them to Delta (group commit).

Each table has one ``TableWriter``: requests put their batch in its queue and wait;
a single task per table takes everything queued (up to ``max_commit_rows``), commits
it as one Delta transaction in a worker thread, and only then wakes the requests. So
one commit serves every request that arrived while the previous one was running, and
a request is answered only after the commit holding its rows has succeeded.

A failed commit is retried with backoff; if it keeps failing, every request in it
gets ``Unavailable`` (503) and, since the transaction never committed, none of its
rows ever becomes visible.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import deltalake
import pyarrow as pa

from otel_ingest.errors import ClientError, Unavailable
from otel_ingest.schema import Signal
from otel_ingest.tables import TableName, Warehouse

log = logging.getLogger("otel_ingest.writer")

COMMIT_ATTEMPTS = 3
RETRY_BASE_SECONDS = 0.2

# Telemetry is repetitive text: zstd plus dictionaries shrink it well; large row
# groups keep files few. Values measured in bench/ (see docs/operations.md).
WRITER_PROPERTIES = deltalake.WriterProperties(
    compression="ZSTD",
    compression_level=3,
    max_row_group_size=128 * 1024,
)


@dataclass
class _Pending:
    batch: pa.RecordBatch
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class TableWriter:
    """The commit queue of one Delta table."""

    def __init__(self, name: TableName, table: deltalake.DeltaTable, max_commit_rows: int) -> None:
        self.name = name
        self.table = table
        self.max_commit_rows = max_commit_rows
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"commit {name}")

    async def append(self, batch: pa.RecordBatch) -> int:
        """Queue rows and wait until they are committed; returns the table version."""
        if self._closing:
            raise Unavailable("The server is shutting down; retry against another replica or after restart.")
        pending = _Pending(batch)
        self._queue.append(pending)
        self._wake.set()
        return await pending.done

    async def close(self) -> None:
        """Commit everything queued, then stop."""
        self._closing = True
        self._wake.set()
        await self._task

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        rows = 0
        while self._queue and (not taken or rows + self._queue[0].batch.num_rows <= self.max_commit_rows):
            pending = self._queue.pop(0)
            taken.append(pending)
            rows += pending.batch.num_rows
        return taken

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._take()
            try:
                version = await asyncio.to_thread(self._commit, [p.batch for p in group])
            except Unavailable as error:
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending in group:
                if not pending.done.done():
                    pending.done.set_result(version)

    def _commit(self, batches: list[pa.RecordBatch]) -> int:
        """One Delta commit of all ``batches`` (runs in a worker thread)."""
        data = pa.Table.from_batches(batches)
        started = time.perf_counter()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                deltalake.write_deltalake(self.table, data, mode="append", writer_properties=WRITER_PROPERTIES)
                break
            except Exception as exc:  # storage errors come in many types; all mean "retry later"
                if attempt == COMMIT_ATTEMPTS:
                    log.error("Commit of %d rows to %s failed %d times: %s", data.num_rows, self.name, attempt, exc)
                    raise Unavailable(
                        f"Could not commit to table {self.name} ({exc}); the rows were not stored, retry later."
                    ) from exc
                delay = RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random())
                log.warning("Commit to %s failed (%s); retry %d in %.2f s.", self.name, exc, attempt, delay)
                time.sleep(delay)
        version = self.table.version()
        log.info(
            "Committed %s rows from %d requests to %s in %.0f ms (version %d).",
            f"{data.num_rows:,}",
            len(batches),
            self.name,
            (time.perf_counter() - started) * 1000,
            version,
        )
        return version


class Writer:
    """Routes batches to per-table writers, opening (and checking) each table once."""

    def __init__(self, warehouse: Warehouse, auto_create: bool, max_commit_rows: int) -> None:
        self.warehouse = warehouse
        self.auto_create = auto_create
        self.max_commit_rows = max_commit_rows
        self._tables: dict[tuple[TableName, Signal], TableWriter] = {}
        self._opening: dict[tuple[TableName, Signal], asyncio.Lock] = {}

    async def _table_writer(self, name: TableName, signal: Signal) -> TableWriter:
        key = (name, signal)
        writer = self._tables.get(key)
        if writer is not None:
            return writer
        async with self._opening.setdefault(key, asyncio.Lock()):
            writer = self._tables.get(key)
            if writer is None:
                try:
                    table = await asyncio.to_thread(self.warehouse.open, name, signal, self.auto_create)
                except ClientError:
                    raise
                except Exception as exc:
                    raise Unavailable(f"Could not open table {name} ({exc}); retry later.") from exc
                writer = self._tables[key] = TableWriter(name, table, self.max_commit_rows)
        return writer

    async def append(self, name: TableName, signal: Signal, batch: pa.RecordBatch) -> None:
        """Commit ``batch`` to ``name`` (checked to fit ``signal``); returns once durable."""
        writer = await self._table_writer(name, signal)
        if batch.num_rows:
            await writer.append(batch)

    async def close(self) -> None:
        """Commit everything accepted so far (graceful shutdown)."""
        await asyncio.gather(*(writer.close() for writer in self._tables.values()))
