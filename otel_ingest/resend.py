"""Recognising a resent request, so that slow storage never stores a request twice.

OTLP exporters give up waiting after a timeout (10 s by default) and send the same body
again. If the first commit was only slow, both would land. So:

* A request waits for its commit at most ``--commit-deadline`` seconds (8 by default,
  shorter than the exporters' timeout), counted from its arrival; then it is answered 503
  with ``Retry-After``. If its rows were still queued they are withdrawn (they will never
  be written); if they were already in a commit, that commit may still land.
* A request answered 503 that way is remembered by a digest (BLAKE2b, 128 bits) of its
  table, signal and decompressed body. A byte-identical request to the same table is its
  resend: while the first commit is pending it waits on that commit instead of queuing the
  rows again; once it has committed (within ``--resend-window`` seconds, 600 by default)
  it is answered 200 at once with the first request's answer, writing nothing. A failed
  commit is forgotten, so its resend is written normally, and so is a request once it is
  answered 200: a later identical body is then a new request.

With ``serve --workers N`` the registry of a table is kept by the worker that commits it
(its owner, handoff.py), so a resend is recognised whichever worker receives it. A worker
that hands rows off describes each request to the owner (``Resends.identity``: digest,
deadline, answer). The owner withdraws the rows still queued at the request's deadline
(the monotonic clock is the machine's, shared by the workers) or remembers the request,
exactly as for its own requests. A handed-in request that the owner recognises as a resend
is queued behind its first copy, *conditionally*: when its turn comes it is answered with
the first copy's version if that committed (nothing written), shares the first copy's
commit if that is the same one, and has its own rows written only if the first copy failed
or was withdrawn. So its fate is decided by a commit no later than its own hand-off's,
which keeps the sender's recovery after the owner's death exact (handoff.py): the hand-offs
up to the transaction's version are settled, the others are committed by the sender.

What still holds only per process: a worker that commits a table itself because its owner
is unreachable (starting, restarting) uses its own registry, and a worker's death loses
the registry it kept, so a resend after that is written again if its first copy's commit
landed. Several replicas share no registry: route by table (deploy/) so that a table's
requests, resends included, reach one replica.

The memory is bounded: at most ``MAX_ENTRIES`` requests (a digest, a short answer and their
rows until committed) are remembered, the oldest dropped first; an owner also keeps one
timer per handed-in request until it is committed. An exporter whose timeout is shorter than
``--commit-deadline`` gives up before its answer: its resend is not recognised, so keep the
deadline below the clients' timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from otel_ingest.errors import Unavailable
from otel_ingest.flatten.common import Columns
from otel_ingest.monitoring import Monitoring
from otel_ingest.schema import Signal
from otel_ingest.tables import TableName
from otel_ingest.wire import Encoding
from otel_ingest.writer import Queued, TableWriter

log = logging.getLogger("otel_ingest.resend")

MAX_ENTRIES = 100_000
DEFAULT_WINDOW = 600.0


def request_key(table: TableName, signal: Signal, body: bytes) -> bytes:
    """The digest that identifies a request's content: same table, signal and bytes.

    SHA-256 cut to 16 bytes: with the CPU's SHA instructions it hashed a 150 KB body 2.6x as
    fast as blake2b here (255 vs 663 µs), and this runs for every request."""
    digest = hashlib.sha256(f"{table}\0{signal}\0".encode())
    digest.update(body)
    return digest.digest()[:16]


@dataclass(frozen=True)
class Reply:
    """What the first request was answered (or will be), to answer its resends alike."""

    rows: int
    rejected: int
    first_error: str | None
    encoding: Encoding


@dataclass
class Entry:
    """One remembered request: its answer and its commit (pending, then committed)."""

    reply: Reply
    queued: Queued
    committed_at: float | None = None
    waiters: int = 0
    handed_in: bool = False  # received by another worker, which handed its rows to this one

    @property
    def failed(self) -> bool:
        done = self.queued.done
        return done.done() and (done.cancelled() or done.exception() is not None)


class Resends:
    """The per-process registry of unacknowledged requests whose rows may still commit
    (single event loop: no locking).

    Only requests answered 503 at their deadline while their rows were already in a commit
    are remembered: their clients resend. A request answered 200 needs no memory (its
    client has its answer, and an identical body sent later is a new request)."""

    def __init__(
        self, window: float = DEFAULT_WINDOW, max_entries: int = MAX_ENTRIES, monitoring: Monitoring | None = None
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.monitoring = monitoring or Monitoring()
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, key: bytes) -> Entry | None:
        """The remembered request with this digest: pending, or committed within the window."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.failed or (entry.committed_at is not None and time.monotonic() - entry.committed_at > self.window):
            del self._entries[key]
            return None
        return entry

    def recognised(self, table: TableName, entry: Entry, handed_in: bool = False) -> None:
        """Count a recognised resend; also as one across workers when the first copy and the
        resend were received by different workers (one of them handed its rows to this one)."""
        self.monitoring.resends.labels(str(table)).inc()
        if handed_in or entry.handed_in:
            self.monitoring.resends_across_workers.labels(str(table)).inc()
            log.info("Recognised a resend to %s received by another worker than its first copy.", table)

    @staticmethod
    def identity(key: bytes, deadline: float, reply: Reply) -> dict[str, Any]:
        """What a worker tells a table's owner about a request whose rows it hands off."""
        answer = {"rows": reply.rows, "rejected": reply.rejected, "first_error": reply.first_error}
        answer["encoding"] = reply.encoding
        return {"key": key.hex(), "deadline": deadline if math.isfinite(deadline) else None, "reply": answer}

    def hand_in(
        self,
        writer: TableWriter,
        rows: Columns,
        size: int,
        txn: tuple[str, int],
        identity: dict[str, Any] | None,
    ) -> Queued:
        """Queue the rows of one request another worker handed off (see the module's
        docstring): as a conditional resend if this worker knows its digest, else with a
        timer that applies the request's deadline here."""
        if identity is None or self.window <= 0:
            return writer.submit(rows, size, txn)
        key = bytes.fromhex(identity["key"])
        known = self.find(key)
        if known is not None and known.queued.writer is writer:
            self.recognised(writer.name, known, handed_in=True)
            return writer.submit(rows, size, txn, resend_of=known.queued)
        queued = writer.submit(rows, size, txn)
        if identity["deadline"] is not None:
            entry = Entry(Reply(**identity["reply"]), queued, handed_in=True)
            delay = max(0.0, identity["deadline"] - time.monotonic())
            timer = asyncio.get_running_loop().call_later(delay, self._expire, key, entry)
            queued.done.add_done_callback(lambda _: timer.cancel())
        return queued

    def _expire(self, key: bytes, entry: Entry) -> None:
        """A handed-in request's deadline: what ``wait`` does at it for a request of our own
        (its sender has answered 503 meanwhile)."""
        if entry.queued.done.done():
            return
        if entry.waiters == 0 and entry.queued.withdraw():
            return  # never written; the sender learns it from the answer (handoff.WITHDRAWN)
        self._remember(key, entry)

    def _remember(self, key: bytes, entry: Entry) -> None:
        if self.window <= 0 or self._entries.get(key) is entry:
            return
        self._entries[key] = entry
        entry.queued.done.add_done_callback(lambda done: self._settled(key, entry, done))
        while len(self._entries) > self.max_entries:  # the oldest first
            self._entries.popitem(last=False)

    def _settled(self, key: bytes, entry: Entry, done: asyncio.Future[int]) -> None:
        if self._entries.get(key) is not entry:
            return
        if done.cancelled() or done.exception() is not None:
            del self._entries[key]  # nothing was written: the resend must be written
        else:
            entry.committed_at = time.monotonic()

    async def wait(self, key: bytes, entry: Entry, table: TableName, deadline: float) -> None:
        """Wait until ``entry``'s rows are committed, at most until ``deadline`` (monotonic).

        Returns when they are (the caller answers 200: the request is forgotten). Raises
        ``Unavailable`` when the commit failed, or when the deadline passed: then rows still
        queued (and awaited by no other request) are withdrawn, and rows already in a commit
        are remembered under ``key`` so that the client's resend is not written again."""
        done = entry.queued.done
        if not done.done():
            entry.waiters += 1
            try:
                await asyncio.wait_for(asyncio.shield(done), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
            finally:
                entry.waiters -= 1
        if done.done():
            if self._entries.get(key) is entry:
                del self._entries[key]
            done.result()  # raises Unavailable if the commit failed
            return
        if entry.waiters == 0 and entry.queued.withdraw():
            raise Unavailable(
                f"Storage is slow: the commit to table {table} did not start in time and the "
                "rows were not written; retry the request.",
            )
        self._remember(key, entry)
        raise Unavailable(
            f"Storage is slow: the commit to table {table} has not finished yet; resend the same "
            "request: it will be answered once that commit lands, and not written twice.",
        )
