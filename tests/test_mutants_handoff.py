"""Hand-offs between workers (``--workers N``, handoff.py), in one process and fast.

Two ``Writer``s with a ``Handoff`` each stand for two workers: the real Unix sockets,
slot locks and Delta table of a server with two workers, without starting one (a
server-level test costs tens of seconds, too slow to run each mutant of handoff.py
against; tests/test_durability.py runs the real processes, kill -9 included). Where
the connection to the owner must break at a chosen moment, a relay on a Unix socket
between the two drops it (the owner's real answer is lost, or the hand-off never
reaches it). Rows are read back with polars, commits from the Delta log itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from test_mutants_writer import appends, rows

from otel_ingest.errors import Unavailable
from otel_ingest.handoff import WITHDRAWN, Handoff, owner_slot
from otel_ingest.resend import Entry, Reply, Resends
from otel_ingest.tables import TableName, Warehouse
from otel_ingest.writer import CommitPolicy, TableWriter, Writer

NAME = TableName.parse("main.telemetry.handed_otel_logs")
assert owner_slot(NAME, 2) == 1  # the owner claims slot 1, the sender slot 0


def stored(location: str) -> list[str]:
    return sorted(pl.read_delta(location)["attributes"].map.get("seq").to_list())


def commits(location: str) -> list[tuple[str, dict[str, int]]]:
    """Each commit's marker (``writer id/sequence``) and the transactions it records."""
    made = []
    for entry in sorted(Path(location, "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
        marker = next((a["commitInfo"].get("otelIngestCommit", "") for a in actions if "commitInfo" in a), "")
        if marker:
            made.append((marker, {a["txn"]["appId"]: a["txn"]["version"] for a in actions if "txn" in a}))
    return made


def table_writer(writer: Writer) -> TableWriter:
    [only] = writer.tables
    return only


async def wait_for(condition: object, what: str) -> None:
    """Poll ``condition()`` on the event loop until it holds (deadline 30 s)."""
    assert callable(condition)
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def connections_closed() -> None:
    """Wait until every connection's tasks (relay, owner, sender) have ended: a stream left
    open when asyncio.run closes the loop warns when it is collected, in a later test."""
    await wait_for(lambda: len(asyncio.all_tasks()) == 1, "every connection's tasks to end")


@contextlib.asynccontextmanager
async def worker(
    warehouse: Warehouse, directory: Path, policy: CommitPolicy, resends: Resends | None = None
) -> AsyncIterator[Writer]:
    """A worker: a Writer serving hand-offs in its slot of ``directory`` (the first free)."""
    handoff = Handoff(directory, 2)
    writer = Writer(warehouse, auto_create=False, policy=policy, handoff=handoff, resends=resends)
    await handoff.serve(writer.hand_in)
    try:
        yield writer
    finally:
        await asyncio.wait_for(writer.close(), 30)
        handoff.close()


class Relay:
    """A Unix socket standing for the owner's, forwarding to it. Per connection, in
    turn: ``forward``; ``lose-answer`` (the hand-off reaches the owner, and the
    connection breaks when the owner's answer arrives, before the sender reads it);
    ``lose-hand-off`` (the connection breaks once the hand-off arrived; the owner never
    sees it)."""

    def __init__(self, path: Path, target: Path, modes: list[str]) -> None:
        self.path, self.target, self.modes = path, target, modes
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_unix_server(self._connection, self.path)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.modes.pop(0)
        if mode == "lose-hand-off":
            await reader.read(1)
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, lose: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(1 << 16):
                    if lose:
                        break
                    sink.write(data)
                    await sink.drain()
            writer.close()
            up_writer.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, mode == "lose-answer"))


def test_hand_offs_are_committed_by_the_tables_owner(tmp_path: Path) -> None:
    """The worker that does not own the table hands its rows to the owner, which commits
    them (pipelined hand-offs join its next commit) with the sender's transaction, and
    each request is answered with the version that holds its rows. A third worker finds
    no free slot; a slot freed by a closed worker is taken by the next."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    directory = tmp_path / "slots"
    directory.mkdir()

    async def scenario() -> tuple[list[int], str, str, int | None, int | None]:
        policy = CommitPolicy(max_delay=60)  # after its first commit the owner gathers until closed
        async with worker(warehouse, directory, policy) as sender:
            async with worker(warehouse, directory, policy) as owner:
                assert sender.handoff is not None and owner.handoff is not None
                assert (sender.handoff.slot, owner.handoff.slot) == (0, 1)
                first = await asyncio.wait_for((await sender.submit(NAME, "logs", rows("a"), 10)).done, 30)
                second = await sender.submit(NAME, "logs", rows("b-0", "b-1"), 10)
                for _ in range(10):  # the sender wakes for it and decides (no thread involved)
                    await asyncio.sleep(0)
                # A sender hands rows off at once, not after a commit interval of its own (the
                # owner's interval gathers them): the request is taken as a group already.
                assert table_writer(sender)._sequence == 2
                await wait_for(lambda: len(table_writer(owner)._queue) == 1, "the first hand-off queued")
                third = await sender.submit(NAME, "logs", rows("c"), 10)
                await wait_for(lambda: len(table_writer(owner)._queue) == 2, "the second hand-off queued")
                owners_id = table_writer(owner).app_id
                third_worker = Handoff(directory, 2)
                descriptors = len(os.listdir("/proc/self/fd"))
                await third_worker.serve(sender.hand_in)  # no free slot: serves nothing, keeps nothing open
                assert len(os.listdir("/proc/self/fd")) == descriptors
                assert {(directory / f"slot-{n}.lock").stat().st_mode & 0o777 for n in (0, 1)} == {0o600}
                assert sorted(p.name for p in directory.iterdir()) == [
                    "slot-0.lock",
                    "slot-0.sock",
                    "slot-1.lock",
                    "slot-1.sock",
                ]
            # The owner closed: its queue committed, its answers read, its slot free.
            versions = [first, *await asyncio.wait_for(asyncio.gather(second.done, third.done), 30)]
            await wait_for(lambda: not table_writer(sender)._handing_off, "the answered hand-offs forgotten")
            successor = Handoff(directory, 2)
            await successor.serve(sender.hand_in)  # over the socket its predecessor left
            successor.close()
        # Every connection closed at both ends: no task is left waiting on one.
        await connections_closed()
        return versions, owners_id, table_writer(sender).app_id, third_worker.slot, successor.slot

    versions, owners_id, senders_id, third_slot, successor_slot = asyncio.run(scenario())
    location = warehouse.location(NAME)
    assert versions == [1, 2, 2]
    assert stored(location) == ["a", "b-0", "b-1", "c"]
    assert appends(location) == [1, 3]
    assert commits(location) == [
        (f"{owners_id}/1", {owners_id: 1, f"{senders_id}/handoff-1": 1}),
        (f"{owners_id}/2", {owners_id: 2, f"{senders_id}/handoff-1": 3}),
    ]
    assert (third_slot, successor_slot) == (None, 1)


def test_closing_a_worker_waits_for_the_answers_to_its_hand_offs(tmp_path: Path) -> None:
    """Graceful shutdown of a worker with rows at the owner, not yet committed: close()
    returns only once the owner's commit has answered them."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    directory = tmp_path / "slots"
    directory.mkdir()

    async def scenario() -> int:
        policy = CommitPolicy(max_delay=60)
        async with worker(warehouse, directory, policy) as sender:
            async with worker(warehouse, directory, policy) as owner:
                await asyncio.wait_for((await sender.submit(NAME, "logs", rows("a"), 10)).done, 30)
                waiting = await sender.submit(NAME, "logs", rows("b"), 10)
                await wait_for(lambda: len(table_writer(owner)._queue) == 1, "the hand-off queued at the owner")
                closing = asyncio.create_task(sender.close())
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not closing.done(), "close() returned with a hand-off unanswered"
            await asyncio.wait_for(closing, 30)  # the owner's close committed it
            assert waiting.done.done()
        await connections_closed()
        return waiting.done.result()

    assert asyncio.run(scenario()) == 2
    assert stored(warehouse.location(NAME)) == ["a", "b"]


def test_an_unreachable_owner_leaves_the_commit_to_the_sender(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """While the owner's socket does not answer (starting, restarting), the worker commits
    its rows itself; once the owner serves, the next rows are handed to it."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    directory = tmp_path / "slots"
    directory.mkdir()

    async def scenario() -> tuple[list[int], str, str]:
        policy = CommitPolicy(max_delay=0.01)
        async with worker(warehouse, directory, policy) as sender:
            queued = await sender.submit(NAME, "logs", rows("alone"), 10)
            alone = await asyncio.wait_for(queued.done, 30)
            async with worker(warehouse, directory, policy) as owner:
                queued = await sender.submit(NAME, "logs", rows("handed"), 10)
                handed = await asyncio.wait_for(queued.done, 30)
                owners_id = table_writer(owner).app_id
        await connections_closed()
        return [alone, handed], owners_id, table_writer(sender).app_id

    versions, owners_id, senders_id = asyncio.run(scenario())
    location = warehouse.location(NAME)
    assert versions == [1, 2]
    assert stored(location) == ["alone", "handed"]
    assert commits(location) == [
        (f"{senders_id}/1", {senders_id: 1}),
        (f"{owners_id}/1", {owners_id: 1, f"{senders_id}/handoff-1": 2}),
    ]
    assert "is unreachable" in caplog.text


def test_the_owners_error_is_the_senders_503(tmp_path: Path) -> None:
    """An owner that cannot commit the rows (here its warehouse lacks the table) answers
    with the error, which the sender's request gets as its 503; nothing is stored, and
    the connection stays in order for the next hand-off."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    directory = tmp_path / "slots"
    directory.mkdir()

    async def scenario() -> list[str]:
        policy = CommitPolicy(max_delay=0.01)
        elsewhere = Warehouse(str(tmp_path / "elsewhere"))
        async with worker(warehouse, directory, policy) as sender, worker(elsewhere, directory, policy):
            errors = []
            for seq in ("x", "y"):
                queued = await sender.submit(NAME, "logs", rows(seq), 10)
                with pytest.raises(Unavailable) as error:
                    await asyncio.wait_for(queued.done, 30)
                errors.append(str(error.value))
        await connections_closed()
        return errors

    errors = asyncio.run(scenario())
    assert len(errors) == 2
    assert all(f"Table {NAME} does not exist" in error for error in errors)
    assert commits(warehouse.location(NAME)) == []


def test_a_malformed_hand_off_is_answered_without_internals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A hand-off the owner cannot take for an unexpected reason (here a header without
    its parts, sent by hand on the socket) is answered with a generic error in its turn;
    the details stay in the owner's log."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    directory = tmp_path / "slots"
    directory.mkdir()

    def frame(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    async def scenario() -> dict[str, str]:
        placeholder = Handoff(directory, 2)  # holds slot 0: the owner claims slot 1
        placeholder.claim()
        async with worker(warehouse, directory, CommitPolicy(max_delay=0.01)):
            reader, writer = await asyncio.open_unix_connection(directory / "slot-1.sock")
            sink = pa.BufferOutputStream()
            batch = rows("x").finish()
            with pa.ipc.new_stream(sink, batch.schema) as stream:
                stream.write_batch(batch)
            header = {"table": str(NAME), "signal": "logs", "app_id": "hand/handoff-1", "sequence": 1}
            writer.write(frame(json.dumps(header).encode()) + frame(bytes(sink.getvalue())))
            length = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 30))[0]
            answer: dict[str, str] = json.loads(await reader.readexactly(length))
            writer.close()
        placeholder.close()
        await connections_closed()
        return answer

    assert asyncio.run(scenario()) == {"error": "Could not commit the rows; retry later."}
    assert "KeyError: 'parts'" in caplog.text
    assert commits(warehouse.location(NAME)) == []


@pytest.mark.parametrize("lost", ["lose-answer", "lose-hand-off"])
def test_a_lost_owner_connection_stores_the_rows_once(tmp_path: Path, lost: str) -> None:
    """The connection to the owner breaks with a hand-off unanswered. The sender reads the
    table: rows the owner committed (its answer lost) are not committed again (answered
    with version -1: stored, version unknown); rows it never got the sender commits
    itself. The next hand-off goes over a new connection, with a new transaction id."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    owners_slots, senders_slots = tmp_path / "owner", tmp_path / "sender"
    owners_slots.mkdir()
    senders_slots.mkdir()

    async def scenario() -> tuple[list[int], str, str]:
        policy = CommitPolicy(max_delay=0.01)
        placeholder = Handoff(owners_slots, 2)  # holds slot 0 there: the owner claims slot 1
        placeholder.claim()
        async with worker(warehouse, owners_slots, policy) as owner:
            relay = Relay(senders_slots / "slot-1.sock", owners_slots / "slot-1.sock", [lost, "forward"])
            async with relay, worker(warehouse, senders_slots, policy) as sender:
                versions = []
                for seq in ("first", "second"):
                    queued = await sender.submit(NAME, "logs", rows(seq), 10)
                    versions.append(await asyncio.wait_for(queued.done, 30))
                owners_id, senders_id = table_writer(owner).app_id, table_writer(sender).app_id
        placeholder.close()
        await connections_closed()
        return versions, owners_id, senders_id

    versions, owners_id, senders_id = asyncio.run(scenario())
    location = warehouse.location(NAME)
    assert stored(location) == ["first", "second"]
    if lost == "lose-answer":  # the owner's commits 1 and 2 hold the sender's hand-offs 1 and 2
        assert versions == [-1, 2]
        assert commits(location) == [
            (f"{owners_id}/1", {owners_id: 1, f"{senders_id}/handoff-1": 1}),
            (f"{owners_id}/2", {owners_id: 2, f"{senders_id}/handoff-2": 2}),
        ]
    else:  # the sender committed hand-off 1's rows as its transaction 2; its third went to the owner
        assert versions == [1, 2]
        assert commits(location) == [
            (f"{senders_id}/2", {senders_id: 2}),
            (f"{owners_id}/1", {owners_id: 1, f"{senders_id}/handoff-2": 3}),
        ]


def test_the_owner_recognises_resends_handed_in_by_another_worker(tmp_path: Path) -> None:
    """The owner keeps the resend registry of its tables (resend.py). Requests it received
    and remembers (answered 503 at their deadline): "c" committed, "a" queued, "b" queued
    then withdrawn. Their resends reach the other worker, which hands them off: "c" is
    answered with the first copy's version, "a" shares its first copy's commit, "b" is
    written since its first copy never will be; each stored once. A handed-off request
    whose deadline passes while its rows are still queued at the owner ("d") is withdrawn
    there and answered 503, never written."""
    warehouse = Warehouse(str(tmp_path / "warehouse"))
    warehouse.create_for_signal(NAME, "logs")
    directory = tmp_path / "slots"
    directory.mkdir()
    reply = Reply(1, 0, None, "protobuf")

    def key(seq: str) -> bytes:
        return seq.encode().ljust(16, b".")

    async def scenario() -> tuple[list[int | str], int]:
        policy = CommitPolicy(max_delay=60)  # after its first commit the owner gathers until closed
        registry = Resends()
        async with (
            worker(warehouse, directory, policy) as sender,
            worker(warehouse, directory, policy, registry) as owner,
        ):
            first = {seq: await owner.submit(NAME, "logs", rows(seq), 10) for seq in "c"}
            await asyncio.wait_for(first["c"].done, 30)
            first |= {seq: await owner.submit(NAME, "logs", rows(seq), 10) for seq in "ab"}
            for seq, queued in first.items():
                registry._remember(key(seq), Entry(reply, queued))
            await asyncio.sleep(0)  # "c" is known as committed
            resends = []
            for seq in "cabd":
                deadline = time.monotonic() + (0.5 if seq == "d" else 60)
                identity = Resends.identity(key(seq), deadline, reply)
                resends.append(await sender.submit(NAME, "logs", rows(seq), 10, identity=identity))
            owners_queue = table_writer(owner)._queue
            await wait_for(lambda: len(owners_queue) == 6, "the resends and the late request queued at the owner")
            await wait_for(lambda: len(owners_queue) == 5, "the late request withdrawn at its deadline")
            assert first["b"].withdraw()
            recognised = registry.monitoring.resends_across_workers.labels(str(NAME))._value.get()
        await connections_closed()
        outcomes: list[int | str] = []
        for queued in resends:
            error = queued.done.exception()
            outcomes.append(str(error) if error else queued.done.result())
        return outcomes, int(recognised)

    outcomes, recognised = asyncio.run(scenario())
    assert outcomes == [1, 2, 2, WITHDRAWN]
    assert recognised == 3
    location = warehouse.location(NAME)
    assert stored(location) == ["a", "b", "c"]
    assert appends(location) == [1, 2]
