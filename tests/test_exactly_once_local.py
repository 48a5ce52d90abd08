"""Exactly-once when a local filesystem fails *after* a commit has landed (issue 10).

The in-process sibling of tests/test_exactly_once.py (a server on S3 behind a fault
proxy, about a minute per run): the same promises of ``TableWriter._commit``, checked in
seconds, so that every mutant of the commit path can be run against them. The storage
is a real ext4/xfs/btrfs folder that really fails; nothing in deltalake is mocked:

- ``_delta_log`` append-only (``chattr +a``): a file can be created and hard-linked in
  it, so the commit file ``<version>.json`` lands, but none can be renamed, so the
  checkpoint delta-rs writes right after (the table checkpoints every commit:
  ``delta.checkpointInterval = 1``) fails and ``write_deltalake`` raises although the
  commit is in the table: the ambiguous failure.
- ``_delta_log`` immutable (``chattr +i``): nothing can be created in it, the commit is
  refused and nothing lands (an ordinary failure); reading works.
- a symlink loop in ``_delta_log``: listing it fails, so neither reading nor committing
  works (an outage) until it is removed.

The writer's back-off is not waited for: its ``time.sleep`` records the delay and makes
the change to the storage the test scripted for that moment (the storage heals, or the
next failure begins), so each scenario is exact and fast. Jitter is pinned to its middle.
Needs root (CAP_LINUX_IMMUTABLE) on a filesystem with these flags; skipped otherwise.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pyarrow as pa
import pytest
from test_mutants_writer import NAME, rows

from otel_ingest import writer
from otel_ingest.errors import Unavailable
from otel_ingest.flatten.common import Columns
from otel_ingest.monitoring import Monitoring
from otel_ingest.tables import Warehouse
from otel_ingest.writer import CommitPolicy, TableWriter

_GET_FLAGS, _SET_FLAGS = 0x80086601, 0x40086602  # FS_IOC_GETFLAGS / FS_IOC_SETFLAGS
APPEND_ONLY, IMMUTABLE = 0x20, 0x10  # FS_APPEND_FL, FS_IMMUTABLE_FL


def _flags(path: Path, flags: int | None = None) -> int:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buffer = array.array("i", [0])
        fcntl.ioctl(descriptor, _GET_FLAGS, buffer, True)
        if flags is not None:
            buffer[0] = (buffer[0] & ~(APPEND_ONLY | IMMUTABLE)) | flags
            fcntl.ioctl(descriptor, _SET_FLAGS, buffer, True)
        return buffer[0]
    finally:
        os.close(descriptor)


class Storage:
    """The table's ``_delta_log`` folder, made to fail in the ways above."""

    def __init__(self, location: str) -> None:
        self.log = Path(location, "_delta_log")
        self.loop = self.log / "00000000000000099999.json"

    def healthy(self) -> None:
        _flags(self.log, 0)
        if self.loop.is_symlink():
            self.loop.unlink()

    def lose_answers(self) -> None:
        """Commits land, then fail (the checkpoint cannot be renamed into place)."""
        self.healthy()
        _flags(self.log, APPEND_ONLY)

    def refuse(self) -> None:
        """Commits fail before anything lands; reads work."""
        self.healthy()
        _flags(self.log, IMMUTABLE)

    def unreadable(self) -> None:
        """Listing the log fails: no read and no commit works."""
        self.healthy()
        self.loop.symlink_to(self.loop)


class Backoff:
    """Stands in for the ``time`` module of otel_ingest.writer: real clocks, but a sleep
    records its delay and runs the next scripted step instead of waiting."""

    monotonic = staticmethod(time.monotonic)
    perf_counter = staticmethod(time.perf_counter)

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.steps: list[Callable[[], None] | None] = []

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        step = self.steps.pop(0) if self.steps else None
        if step is not None:
            step()


class MiddleJitter(random.Random):
    def random(self) -> float:
        return 0.5


@pytest.fixture(scope="module")
def flags_work(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("flags")
    try:
        _flags(folder, APPEND_ONLY)
        _flags(folder, 0)
    except OSError as exc:
        pytest.skip(f"cannot set append-only/immutable flags here ({exc.strerror}): needs root on ext4/xfs/btrfs")


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> Backoff:
    clock = Backoff()
    monkeypatch.setattr(writer, "time", clock)
    monkeypatch.setattr(writer, "random", MiddleJitter())
    return clock


@pytest.fixture
def location(tmp_path: Path, flags_work: None) -> Iterator[str]:
    """A logs table that writes a checkpoint after every commit."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    warehouse.set_properties(NAME, {"delta.checkpointInterval": "1"})
    location = warehouse.location(NAME)
    yield location
    Storage(location).healthy()  # or the temporary folder could not be removed


def open_writer(location: str, monitoring: Monitoring | None = None) -> TableWriter:
    return TableWriter(NAME, deltalake.DeltaTable(location), CommitPolicy(), location, None, monitoring)


def stored(location: str) -> list[str]:
    return sorted(pl.read_delta(location)["attributes"].map.get("seq").to_list())


def commits_with_rows(location: str) -> int:
    count = 0
    for entry in Path(location, "_delta_log").glob("*.json"):
        count += any('"add"' in line for line in entry.read_text().splitlines())
    return count


def data_files(location: str) -> int:
    return len([p for p in Path(location).glob("*.parquet")])


def metric(monitoring: Monitoring, name: str) -> float:
    return monitoring.registry.get_sample_value(name, {"table": str(NAME)}) or 0.0


def run(
    location: str,
    body: Callable[[TableWriter], Any],
    monitoring: Monitoring | None = None,
    then: Callable[[], None] | None = None,
) -> Any:
    """``body(writer)`` on a writer of the table, opened before ``then()`` changes the storage."""

    async def scenario() -> Any:
        table_writer = open_writer(location, monitoring)
        if then is not None:
            then()
        try:
            return await body(table_writer)
        finally:
            Storage(location).healthy()
            await asyncio.wait_for(table_writer.close(), 30)

    return asyncio.run(scenario())


def append(*seqs: str) -> Callable[[TableWriter], Any]:
    async def body(table_writer: TableWriter) -> int:
        return await asyncio.wait_for(table_writer.append(rows(*seqs), 10), 60)

    return body


def test_a_commit_whose_answer_is_lost_is_answered_once_stored(location: str, backoff: Backoff) -> None:
    """The commit lands, the write raises: the retry asks the table (txn id), finds the
    commit, answers with its version, and uploads nothing again."""
    storage = Storage(location)
    before = deltalake.DeltaTable(location).version()
    files = data_files(location)
    storage.lose_answers()
    monitoring = Monitoring()
    started = time.perf_counter()
    version = run(location, append("a", "b"), monitoring)
    elapsed = time.perf_counter() - started
    assert version == before + 1
    assert stored(location) == ["a", "b"]
    assert commits_with_rows(location) == 1
    assert data_files(location) == files + 1  # no second upload after the landed commit
    assert backoff.delays == pytest.approx([0.1])  # one failed attempt, then the check
    assert metric(monitoring, "otel_ingest_commit_retries_total") == 1
    assert metric(monitoring, "otel_ingest_commit_failures_total") == 0
    assert metric(monitoring, "otel_ingest_commits_total") == 1
    assert metric(monitoring, "otel_ingest_rows_written_total") == 2
    assert 0 < metric(monitoring, "otel_ingest_commit_seconds_sum") <= elapsed


def test_a_commit_landing_on_the_final_attempt_is_answered_once_stored(location: str, backoff: Backoff) -> None:
    """Three attempts refused, the fourth lands and raises: the check after the last
    attempt finds it (no 503 for stored rows, so no resend stores them twice)."""
    storage = Storage(location)
    before = deltalake.DeltaTable(location).version()
    storage.refuse()
    backoff.steps = [None, None, storage.lose_answers]
    version = run(location, append("a"))
    assert version == before + 1
    assert stored(location) == ["a"]
    assert commits_with_rows(location) == 1
    assert backoff.delays == pytest.approx([0.1, 0.2, 0.4])


def test_a_commit_refused_every_time_is_503_and_stores_nothing(location: str, backoff: Backoff) -> None:
    storage = Storage(location)
    before = deltalake.DeltaTable(location).version()
    storage.refuse()
    monitoring = Monitoring()
    with pytest.raises(Unavailable, match="the rows were not stored"):
        run(location, append("a"), monitoring)
    assert backoff.delays == pytest.approx([0.1, 0.2, 0.4])  # four attempts, doubling back-off
    assert deltalake.DeltaTable(location).version() == before
    assert metric(monitoring, "otel_ingest_commit_failures_total") == 1
    assert metric(monitoring, "otel_ingest_commit_retries_total") == 3
    assert metric(monitoring, "otel_ingest_commits_total") == 0
    # The client resends after the 503: stored once.
    assert run(location, append("a")) == before + 1
    assert stored(location) == ["a"]


def test_a_landed_commit_is_found_after_the_store_was_unreadable_for_a_while(location: str, backoff: Backoff) -> None:
    """The commit lands and raises; then the log cannot be listed for the first check.
    "Could not read" is not "did not land": the check is retried, finds the commit."""
    storage = Storage(location)
    before = deltalake.DeltaTable(location).version()
    storage.lose_answers()
    backoff.steps = [storage.unreadable, storage.healthy]
    assert run(location, append("a")) == before + 1
    assert stored(location) == ["a"]
    assert commits_with_rows(location) == 1
    assert backoff.delays == pytest.approx([0.1, 0.1])  # the commit's back-off, then the check's


def test_a_landed_commit_buried_under_other_writers_commits_is_still_answered_stored(
    location: str, backoff: Backoff
) -> None:
    """The commit lands and raises; before the retry asks, other writers commit more than
    LANDED_LOOKBACK times. The txn id still says "landed", so the rows are not written
    again and the request succeeds; only the version is unknown (-1), and no interleaving
    is reported for it (the delay does not grow)."""
    storage = Storage(location)

    def others_commit() -> None:
        storage.healthy()
        other = deltalake.DeltaTable(location)
        for _ in range(writer.LANDED_LOOKBACK):
            deltalake.write_deltalake(other, pa_rows("other"), mode="append")

    async def body(table_writer: TableWriter) -> tuple[int, float]:
        version = await asyncio.wait_for(table_writer.append(rows("mine"), 10), 60)
        return version, table_writer.delay

    storage.lose_answers()
    backoff.steps = [others_commit]
    assert run(location, body) == (-1, 0.05)
    assert stored(location).count("mine") == 1
    assert len(stored(location)) == 1 + writer.LANDED_LOOKBACK


def test_an_outage_is_503_after_four_attempts_each_checked_four_times(location: str, backoff: Backoff) -> None:
    """Nothing can be read or written: every attempt after the first asks whether the
    previous one landed (four reads, doubling back-off), and so does the end; then 503."""
    storage = Storage(location)
    before = deltalake.DeltaTable(location).version()
    with pytest.raises(Unavailable, match="the rows were not stored"):
        run(location, append("a"), then=storage.unreadable)
    check = [0.1, 0.2, 0.4]
    assert backoff.delays == pytest.approx([0.1, *check, 0.2, *check, 0.4, *check, *check])
    assert deltalake.DeltaTable(location).version() == before


def test_commits_of_other_writers_in_between_are_counted(location: str, backoff: Backoff) -> None:
    """``_commit`` reports how many other writers' commits landed since its table's
    version. While there are any, the writer doubles its delay between commits (up to
    max_backoff); after a commit that went through alone, it halves it (down to max_delay)."""

    async def body(table_writer: TableWriter) -> tuple[tuple[int, int], int, list[float]]:
        other = deltalake.DeltaTable(location)

        def others(count: int) -> None:
            for _ in range(count):
                deltalake.write_deltalake(other, pa_rows("other"), mode="append")

        others(3)
        read = table_writer.table.version()
        made = table_writer._commit([rows("mine")], 1)
        table_writer._sequence = 1  # the commit above was the writer's first
        delays = []
        for count in (3, 0, 1, 1, 1, 1, 1, 1, 0, 0):
            others(count)
            await table_writer.append(rows("then"), 10)
            delays.append(table_writer.delay)
        return made, read, delays

    (version, interleaved), read, delays = run(location, body)
    assert (version, interleaved) == (read + 4, 3)
    # max_delay 0.05, max_backoff 1.0, jitter at its middle.
    assert delays == pytest.approx([0.1, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.5, 0.25])
    assert len(stored(location)) == 3 + 1 + 9 + 10


def pa_rows(seq: str) -> pa.Table:
    return pa.Table.from_batches([Columns.finish_all([rows(seq)])])


def test_commit_metadata_names_the_writer_and_sequence(location: str) -> None:
    """What a retry looks for in the history: the commit's writer id and sequence number."""

    async def body(table_writer: TableWriter) -> str:
        await table_writer.append(rows("a"), 10)
        await table_writer.append(rows("b"), 10)
        return table_writer.app_id

    app_id = run(location, body)
    history = deltalake.DeltaTable(location).history(2)
    assert [entry[writer.COMMIT_METADATA_KEY] for entry in history] == [f"{app_id}/2", f"{app_id}/1"]
    transactions = [
        json.loads(line)["txn"]
        for entry in sorted(Path(location, "_delta_log").glob("*.json"))
        for line in entry.read_text().splitlines()
        if '"txn"' in line
    ]
    assert [(t["appId"], t["version"]) for t in transactions] == [(app_id, 1), (app_id, 2)]


def test_requests_nobody_awaits_any_more_leave_no_asyncio_error(location: str, backoff: Backoff) -> None:
    """A request answered 503 at its deadline stops awaiting its commit. When that commit
    then fails, asyncio must not report an exception "never retrieved" (its marker
    ``_log_traceback`` stays set until someone reads the outcome); a withdrawn request's
    cancelled outcome must not raise in a callback either."""
    reported: list[str] = []

    async def body(table_writer: TableWriter) -> bool:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(str(context.get("message"))))
        failing = table_writer.submit(rows("a"), 10)
        assert table_writer.submit(rows("b"), 10).withdraw()
        await asyncio.wait([failing.done], timeout=60)  # waits without reading the outcome
        assert failing.done.done() and not failing.done.cancelled()
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
        return bool(failing.done._log_traceback)  # type: ignore[attr-defined]

    assert run(location, body, then=Storage(location).refuse) is False
    assert reported == []
    assert backoff.delays == pytest.approx([0.1, 0.2, 0.4])  # the commit did fail
