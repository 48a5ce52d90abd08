"""The commit queue's promises, on a real Delta table in a temporary folder (issue 10).

Each test here was written against a bug seeded in writer.py that the rest of the suite
let through (``python tools/mutate.py --seeded`` re-checks them): a closing writer must
commit what is still queued, a commit never holds more than ``max_rows``/``max_bytes``
(unless one request alone is larger), and the table object is reopened every
``REOPEN_EVERY`` versions. Commits are counted in the Delta log; rows read with polars.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from load import logs_body
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_ingest.errors import Forbidden, TableNotFound
from otel_ingest.flatten import flatten_logs
from otel_ingest.flatten.common import BatchColumns, Columns
from otel_ingest.monitoring import Monitoring
from otel_ingest.tables import TableName, Warehouse
from otel_ingest.writer import REOPEN_EVERY, CommitPolicy, TableWriter, Writer

NAME = TableName.parse("main.telemetry.queue_otel_logs")


def rows(*seqs: str) -> Columns:
    message = ExportLogsServiceRequest()
    message.ParseFromString(logs_body(list(seqs)))
    return flatten_logs(message).columns


def appends(location: str) -> list[int]:
    """Rows added by each commit, in version order (from the Delta log itself)."""
    added = []
    for entry in sorted(Path(location, "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in entry.read_text().splitlines()]
        counts = [json.loads(a["add"]["stats"])["numRecords"] for a in actions if "add" in a]
        if counts:
            added.append(sum(counts))
    return added


def stored(location: str) -> list[str]:
    frame = pl.read_delta(location)
    return sorted(frame["attributes"].map.get("seq").to_list())


def open_writer(tmp_path: Path, policy: CommitPolicy) -> TableWriter:
    """A TableWriter on a new logs table (call inside a running event loop)."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    table = warehouse.create_for_signal(NAME, "logs")
    return TableWriter(NAME, table, policy, warehouse.location(NAME))


async def _until_queued(tasks: list[asyncio.Task[int]]) -> None:
    """Let the append tasks run up to their wait for the commit (one loop turn each)."""
    for _ in tasks:
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)


def test_close_commits_what_is_still_queued(tmp_path: Path) -> None:
    """Requests queued behind a 60 s commit interval when close() is called are committed
    and answered, not dropped (graceful shutdown with requests in the queue)."""

    async def scenario() -> tuple[list[int], str]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        await writer.append(rows("first"), 10)  # an idle table commits at once; the next waits 60 s
        queued = [asyncio.create_task(writer.append(rows(f"queued-{n}"), 10)) for n in range(3)]
        await _until_queued(queued)
        await asyncio.wait_for(writer.close(), 30)
        # close() returns once everything is committed, not merely asked for.
        assert stored(writer.location) == ["first", "queued-0", "queued-1", "queued-2"]
        versions = await asyncio.wait_for(asyncio.gather(*queued), 5)
        return versions, writer.location

    versions, location = asyncio.run(scenario())
    assert versions == [2, 2, 2]  # one commit for the three, after the first (version 1)
    assert stored(location) == ["first", "queued-0", "queued-1", "queued-2"]


def test_close_during_a_commit_commits_what_queued_meanwhile(tmp_path: Path) -> None:
    """Requests queued while a commit is running, and close() called before it ends: after
    that commit the writer must commit them too, not stop because it is closing."""

    async def scenario() -> tuple[list[int], str]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        first = rows("first")
        started, release = threading.Event(), threading.Event()
        finish = first.finish

        def gated_finish() -> pa.RecordBatch:  # runs in the commit's worker thread
            started.set()
            assert release.wait(30)
            return finish()

        first.finish = gated_finish  # type: ignore[method-assign]
        committing = asyncio.create_task(writer.append(first, 10))
        assert await asyncio.to_thread(started.wait, 30), "the first commit never started"
        queued = [asyncio.create_task(writer.append(rows(f"queued-{n}"), 10)) for n in range(3)]
        await _until_queued(queued)
        closing = asyncio.create_task(writer.close())
        await asyncio.sleep(0)  # close() has begun: the writer is closing
        release.set()
        await asyncio.wait_for(closing, 30)
        versions = await asyncio.wait_for(asyncio.gather(committing, *queued), 5)
        return versions, writer.location

    versions, location = asyncio.run(scenario())
    assert versions == [1, 2, 2, 2]
    assert stored(location) == ["first", "queued-0", "queued-1", "queued-2"]


def test_append_after_close_is_refused_not_lost(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=0.01))
        await writer.close()
        with pytest.raises(Exception, match="shutting down"):
            await writer.append(rows("late"), 10)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("policy", "size"),
    [(CommitPolicy(max_rows=7, max_delay=60), 1), (CommitPolicy(max_bytes=250, max_delay=60), 100)],
    ids=["max_rows", "max_bytes"],
)
def test_a_commit_never_holds_more_than_the_limits(tmp_path: Path, policy: CommitPolicy, size: int) -> None:
    """Five requests of 3 rows (or 100 bytes) queued at once: with max_rows 7 (or max_bytes
    250) each commit takes two, never all five."""

    async def scenario() -> str:
        writer = open_writer(tmp_path, policy)
        await writer.append(rows("a", "b", "c"), size)
        queued = [asyncio.create_task(writer.append(rows(f"{n}-0", f"{n}-1", f"{n}-2"), size)) for n in range(5)]
        await _until_queued(queued)
        # Two full commits go at once, long before the 60 s interval ...
        await asyncio.wait_for(asyncio.gather(*queued[:4]), 30)
        assert not queued[4].done()  # ... and the fifth request waits for it, or for close().
        await asyncio.wait_for(writer.close(), 30)
        await asyncio.wait_for(asyncio.gather(*queued), 5)
        return writer.location

    location = asyncio.run(scenario())
    assert appends(location) == [3, 6, 6, 3]
    assert len(stored(location)) == 18


def test_a_request_larger_than_the_limit_commits_alone(tmp_path: Path) -> None:
    async def scenario() -> str:
        writer = open_writer(tmp_path, CommitPolicy(max_rows=2, max_delay=60))
        big = asyncio.create_task(writer.append(rows("1", "2", "3", "4"), 1))
        small = asyncio.create_task(writer.append(rows("5"), 1))
        await _until_queued([big, small])
        await asyncio.wait_for(writer.close(), 30)
        await asyncio.wait_for(asyncio.gather(big, small), 5)
        return writer.location

    assert appends(asyncio.run(scenario())) == [4, 1]


def test_table_object_is_reopened_every_reopen_every_versions(tmp_path: Path) -> None:
    """An appending DeltaTable object keeps every log entry in memory and each commit gets
    slower (bench/versions.py); at each multiple of REOPEN_EVERY the writer opens it afresh."""
    location = str(tmp_path / "t")
    deltalake.write_deltalake(location, pa.table({"x": [0]}))
    table = deltalake.DeltaTable(location)
    kept = []
    opened_at = 0
    for version in range(1, REOPEN_EVERY + 2):
        deltalake.write_deltalake(table, pa.table({"x": [version]}), mode="append")
        assert table.version() == version
        fresh = TableWriter.fresh_table(table, location, None, opened_at)
        kept.append(fresh is table)
        if fresh is not table:
            table, opened_at = fresh, fresh.version()
    reopened = [version for version, same in enumerate(kept, 1) if not same]
    assert reopened == [REOPEN_EVERY]
    assert table.version() == REOPEN_EVERY + 1
    assert pl.read_delta(location).height == REOPEN_EVERY + 2


def test_the_writer_commits_through_the_reopened_table(tmp_path: Path) -> None:
    """The commit that brings the table REOPEN_EVERY versions past where it was opened
    swaps the writer's table object for a fresh one, counted from the new one's version
    (fresh_table's rule, tested above, applied by the writer)."""

    async def scenario() -> None:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=0))
        await writer.append(rows("first"), 10)
        old = writer.table
        # As if this object had been opened REOPEN_EVERY - 1 versions ago: the next commit
        # reaches the limit (instead of making a hundred commits to get there).
        writer._opened_at = old.version() + 1 - REOPEN_EVERY
        assert await writer.append(rows("second"), 10) == 2
        assert writer.table is not old and (writer.table.version(), writer._opened_at) == (2, 2)
        assert await writer.append(rows("third"), 10) == 3
        assert writer.table.version() == 3  # the fresh object is the one committed through
        await writer.close()
        assert stored(writer.location) == ["first", "second", "third"]

    asyncio.run(scenario())


def test_table_object_is_reopened_when_another_writer_makes_the_round_versions(tmp_path: Path) -> None:
    """Counted from the version it was opened at: with a second writer on the table that
    makes every version divisible by REOPEN_EVERY, this writer still reopens its table."""
    location = str(tmp_path / "t")
    deltalake.write_deltalake(location, pa.table({"x": [0]}))
    table, other = deltalake.DeltaTable(location), deltalake.DeltaTable(location)
    reopened = []
    for version in range(1, 2 * REOPEN_EVERY + 2):
        writer = other if version % REOPEN_EVERY == 0 else table
        deltalake.write_deltalake(writer, pa.table({"x": [1]}), mode="append")
        assert writer.version() == version
        if writer is table:
            fresh = TableWriter.fresh_table(table, location, None, 0 if not reopened else reopened[-1])
            if fresh is not table:
                table = fresh
                reopened.append(table.version())
    assert reopened and all(version % REOPEN_EVERY for version in reopened)
    assert reopened[0] == REOPEN_EVERY + 1


@pytest.mark.parametrize(
    ("policy", "size"),
    [(CommitPolicy(max_rows=6, max_delay=60), 1), (CommitPolicy(max_bytes=200, max_delay=60), 100)],
    ids=["max_rows", "max_bytes"],
)
def test_a_queue_exactly_at_the_limit_commits_at_once(tmp_path: Path, policy: CommitPolicy, size: int) -> None:
    async def scenario() -> str:
        writer = open_writer(tmp_path, policy)
        await writer.append(rows("a"), 1)
        queued = [asyncio.create_task(writer.append(rows(f"{n}-0", f"{n}-1", f"{n}-2"), size)) for n in range(2)]
        await _until_queued(queued)
        await asyncio.wait_for(asyncio.gather(*queued), 30)  # 6 rows / 200 bytes: full, long before 60 s
        await writer.close()
        return writer.location

    assert appends(asyncio.run(scenario())) == [1, 6]


def test_a_withdrawn_request_is_never_written(tmp_path: Path) -> None:
    """A request answered before its commit (the deadline) takes its rows back out of
    the queue; a request a commit already holds cannot be withdrawn."""

    async def scenario() -> tuple[str, list[bool]]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        first = writer.submit(rows("first"), 10)  # an idle table commits at once
        await asyncio.wait_for(first.done, 30)
        kept = writer.submit(rows("k-0", "k-1", "k-2"), 100)
        gone = writer.submit(rows("g-0", "g-1"), 50)
        assert (writer._queued_rows, writer._queued_bytes) == (5, 150)
        outcomes = [gone.withdraw(), gone.done.cancelled(), gone.withdraw()]
        # What is queued now decides when the queue is full: only the kept request.
        assert (writer._queued_rows, writer._queued_bytes) == (3, 100)
        await asyncio.wait_for(writer.close(), 30)
        outcomes += [first.withdraw(), kept.withdraw(), kept.done.result() == 2]
        return writer.location, outcomes

    location, outcomes = asyncio.run(scenario())
    assert outcomes == [True, True, False, False, False, True]
    assert stored(location) == ["first", "k-0", "k-1", "k-2"]
    assert appends(location) == [1, 3]


@pytest.mark.parametrize(
    ("policy", "sizes"),
    [(CommitPolicy(max_rows=4, max_delay=60), (1, 1, 1)), (CommitPolicy(max_bytes=40, max_delay=60), (30, 10, 30))],
    ids=["max_rows", "max_bytes"],
)
def test_a_busy_table_gathers_requests_until_its_interval(
    tmp_path: Path, policy: CommitPolicy, sizes: tuple[int, int, int]
) -> None:
    """After a commit, a request waits for the table's interval (60 s here), so the next
    one joins its commit; here the second fills the limit and both commit at once. (What
    the first commit took no longer counts towards the limit.)"""

    async def scenario() -> list[int]:
        writer = open_writer(tmp_path, policy)
        await writer.append(rows("f-0", "f-1", "f-2"), sizes[0])  # an idle table commits at once
        waiting = asyncio.create_task(writer.append(rows("a"), sizes[1]))
        for _ in range(10):  # the writer wakes for it and decides (no thread involved yet)
            await asyncio.sleep(0)
        filling = asyncio.create_task(writer.append(rows("b-0", "b-1", "b-2"), sizes[2]))
        versions = await asyncio.wait_for(asyncio.gather(waiting, filling), 30)
        await writer.close()
        return versions

    assert asyncio.run(scenario()) == [2, 2]


def test_a_table_that_just_committed_waits_out_its_interval_even_under_a_second(tmp_path: Path) -> None:
    """With a 1 s interval, a request arriving right after a commit waits for the rest of
    it, so the next one joins its commit (a writer that commits whenever less than a
    second remains would never gather anything at the default 50 ms)."""

    async def scenario() -> list[int]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=1.0))
        await writer.append(rows("first"), 10)  # an idle table commits at once
        later = rows("b")
        # The interval counts from when that commit started; count it from now, so that how
        # long the commit took on a loaded machine does not eat into the window.
        writer._last_commit = time.monotonic()
        waiting = asyncio.create_task(writer.append(rows("a"), 10))
        for _ in range(10):  # the writer wakes for it and decides (no thread involved yet)
            await asyncio.sleep(0)
        joining = asyncio.create_task(writer.append(later, 10))
        await _until_queued([joining])
        await asyncio.wait_for(writer.close(), 30)  # commits what waits, without waiting the second
        return await asyncio.gather(waiting, joining)

    assert asyncio.run(scenario()) == [2, 2]


def test_a_queue_emptied_by_withdrawals_commits_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> str:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        await writer.append(rows("first"), 10)
        gone = writer.submit(rows("gone"), 10)
        for _ in range(10):  # the writer is waiting for the interval, with one request queued
            await asyncio.sleep(0)
        assert gone.withdraw()
        await asyncio.wait_for(writer.close(), 30)  # wakes the writer: nothing left to commit
        assert writer._sequence == 1
        return writer.location

    location = asyncio.run(scenario())
    assert "Unexpected error" not in caplog.text
    assert appends(location) == [1]
    assert stored(location) == ["first"]


def test_a_writer_waiting_for_its_interval_does_not_spin(tmp_path: Path) -> None:
    """While a request waits for the interval, the commit task sleeps until woken: it
    does not re-check the queue on every turn of the event loop (a busy loop)."""

    async def scenario() -> int:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        await writer.append(rows("first"), 10)  # the next request waits up to 60 s
        checks = 0
        full = writer._full

        def counted() -> bool:
            nonlocal checks
            checks += 1
            return full()

        writer._full = counted  # type: ignore[method-assign]
        waiting = asyncio.create_task(writer.append(rows("a"), 10))
        for _ in range(100):
            await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(writer.close(), 30)
        assert await waiting == 2
        return checks

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize("numbers", [(4, 5), (5, 4)], ids=["in-order", "reversed"])
def test_a_commit_holding_two_hand_offs_of_one_connection_records_the_later(
    tmp_path: Path, numbers: tuple[int, int]
) -> None:
    """A table keeps the first of two transactions with one id in a commit (delta-rs 1.6.6),
    so the owner records each id once, with its highest sequence number: otherwise the
    sender, after losing the owner, would read the later hand-off as not committed and
    commit it again (handoff.py). Highest, not last queued: in either order."""

    async def scenario() -> str:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        first = writer.submit(rows("a"), 1, ("sender/handoff-1", numbers[0]))
        second = writer.submit(rows("b"), 1, ("sender/handoff-1", numbers[1]))
        await asyncio.wait_for(asyncio.gather(first.done, second.done), 30)  # one commit: an idle table's first
        await writer.close()
        return writer.location

    location = asyncio.run(scenario())
    assert appends(location) == [2]
    assert deltalake.DeltaTable(location).transaction_version("sender/handoff-1") == 5


def test_closing_the_writer_commits_what_every_table_has_queued(tmp_path: Path) -> None:
    """Graceful shutdown: Writer.close() commits the queues of all its tables."""
    names = [TableName.parse(f"main.telemetry.t{n}_otel_logs") for n in range(2)]

    async def scenario() -> Warehouse:
        warehouse = Warehouse(str(tmp_path / "warehouse"))
        for name in names:
            warehouse.create_for_signal(name, "logs")
        writer = Writer(warehouse, auto_create=False, policy=CommitPolicy(max_delay=60))
        for name in names:
            await writer.append(name, "logs", rows(f"{name.table}-first"), 10)  # idle: at once
        queued = [await writer.submit(name, "logs", rows(f"{name.table}-queued"), 10) for name in names]
        await asyncio.wait_for(writer.close(), 30)
        assert all(q.done.done() and q.done.result() == 2 for q in queued)
        return warehouse

    warehouse = asyncio.run(scenario())
    for name in names:
        assert stored(warehouse.location(name)) == [f"{name.table}-first", f"{name.table}-queued"]


def test_a_request_cancelled_during_its_commit_leaves_the_others_answered(tmp_path: Path) -> None:
    """A client that hangs up cancels its request while the commit holding its rows runs:
    the commit still answers every other request in it, and the writer goes on."""

    async def scenario() -> tuple[int, int, bool]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        gone_rows = BatchColumns(rows("gone").finish(), 10)  # finished on its own in the commit
        started, release = threading.Event(), threading.Event()
        finish = gone_rows.finish

        def gated_finish() -> pa.RecordBatch:  # runs in the commit's worker thread
            started.set()
            assert release.wait(30)
            return finish()

        gone_rows.finish = gated_finish  # type: ignore[method-assign]
        gone = asyncio.create_task(writer.append(gone_rows, 10))
        kept = asyncio.create_task(writer.append(rows("kept"), 10))
        assert await asyncio.to_thread(started.wait, 30), "the commit never started"
        gone.cancel()
        release.set()
        version = await asyncio.wait_for(kept, 30)
        later = asyncio.create_task(writer.append(rows("later"), 10))
        await asyncio.wait_for(writer.close(), 30)  # commits "later" without waiting the 60 s
        return version, await later, gone.cancelled()

    assert asyncio.run(scenario()) == (1, 2, True)
    assert stored(str(tmp_path / "warehouse" / "main" / "telemetry" / "queue_otel_logs")) == ["gone", "kept", "later"]


def test_tables_are_opened_checked_and_auto_created_once(tmp_path: Path) -> None:
    """The Writer's routing of rows to tables. Without --auto-create a missing table is
    TableNotFound and nothing is created. With it, a check before the body is read lets
    a missing table pass and creates nothing; a valid body creates it for its principal
    (even an export with no rows, which commits nothing), up to
    --auto-create-max-tables per principal, then Forbidden naming the flag. Concurrent
    requests for a new table create and open it once; nothing is kept per name once a
    table is open or refused. Commits are written with zstd, without dictionaries or
    min/max statistics (WRITER_PROPERTIES, docs/operations.md)."""
    names = [TableName.parse(f"main.telemetry.auto{n}_otel_logs") for n in range(2)]
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    monitoring = Monitoring()  # the server's: what its tables commit is counted there

    async def scenario() -> None:
        strict = Writer(warehouse, auto_create=False, policy=CommitPolicy(max_delay=0.01))
        for creator in (None, "alice"):
            with pytest.raises(TableNotFound):
                await strict.check(names[0], "logs", creator)
        with pytest.raises(TableNotFound):
            await strict.append(names[0], "logs", rows("refused"), 10, "alice")
        assert not warehouse.exists(names[0]) and strict._opening == {}

        auto = Writer(warehouse, True, CommitPolicy(max_delay=0.01), monitoring=monitoring, auto_create_max_tables=1)
        await auto.check(names[0], "logs")  # the body is not read yet: no table for nobody
        assert not warehouse.exists(names[0])
        await auto.append(names[0], "logs", rows(), 0, "alice")  # a valid, empty export
        assert warehouse.exists(names[0]) and not auto.tables[0].table.version()
        with pytest.raises(Forbidden, match="has had 1 tables created by --auto-create"):
            await auto.append(names[1], "logs", rows("over-the-cap"), 10, "alice")
        assert not warehouse.exists(names[1])
        await asyncio.gather(*(auto.append(names[1], "logs", rows(f"bob-{n}"), 10, "bob") for n in range(3)))
        assert auto._created == {"alice": 1, "bob": 1} and len(auto.tables) == 2 and auto._opening == {}
        await strict.append(names[1], "logs", rows("strict"), 10)  # an existing table
        await auto.close()
        await strict.close()

    asyncio.run(scenario())
    assert stored(warehouse.location(names[1])) == ["bob-0", "bob-1", "bob-2", "strict"]
    assert monitoring.registry.get_sample_value("otel_ingest_rows_written_total", {"table": str(names[1])}) == 3
    assert pl.read_delta(warehouse.location(names[0])).height == 0
    data = next(Path(warehouse.location(names[1])).glob("*.parquet"))
    metadata = pq.ParquetFile(data).metadata
    columns = [metadata.row_group(0).column(i) for i in range(metadata.num_columns)]
    assert {column.compression for column in columns} == {"ZSTD"}
    assert not any("DICTIONARY" in encoding for column in columns for encoding in column.encodings)
    assert not any(column.is_stats_set for column in columns)


def test_a_writer_backs_off_while_another_commits_between_its_commits(tmp_path: Path) -> None:
    """Another writer's commits landing between two of this writer's make it gather
    longer before its next commit (its delay grows past max_delay, see _adapt); when
    its commits go through alone, the delay halves back."""

    async def scenario() -> list[float]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=0.01, max_backoff=1.0))
        await writer.append(rows("first"), 10)
        other = deltalake.DeltaTable(writer.location)
        for seq in ("other-0", "other-1"):
            deltalake.write_deltalake(other, pa.Table.from_batches([rows(seq).finish()]), mode="append")
        delays = [writer.delay]
        await writer.append(rows("after-others"), 10)
        delays.append(writer.delay)
        for seq in ("alone-0", "alone-1", "alone-2", "alone-3", "alone-4", "alone-5"):
            await writer.append(rows(seq), 10)
        delays.append(writer.delay)
        await writer.close()
        return delays

    before, after_others, alone = asyncio.run(scenario())
    assert before == 0.01
    assert 0.015 <= after_others <= 0.025  # doubled, with jitter
    assert alone == 0.01


def test_a_resend_of_committed_rows_leaves_the_queue_without_a_write(tmp_path: Path) -> None:
    """A resend queued behind its first copy (resend.py, a hand-off recognised by the
    owner) whose first copy committed is answered with that version, never written, and
    stops counting towards the queue's limits (rows and bytes)."""

    async def scenario() -> tuple[str, list[object]]:
        writer = open_writer(tmp_path, CommitPolicy(max_delay=60))
        first = writer.submit(rows("first"), 10)  # an idle table commits at once
        await asyncio.wait_for(first.done, 30)
        resend = writer.submit(rows("first"), 10, resend_of=first)
        kept = writer.submit(rows("k-0", "k-1"), 30)
        assert (writer._queued_rows, writer._queued_bytes) == (3, 40)
        await asyncio.wait_for(writer.close(), 30)
        return writer.location, [resend.done.result(), kept.done.result(), writer._queued_rows, writer._queued_bytes]

    location, outcomes = asyncio.run(scenario())
    assert outcomes == [1, 2, 0, 0]
    assert stored(location) == ["first", "k-0", "k-1"]
    assert appends(location) == [1, 2]


def test_a_hand_off_of_two_requests_is_split_into_their_rows(tmp_path: Path) -> None:
    """The owner queues each request of a hand-off with its own rows: a two-part batch
    is cut at the first part's row count (one part takes the batch whole)."""

    async def scenario() -> tuple[str, list[int]]:
        warehouse = Warehouse(str(tmp_path / "warehouse"))
        warehouse.create_for_signal(NAME, "logs")
        writer = Writer(warehouse, auto_create=False, policy=CommitPolicy(max_delay=60))
        batch = Columns.finish_all([rows("a"), rows("b-0", "b-1")])
        parts = [{"rows": 1, "size": 10, "identity": None}, {"rows": 2, "size": 20, "identity": None}]
        futures = await writer.hand_in(NAME, "logs", batch, ("sender/handoff-1", 1), parts)
        versions = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await asyncio.wait_for(writer.close(), 30)
        return warehouse.location(NAME), versions

    location, versions = asyncio.run(scenario())
    assert versions == [1, 1]
    assert stored(location) == ["a", "b-0", "b-1"]
    assert appends(location) == [3]
