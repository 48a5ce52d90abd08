"""Buffering accepted rows per table and committing them to Delta (group commit).

Each table has one ``TableWriter``: requests put their batch in its queue and wait.
One task per table commits what is queued as a single Delta transaction, in a worker
thread, and only then wakes the requests. A table commits at most once per
``max_delay`` seconds: an idle table commits a request at once, a busy one gathers
everything that arrives meanwhile (up to ``max_rows`` rows / ``max_bytes`` bytes,
which commit at once) into its next commit. So under load each commit serves many
requests, and every request is answered only after its rows are committed.

A failed commit is retried with backoff and jitter. Each commit carries a Delta
application transaction id (``txn``: writer id + sequence number), so a retry after
an ambiguous failure first asks the table whether the commit landed, and never
writes the rows twice. If the retries fail, every request in the commit gets
``Unavailable`` (503) and, since the transaction never committed, none of its rows
ever becomes visible.

With ``--workers N`` a table is committed by one worker only; the others hand their
gathered rows to it instead of committing (handoff.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import deltalake
import pyarrow as pa

from otel_ingest.errors import ClientError, Forbidden, TableNotFound, Unavailable
from otel_ingest.flatten.common import BatchColumns, Columns
from otel_ingest.handoff import INLINE_BYTES, Channel, Handoff, OwnerLost, OwnerUnreachable
from otel_ingest.monitoring import Monitoring
from otel_ingest.schema import Signal
from otel_ingest.tables import TableName, Warehouse

if TYPE_CHECKING:
    from otel_ingest.resend import Resends

log = logging.getLogger("otel_ingest.writer")

COMMIT_ATTEMPTS = 4
# delta-rs retries a commit that lost the race for a log version (another writer took it)
# this many times before failing; 15 by default. An append never truly conflicts with
# another append, so a lost race is always worth retrying at once: several writers on one
# table (6 replicas round-robin) ran out of 15 and fell back to the slower retries below.
RACE_RETRIES = 50
# A DeltaTable object that appends commit after commit keeps every new log entry in
# memory, and each commit gets slower; opening it afresh starts from the newest
# checkpoint (written every 100 versions). Measured in bench/versions.py.
REOPEN_EVERY = 100
RETRY_BASE_SECONDS = 0.1
# Each commit names its writer and sequence number in its commitInfo, so that after an
# ambiguous failure the version it made can be found in the table's recent history.
COMMIT_METADATA_KEY = "otelIngestCommit"
LANDED_LOOKBACK = 50

# delta-rs 1.6.6 would delete expired log entries after every commit, and to find them it
# lists the whole _delta_log folder (on S3 one LIST page per 1,000 entries, every commit:
# commits slowed from 0.14 s to 1.7 s at 5,000 entries). The listing it needs to commit
# starts at the last checkpoint. Log clean-up is left to `maintain` (and the background
# maintenance), which runs it once per pass. Checkpoints are still written every 100
# commits. Tested in tests/test_object_store.py (LIST requests per commit on S3).
POST_COMMIT = deltalake.PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)

# A commit's file lives only until the next compaction (minutes), and at a few dozen
# records most of it is Parquet metadata, not data. So commits write without dictionary
# pages and without min/max statistics (Delta's per-file numRecords stays): a 36-record
# commit of the captured mix shrank from 519 to 369 bytes/record on disk, and its log
# entry from 51 to 13 (measured in docs/operations.md, Storage). Queries over the last
# minutes cannot skip these few files by min/max; compacted files (below) have full
# statistics and dictionaries, which is what queries over hours and days prune with.
WRITER_PROPERTIES = deltalake.WriterProperties(
    compression="ZSTD",
    compression_level=3,
    max_row_group_size=128 * 1024,
    default_column_properties=deltalake.ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE"),
)
# Compaction output: telemetry is repetitive text, which zstd with parquet's dictionary
# encoding shrinks well; large row groups keep files few. See docs/operations.md.
COMPACTED_WRITER_PROPERTIES = deltalake.WriterProperties(
    compression="ZSTD",
    compression_level=3,
    max_row_group_size=128 * 1024,
)


# The rows of a request once its commit is over (see TableWriter._settle).
RELEASED = BatchColumns(pa.RecordBatch.from_pylist([]), 0)


@dataclass(frozen=True)
class CommitPolicy:
    """When a table's queue is committed: whichever limit is reached first.

    ``max_delay`` grows, up to ``max_backoff``, while other writers' commits land between
    this writer's (see ``TableWriter._adapt``)."""

    max_rows: int = 200_000
    max_bytes: int = 64 << 20
    max_delay: float = 0.05
    max_backoff: float = 1.0


@dataclass(eq=False)
class Queued:
    """One request's rows in a table's queue; ``done`` resolves to the committed version."""

    writer: TableWriter
    rows: Columns
    size: int
    # Rows handed off by another worker carry its transaction (writer id, sequence), which
    # the commit records next to ours so that the sender can tell whether they landed.
    txn: tuple[str, int] | None = None
    # What identifies the request to the table's owner when the rows are handed off (its
    # digest, deadline and answer: resend.Resends.identity); None when not needed.
    identity: dict[str, Any] | None = None
    # A resend handed in while the first copy's rows are queued or committed (resend.py):
    # it is stored only if those are not. ``rides`` when it shares their commit.
    resend_of: Queued | None = None
    rides: bool = False
    queued_at: float = field(default_factory=time.monotonic)
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def withdraw(self) -> bool:
        """Take the rows out of the queue if no commit has taken them yet (then they are
        never written and ``done`` is cancelled); False if a commit already holds them."""
        return self.writer.withdraw(self)


class TableWriter:
    """The commit queue of one Delta table."""

    def __init__(
        self,
        name: TableName,
        table: deltalake.DeltaTable,
        policy: CommitPolicy,
        location: str,
        storage_options: dict[str, str] | None = None,
        monitoring: Monitoring | None = None,
        signal: Signal = "logs",
        owner: Path | None = None,
    ) -> None:
        """``owner``: the socket of the worker that commits this table, if not this one."""
        self.name = name
        self.signal = signal
        self.monitoring = monitoring or Monitoring()
        self.table = table
        self.location = location
        self.storage_options = storage_options
        self.policy = policy
        self.app_id = f"otel-ingest-{uuid.uuid4()}"
        # Set when another worker commits this table: rows are handed to it (handoff.py).
        self._channel = Channel(owner, name, signal, self.app_id) if owner is not None else None
        self._handing_off: set[asyncio.Task[None]] = set()
        self._committing = asyncio.Lock()
        self._sequence = 0
        self._last_commit = 0.0
        self._opened_at = table.version()
        # The current delay between commits, see _adapt. A worker that hands its rows to the
        # table's owner does so at once: the owner's commit delay gathers them.
        self.delay = policy.max_delay if owner is None else 0.0
        self._queue: list[Queued] = []
        self._queued_rows = 0
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"commit {name}")

    def submit(
        self,
        rows: Columns,
        size: int,
        txn: tuple[str, int] | None = None,
        identity: dict[str, Any] | None = None,
        resend_of: Queued | None = None,
    ) -> Queued:
        """Queue rows (``size``: their OTLP bytes); their ``done`` resolves when committed.
        ``txn``, ``identity``, ``resend_of``: see ``Queued``."""
        if self._closing:
            raise Unavailable("The server is shutting down; retry in a moment.")
        queued = Queued(self, rows, size, txn, identity, resend_of)
        # Read the outcome even if nobody awaits it any more (a request answered 503 at its
        # deadline), so asyncio does not report a never-retrieved exception.
        queued.done.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.append(queued)
        self._queued_rows += rows.num_rows
        self._queued_bytes += size
        self._wake.set()
        return queued

    def withdraw(self, queued: Queued) -> bool:
        """See ``Queued.withdraw``."""
        if queued not in self._queue:
            return False
        self._queue.remove(queued)
        self._queued_rows -= queued.rows.num_rows
        self._queued_bytes -= queued.size
        queued.done.cancel()
        return True

    async def append(self, rows: Columns, size: int) -> int:
        """Queue rows and wait until they are committed; returns the table version."""
        return await self.submit(rows, size).done

    async def close(self) -> None:
        """Commit everything queued (or hand it off and wait for the answers), then stop."""
        self._closing = True
        self._wake.set()
        await self._task
        if self._channel is not None:
            self._channel.close()

    def _full(self) -> bool:
        return self._queued_rows >= self.policy.max_rows or self._queued_bytes >= self.policy.max_bytes

    async def _wait_for_work(self) -> bool:
        """Wait until the queue should be committed; False when closed and empty."""
        while not self._queue:
            if self._closing:
                return False
            self._wake.clear()
            await self._wake.wait()
        # Commits of one table start at most every max_delay seconds: an idle table commits
        # at once, a busy one gathers what arrives meanwhile into the next commit.
        deadline = max(self._queue[0].queued_at, self._last_commit + self.delay)
        while not (self._closing or self._full()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        return True

    def _take(self) -> list[Queued]:
        taken: list[Queued] = []
        rows = size = 0
        while self._queue:
            head = self._queue[0]
            count = head.rows.num_rows
            first = head.resend_of
            if first is not None:
                # A resend: its first copy was queued before it, so by now that is committed,
                # failed, withdrawn, or in this very commit. Only in the failed and withdrawn
                # cases are the resend's own rows written (in their turn, under their txn).
                if first.done.done() and not first.done.cancelled() and first.done.exception() is None:
                    self._queue.pop(0)
                    self._queued_rows -= count
                    self._queued_bytes -= head.size
                    head.done.set_result(first.done.result())
                    head.rows = RELEASED
                    continue
                head.rides = not first.done.done() and first in taken
            if taken and (rows + count > self.policy.max_rows or size + head.size > self.policy.max_bytes):
                break
            taken.append(self._queue.pop(0))
            rows += count
            size += head.size
        self._queued_rows -= rows
        self._queued_bytes -= size
        return taken

    async def _run(self) -> None:
        while await self._wait_for_work():
            group = self._take()
            if not group:  # every queued request was withdrawn meanwhile
                continue
            self._sequence += 1
            self._last_commit = time.monotonic()
            if self._channel is not None and await self._hand_off(group, self._sequence):
                continue  # the owner's commit answers it
            self._settle(group, await self._outcome(self._commit_here(group, self._sequence)))
        await asyncio.gather(*self._handing_off)

    async def _outcome(self, storing: Awaitable[int]) -> BaseException | int:
        """The version ``storing`` made, or the error to answer its requests with."""
        try:
            return await storing
        except Unavailable as error:
            return error
        except Exception:  # never let the commit task die: fail the requests instead
            log.exception("Unexpected error committing to %s", self.name)
            return Unavailable(f"Could not commit to table {self.name}; retry later.")

    @staticmethod
    def _settle(group: list[Queued], outcome: BaseException | int) -> None:
        for pending in group:
            # Their commit is over: the rows are not needed any more, even if the request is
            # still remembered (resend.py keeps requests for --resend-window).
            pending.rows = RELEASED
            if pending.done.done():
                continue
            if isinstance(outcome, BaseException):
                pending.done.set_exception(outcome)
            else:
                pending.done.set_result(outcome)

    async def _commit_here(self, group: list[Queued], sequence: int) -> int:
        """Commit ``group`` in this process; the version made. One at a time: the table
        object is not shared between threads."""
        async with self._committing:
            handed_off = [p.txn for p in group if p.txn is not None]
            parts = [p.rows for p in group if not p.rides]  # a riding resend's first copy is here
            version, interleaved = await asyncio.to_thread(self._commit, parts, sequence, handed_off)
        self._adapt(interleaved)
        return version

    async def _hand_off(self, group: list[Queued], sequence: int) -> bool:
        """Hand ``group`` to the table's owner (see handoff.py), without waiting for its
        commit; False if the owner is unreachable (then this worker commits it)."""
        assert self._channel is not None
        parts = [p.rows for p in group]
        if sum(p.size for p in group) < INLINE_BYTES:  # see handoff.INLINE_BYTES
            batch = Columns.finish_all(parts)
        else:
            batch = await asyncio.to_thread(Columns.finish_all, parts)
        described = [{"rows": p.rows.num_rows, "size": p.size, "identity": p.identity} for p in group]
        try:
            answer, txn_id = await self._channel.send(batch, described, sequence)
        except OwnerUnreachable as error:
            log.warning("The worker committing %s is unreachable (%s); committing here.", self.name, error)
            return False
        task = asyncio.create_task(self._await_owner(group, answer, txn_id, sequence))
        self._handing_off.add(task)
        task.add_done_callback(self._handing_off.discard)
        return True

    async def _await_owner(
        self, group: list[Queued], answer: asyncio.Future[list[BaseException | int]], txn_id: str, sequence: int
    ) -> None:
        outcome: BaseException | int
        try:
            for pending, each in zip(group, await answer, strict=True):
                self._settle([pending], each)
            return
        except Unavailable as error:
            outcome = error
        except OwnerLost as error:
            # The owner died holding our rows: they landed if its commits reached this
            # hand-off (in order, under this connection's transaction id), else never will.
            log.warning("The worker committing %s was lost (%s); reading the table.", self.name, error)
            async with self._committing:
                landed = await asyncio.to_thread(self._committed, sequence, txn_id)
            if landed:
                outcome = -1  # committed; the version is not known here
            else:
                self._sequence += 1
                outcome = await self._outcome(self._commit_here(group, self._sequence))
        self._settle(group, outcome)

    def _adapt(self, interleaved: int) -> None:
        """Back off while other writers share the table (replicas, ``--workers``).

        ``interleaved`` is the number of other writers' commits that landed since this
        writer's previous one. Each of them made delta-rs lose a race for a log version
        and retry; many small commits from several writers mostly race. So while they
        interleave, the delay between this writer's commits doubles (up to
        ``max_backoff``, with jitter so the writers drift apart), gathering more requests
        per commit; when commits go through alone, it halves back to ``max_delay``."""
        policy = self.policy
        if interleaved > 0:
            grown = max(self.delay * 2, policy.max_delay, 0.01)
            self.delay = min(policy.max_backoff, grown) * random.uniform(0.75, 1.25)
        else:
            self.delay = max(policy.max_delay, self.delay / 2)

    @staticmethod
    def fresh_table(
        table: deltalake.DeltaTable, location: str, storage_options: dict[str, str] | None, opened_at: int = 0
    ) -> deltalake.DeltaTable:
        """``table``, or a newly opened one once it is REOPEN_EVERY versions past
        ``opened_at``, the version it was opened at. (Not at each ``version % REOPEN_EVERY
        == 0``: with several writers on a table that version may always be another's, and
        this writer's table object then grew for ever, each commit slower.)"""
        if table.version() - opened_at < REOPEN_EVERY:
            return table
        return deltalake.DeltaTable(location, storage_options=storage_options)

    def _committed(self, sequence: int, app_id: str | None = None) -> bool:
        """Whether commit ``sequence`` of this writer (or of transaction ``app_id``) is in
        the table (after an error).

        A failure to read the table is not a "no": after the last attempt a wrong "no"
        answers 503 for rows that are stored, and the client's resend stores them twice.
        So reading is retried like a commit; only if it never succeeds is it a "no"."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.table.update_incremental()
                return (self.table.transaction_version(app_id or self.app_id) or 0) >= sequence
            except Exception as exc:
                if attempt == COMMIT_ATTEMPTS:
                    log.error("Could not tell whether commit %d to %s landed: %s", sequence, self.name, exc)
                    return False
                time.sleep(RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random()))
        return False

    def _landed_version(self, sequence: int) -> int:
        """The version commit ``sequence`` made, found in the recent history after an error
        (-1 if it is not among the last LANDED_LOOKBACK commits)."""
        marker = f"{self.app_id}/{sequence}"
        try:
            for entry in self.table.history(LANDED_LOOKBACK):
                if entry.get(COMMIT_METADATA_KEY) == marker:
                    return int(entry["version"])
        except Exception:
            log.warning("Could not read the history of %s to find commit %s.", self.name, marker, exc_info=True)
        return -1

    def _commit(
        self, parts: list[Columns], sequence: int, handed_off: list[tuple[str, int]] | None = None
    ) -> tuple[int, int]:
        """One Delta commit of the rows of all ``parts`` (runs in a worker thread), recording
        the ``handed_off`` transactions of other workers whose rows it holds; returns the
        version it made and how many other writers' commits landed since our last."""
        # Not concatenated: write_deltalake streams the batches (a copy of every row saved).
        data = pa.Table.from_batches(Columns.finish_each(parts))
        started = time.perf_counter()
        properties = deltalake.CommitProperties(
            custom_metadata={COMMIT_METADATA_KEY: f"{self.app_id}/{sequence}"},
            # One transaction per id, with its highest sequence number: a commit may hold
            # several hand-offs of one connection, and a table keeps one version per id.
            app_transactions=[
                deltalake.Transaction(app_id=app_id, version=number)
                for app_id, number in dict(sorted([(self.app_id, sequence), *(handed_off or [])])).items()
            ],
            max_commit_retries=RACE_RETRIES,
        )
        version = -1
        read_version = self.table.version()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                if attempt > 1 and self._committed(sequence):
                    version = self._landed_version(sequence)
                    break
                deltalake.write_deltalake(
                    self.table,
                    data,
                    mode="append",
                    writer_properties=WRITER_PROPERTIES,
                    commit_properties=properties,
                    post_commithook_properties=POST_COMMIT,
                )
                # The version this commit made: the table object now holds its snapshot.
                # (A reopened table may already show other writers' newer versions.)
                version = self.table.version()
                table = self.fresh_table(self.table, self.location, self.storage_options, self._opened_at)
                if table is not self.table:
                    self.table, self._opened_at = table, table.version()
                break
            except Exception as exc:  # storage errors come in many types; all mean "retry later"
                if attempt == COMMIT_ATTEMPTS:
                    if self._committed(sequence):  # the error came after the commit landed
                        version = self._landed_version(sequence)
                        break
                    self.monitoring.commit_failures.labels(str(self.name)).inc()
                    log.error("Commit of %d rows to %s failed %d times: %s", data.num_rows, self.name, attempt, exc)
                    # Storage errors can carry whole backtraces (RUST_BACKTRACE): the log has them.
                    raise Unavailable(
                        f"Could not commit to table {self.name}; the rows were not stored, retry later."
                    ) from exc
                self.monitoring.commit_retries.labels(str(self.name)).inc()
                delay = RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random())
                log.warning("Commit to %s failed (%s); retry %d in %.2f s.", self.name, exc, attempt, delay)
                time.sleep(delay)
        seconds = time.perf_counter() - started
        label = str(self.name)
        self.monitoring.commits.labels(label).inc()
        self.monitoring.commit_seconds.labels(label).observe(seconds)
        self.monitoring.rows_written.labels(label).inc(data.num_rows)
        log.info(
            "Committed %s rows from %d requests to %s in %.0f ms (version %d).",
            f"{data.num_rows:,}",
            len(parts),
            self.name,
            seconds * 1000,
            version,
        )
        return version, max(0, version - read_version - 1) if version >= 0 else 0


@dataclass
class _Opening:
    """The lock that lets one request open a table while others wait, and how many use it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Writer:
    """Routes batches to per-table writers, opening (and checking) each table once."""

    def __init__(
        self,
        warehouse: Warehouse,
        auto_create: bool,
        policy: CommitPolicy,
        monitoring: Monitoring | None = None,
        auto_create_max_tables: int = 100,
        handoff: Handoff | None = None,
        resends: Resends | None = None,
    ) -> None:
        """``handoff``: this worker's slot among ``--workers N`` (one committer per table);
        ``resends``: the registry that recognises resends among handed-in rows."""
        self.warehouse = warehouse
        self.handoff = handoff
        self.resends = resends
        self.monitoring = monitoring or Monitoring()
        self.auto_create = auto_create
        self.auto_create_max_tables = auto_create_max_tables
        self.policy = policy
        self._tables: dict[tuple[TableName, Signal], TableWriter] = {}
        # Only while a table is being opened: an entry kept for every name ever asked
        # for (404s included) grew the server by ~72 MiB per 100,000 names.
        self._opening: dict[tuple[TableName, Signal], _Opening] = {}
        self._created: Counter[str] = Counter()  # tables auto-created, by principal

    @property
    def tables(self) -> list[TableWriter]:
        return list(self._tables.values())

    async def _table_writer(self, name: TableName, signal: Signal, creator: str | None = None) -> TableWriter:
        key = (name, signal)
        writer = self._tables.get(key)
        if writer is not None:
            return writer
        opening = self._opening.setdefault(key, _Opening())
        opening.users += 1
        try:
            async with opening.lock:
                writer = self._tables.get(key)
                if writer is None:
                    table = await self._open(name, signal, creator)
                    writer = self._tables[key] = TableWriter(
                        name,
                        table,
                        self.policy,
                        self.warehouse.location(name),
                        self.warehouse.storage_options,
                        self.monitoring,
                        signal,
                        self.handoff.owner(name) if self.handoff is not None else None,
                    )
        finally:
            opening.users -= 1
            if not opening.users:
                del self._opening[key]
        return writer

    async def _open(self, name: TableName, signal: Signal, creator: str | None) -> deltalake.DeltaTable:
        """Open the table; create it for ``creator`` if it is missing and auto-create is on."""
        try:
            try:
                return await asyncio.to_thread(self.warehouse.open, name, signal, False)
            except TableNotFound:
                if creator is None or not self.auto_create:
                    raise
            if self._created[creator] >= self.auto_create_max_tables:
                raise Forbidden(
                    f"Principal {creator!r} has had {self._created[creator]} tables created by --auto-create, "
                    f"its limit (--auto-create-max-tables); create {name} with `otel-ingest tables create` "
                    "or ask the operator to raise the limit."
                )
            table = await asyncio.to_thread(self.warehouse.open, name, signal, True)
            self._created[creator] += 1
            log.info("Created table %s for principal %r (--auto-create).", name, creator)
            return table
        except ClientError:
            raise
        except Exception as exc:
            log.error("Could not open table %s: %s", name, exc)
            raise Unavailable(f"Could not open table {name}; retry later.") from exc

    async def submit(
        self,
        name: TableName,
        signal: Signal,
        rows: Columns,
        size: int,
        creator: str = "anonymous",
        identity: dict[str, Any] | None = None,
    ) -> Queued:
        """Queue ``rows`` for ``name`` (checked to fit ``signal``); await ``.done`` for durability.
        A missing table is created for ``creator`` when auto-create is on. ``identity``:
        see ``Queued``."""
        writer = await self._table_writer(name, signal, creator)
        return writer.submit(rows, size, identity=identity)

    async def hand_in(
        self,
        name: TableName,
        signal: Signal,
        batch: pa.RecordBatch,
        txn: tuple[str, int],
        parts: list[dict[str, Any]],
    ) -> list[asyncio.Future[int]]:
        """Queue rows another worker handed off (this worker owns ``name``) with its
        transaction, one ``Queued`` per request (``parts``, in order); the futures of the
        versions their commits make. A part that is the resend of a request this worker
        knows (``resends``) is stored only if that request's rows are not."""
        writer = await self._table_writer(name, signal)
        futures: list[asyncio.Future[int]] = []
        offset = 0
        for part in parts:
            rows = batch if len(parts) == 1 else batch.slice(offset, part["rows"])
            offset += part["rows"]
            columns = BatchColumns(rows, rows.nbytes)
            if self.resends is None:
                queued = writer.submit(columns, part["size"], txn)
            else:
                queued = self.resends.hand_in(writer, columns, part["size"], txn, part["identity"])
            futures.append(queued.done)
        return futures

    async def check(self, name: TableName, signal: Signal, creator: str | None = None) -> None:
        """Make sure the table exists and fits ``signal`` (opened once, then cached). Without
        ``creator``, auto-create lets a missing table pass (the body is not read yet); with
        it, the table is created for that principal (a valid body has arrived)."""
        try:
            await self._table_writer(name, signal, creator)
        except TableNotFound:
            if not self.auto_create or creator is not None:
                raise

    async def append(
        self, name: TableName, signal: Signal, rows: Columns, size: int, creator: str = "anonymous"
    ) -> None:
        """Commit ``rows`` to ``name`` (checked to fit ``signal``); returns once durable.
        A missing table is created for ``creator`` when auto-create is on."""
        await self.check(name, signal, creator)
        if rows.num_rows:
            await (await self.submit(name, signal, rows, size, creator)).done

    async def close(self) -> None:
        """Commit everything accepted so far (graceful shutdown)."""
        await asyncio.gather(*(writer.close() for writer in self._tables.values()))
