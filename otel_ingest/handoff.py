"""One committer per table among the worker processes of one server (``--workers N``).

Two processes appending to one Delta table both pay for each other's commits: before a
commit, delta-rs brings its in-memory snapshot up to the newest version, and catching up
on one foreign commit cost about as much as a commit of our own (bench/writers.py and
docs/operations.md, "Many writers"). Workers that took turns would still pay it on every
commit. So, as with replicas behind a load balancer hashing the table header (deploy/),
each table has one committer: the worker that owns it.

* Each worker claims a *slot* 0..N-1 by holding an exclusive ``flock`` on the slot's lock
  file for its lifetime (a restarted worker takes over the slot its predecessor's death
  released) and serves the slot's Unix socket.
* A table belongs to the slot ``crc32(table) % N``. Any worker still receives, checks,
  decodes and flattens requests for it (that is the part worth spreading over cores); then,
  instead of committing, it hands the Arrow batch to the owner at once, which adds it to its
  own next commit. Only after that commit has landed does the owner answer, and only then
  are the requests answered 200. Each worker keeps one connection per table it hands off,
  with hand-offs pipelined on it (not one at a time: rows that waited for the previous
  answer missed the owner's next commit) and answered in the order sent, since the owner
  commits its queue in order.
* Exactly once holds as for a local commit: the owner's commit carries the sending
  worker's application transaction (``txn``) next to its own. Its id names the sender and
  its connection, and its version is the hand-off's sequence number. If the owner dies
  before answering, the sender reads the table: hand-offs up to the transaction's version
  landed (they were committed in order), the others never will (the owner is dead), and
  the sender commits those itself.
* If the owner cannot be reached (starting, restarting), the worker commits itself: several
  writers on one table are safe under Delta's optimistic concurrency, only slower.
* The owner also keeps the resend registry of its tables (resend.py): each request in a
  hand-off is described by its digest, its commit deadline and its answer, so that a
  resend received by any worker is recognised where the first copy's rows are.

Frames on the socket: a 4-byte big-endian length, then the bytes. A hand-off is a JSON
header frame and an Arrow IPC stream frame. Its header lists the requests whose rows the
batch holds, in order (``parts``: rows, size and, when known, the request's identity).
Each answer is one JSON frame, ``{"parts": [{"version": v} | {"error": "..."}, ...]}``
(one outcome per request, an error being a message for the client, answered 503), or
``{"error": "..."}`` for the whole hand-off.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from otel_ingest.errors import IngestError, Unavailable
from otel_ingest.schema import Signal
from otel_ingest.tables import TableName

log = logging.getLogger("otel_ingest.handoff")

# Internal: the folder of the slots' lock files and sockets, made by ``serve --workers N``.
DIRECTORY_VARIABLE = "OTEL_INGEST_HANDOFF_DIR"
_LENGTH = struct.Struct(">I")
# Batches smaller than this are (de)serialized on the event loop: a thread hop costs more
# than the work (a worker's CPU per record grew ~25% with three hops per hand-off).
INLINE_BYTES = 1 << 20


class OwnerUnreachable(Exception):
    """The owner could not be reached before anything was sent: commit locally instead."""


class OwnerLost(Exception):
    """The connection broke after the batch was sent: the rows may or may not be committed."""


def owner_slot(name: TableName, slots: int) -> int:
    """The slot that commits ``name``: a hash that every process computes alike (Python's
    ``hash`` of a string differs between processes)."""
    return zlib.crc32(str(name).encode()) % slots


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


def _frame(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def _to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as stream:
        stream.write_batch(batch)
    return bytes(sink.getvalue())


def _from_ipc(data: bytes) -> pa.RecordBatch:
    with pa.ipc.open_stream(data) as stream:
        return pa.concat_batches(list(stream))


# What the owner does with a handed-off batch: queue the rows of each of its parts (one per
# request, see the module's docstring) for the table's next commit, with the sender's
# transaction; returns the futures of the versions their commits make. Queuing before
# reading the next hand-off keeps a connection's hand-offs in order.
HandIn = Callable[
    [TableName, Signal, pa.RecordBatch, tuple[str, int], list[dict[str, Any]]],
    Awaitable[list["asyncio.Future[int]"]],
]

# The answer for rows the owner withdrew from its queue at their request's commit deadline.
WITHDRAWN = "Storage is slow: the commit did not start in time and the rows were not written; retry the request."


def _answer(done: asyncio.Future[int]) -> dict[str, Any]:
    if done.cancelled():
        return {"error": WITHDRAWN}
    error = done.exception()
    if error is None:
        return {"version": done.result()}
    if not isinstance(error, IngestError):
        log.error("Unexpected error committing handed-off rows", exc_info=error)
        error = Unavailable("Could not commit the rows; retry later.")
    return {"error": str(error)}


def outcome(answer: dict[str, Any]) -> BaseException | int:
    """One part's answer as the sender settles its request with: a version or an error."""
    if "error" in answer:
        return Unavailable(str(answer["error"]))
    return int(answer["version"])


@dataclass
class Handoff:
    """This worker's slot among ``slots``, and the way to the other slots' owners."""

    directory: Path
    slots: int
    slot: int | None = None  # None until claimed (or if every slot was taken)
    _lock: int | None = None
    _server: asyncio.AbstractServer | None = None

    def _socket(self, slot: int) -> Path:
        return self.directory / f"slot-{slot}.sock"

    def claim(self) -> None:
        """Take the first free slot: hold its lock file's ``flock`` for this process's life."""
        for slot in range(self.slots):
            descriptor = os.open(self.directory / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            self.slot, self._lock = slot, descriptor
            return
        log.warning("No free worker slot in %s: this worker commits every table itself.", self.directory)

    async def serve(self, hand_in: HandIn) -> None:
        """Claim a slot and accept other workers' batches for the tables it owns."""
        self.claim()
        if self.slot is None:
            return
        path = self._socket(self.slot)
        path.unlink(missing_ok=True)  # left by this slot's previous owner, which died

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            answers: asyncio.Queue[list[asyncio.Future[int]] | None] = asyncio.Queue()
            replying = asyncio.create_task(self._reply(answers, writer))
            try:
                while True:
                    header = json.loads(await _read_frame(reader))
                    payload = await _read_frame(reader)
                    small = len(payload) < INLINE_BYTES
                    batch = _from_ipc(payload) if small else await asyncio.to_thread(_from_ipc, payload)
                    answers.put_nowait(await self._hand_in(hand_in, header, batch))
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the sender closed the connection (or died; its successor reads the table)
            finally:
                answers.put_nowait(None)
                await replying
                writer.close()

        self._server = await asyncio.start_unix_server(connection, path)
        log.info("Worker slot %d of %d: committing the tables it owns, handing off the others.", self.slot, self.slots)

    @staticmethod
    async def _hand_in(hand_in: HandIn, header: dict[str, Any], batch: pa.RecordBatch) -> list[asyncio.Future[int]]:
        try:
            name = TableName.parse(header["table"])
            txn = (header["app_id"], header["sequence"])
            return await hand_in(name, header["signal"], batch, txn, header["parts"])
        except Exception as error:  # answered in its turn, as an error
            failed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return [failed]

    @staticmethod
    async def _reply(answers: asyncio.Queue[list[asyncio.Future[int]] | None], writer: asyncio.StreamWriter) -> None:
        """Answer each hand-off once its parts' commits are done, in the order they came."""
        while (parts := await answers.get()) is not None:
            await asyncio.wait(parts)
            if len(parts) == 1 and not parts[0].cancelled() and parts[0].exception() is not None:
                answer = _answer(parts[0])  # the whole hand-off failed (or its one part)
            else:
                answer = {"parts": [_answer(done) for done in parts]}
            try:
                writer.write(_frame(json.dumps(answer).encode()))
                await writer.drain()
            except ConnectionError:
                pass  # the sender is gone; keep draining the futures

    def owner(self, name: TableName) -> Path | None:
        """The socket of the worker that commits ``name``; None if it is this one."""
        slot = owner_slot(name, self.slots)
        return None if slot == self.slot else self._socket(slot)

    def close(self) -> None:
        """Stop accepting hand-offs (after the writer has committed and answered the last)."""
        if self._server is not None:
            self._server.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class Channel:
    """One worker's connection to a table's owner, hand-offs pipelined and answered in order."""

    def __init__(self, owner: Path, name: TableName, signal: Signal, app_id: str) -> None:
        self.owner = owner
        self.name = name
        self.signal = signal
        self.app_id = app_id
        self._connections = 0
        self._writer: asyncio.StreamWriter | None = None
        self._txn_id = ""
        self._pending: deque[asyncio.Future[list[BaseException | int]]] = deque()
        self._reading: asyncio.Task[None] | None = None

    async def send(
        self, batch: pa.RecordBatch, parts: list[dict[str, Any]], sequence: int
    ) -> tuple[asyncio.Future[list[BaseException | int]], str]:
        """Hand ``batch`` off, the rows of ``parts`` in order; returns the future of the
        owner's answer (each part's version or ``Unavailable``; or ``OwnerLost``) and the
        transaction id it is committed under. Raises ``OwnerUnreachable`` when there is no
        connection and none can be made."""
        small = batch.nbytes < INLINE_BYTES
        payload = _to_ipc(batch) if small else await asyncio.to_thread(_to_ipc, batch)
        if self._writer is None:
            try:
                reader, self._writer = await asyncio.open_unix_connection(self.owner)
            except OSError as exc:
                raise OwnerUnreachable(str(exc)) from exc
            # A transaction id per connection: after losing one, what its owner committed is
            # told by the transaction's version alone (see the module's docstring).
            self._connections += 1
            self._txn_id = f"{self.app_id}/handoff-{self._connections}"
            self._reading = asyncio.create_task(self._read_answers(reader, self._writer, self._pending))
        header: dict[str, Any] = {"table": str(self.name), "signal": self.signal, "parts": parts}
        header |= {"app_id": self._txn_id, "sequence": sequence}
        answer: asyncio.Future[list[BaseException | int]] = asyncio.get_running_loop().create_future()
        self._pending.append(answer)
        self._writer.write(_frame(json.dumps(header).encode()) + _frame(payload))
        return answer, self._txn_id

    async def _read_answers(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending: deque[asyncio.Future[list[BaseException | int]]],
    ) -> None:
        try:
            while True:
                reply = json.loads(await _read_frame(reader))
                answer = pending.popleft()
                if "parts" in reply:
                    answer.set_result([outcome(part) for part in reply["parts"]])
                else:
                    answer.set_exception(Unavailable(str(reply["error"])))
        except (ConnectionError, asyncio.IncompleteReadError, IndexError) as exc:
            if self._writer is writer:  # the next hand-off opens a new connection
                self._writer, self._pending = None, deque()
            writer.close()
            while pending:
                pending.popleft().set_exception(OwnerLost(str(exc) or type(exc).__name__))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
