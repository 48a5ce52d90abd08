"""The HTTP/1.1 connection: uvicorn's httptools protocol with bounds on the request head,
on the number of connections, and without trailer fields.

httptools keeps a request line and headers in memory, without limit, until they are
complete; only then does the application see the request. And uvicorn waits for a head
for ever. So one connection sending an endless header could take all the server's memory
(300 MiB of header grew the process by 600 MiB), and connections that send a head a byte
at a time could hold every file descriptor. This protocol answers 431 once a head passes
``MAX_HEAD_BYTES`` and 408 when it is not complete ``HEAD_TIMEOUT_SECONDS`` after the
connection opened or the previous response was sent.

Every connection holds a file descriptor. Past the descriptor limit the kernel refuses
``accept`` and every new client gets a reset, with nothing in the log; so past
``max_connections`` a new connection is answered 503 at once and closed, and the refusals
are logged.

httptools reports the fields of a chunked body's trailer through the same callback as
header fields, and uvicorn appended them to the request headers: an ``Authorization``
sent in a trailer authenticated the request. Trailer fields are dropped (RFC 9110 §6.5.1:
a recipient must not merge them into the header section).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from google.rpc import code_pb2
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from otel_ingest import wire

log = logging.getLogger("otel_ingest.connection")

# Real exporters send well under 4 KiB of headers; nginx allows 32 KiB by default.
MAX_HEAD_BYTES = 64 * 1024
# Exporters write a request at once; nginx's client_header_timeout is 60 s.
HEAD_TIMEOUT_SECONDS = 10.0
# After refusing a head, what the client still sends is read and dropped for this long
# before the connection closes: closing with unread data would reset the connection, and
# the client would see the reset instead of the answer.
LINGER_SECONDS = 2.0
# Connections refused for the connection limit linger too, but only this many at once;
# beyond that they are closed without an answer, so a flood cannot use the descriptors.
MAX_LINGERING_REFUSALS = 64
REFUSAL_LOG_SECONDS = 10.0


class BoundedHeadProtocol(HttpToolsProtocol):
    """``uvicorn --http`` protocol bounding the size and the arrival time of request heads."""

    # Refusals since the last log line about them, and when that line was written.
    _refusals: ClassVar[int] = 0
    _refusals_logged_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, max_connections: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        # Bytes received since the current request head began; None while a body arrives
        # (and its trailer, if any).
        self._head_bytes: int | None = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.max_connections
        if limit is not None and len(self.connections) > limit:
            self._refuse_connection(limit)
            return
        self._start_head_timer()

    def _refuse_connection(self, limit: int) -> None:
        cls = BoundedHeadProtocol
        cls._refusals += 1
        now = time.monotonic()
        if now - cls._refusals_logged_at >= REFUSAL_LOG_SECONDS:
            log.warning(
                "Refused %d connections in the last %g s: %d are open and the limit is %d (--max-connections; "
                "see the file-descriptor limit in docs/operations.md).",
                cls._refusals,
                REFUSAL_LOG_SECONDS,
                len(self.connections) - 1,
                limit,
            )
            cls._refusals, cls._refusals_logged_at = 0, now
        if len(self.connections) > limit + min(MAX_LINGERING_REFUSALS, limit // 4):
            self._refused = True
            self.transport.abort()
            return
        self._answer(
            503,
            code_pb2.UNAVAILABLE,
            f"The server has {limit:,} open connections, its limit; retry in a moment.",
            b"retry-after: 1\r\n",
        )

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_bytes is None:
            return  # a trailer field, after the body: never a request header
        super().on_header(name, value)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped
        if self._head_bytes is not None:
            # Judged on what came before this chunk, so a head within the limit is never
            # refused because its last chunk also carries body bytes. A hostile head can
            # pass the limit by one chunk (the event loop reads at most 256 KiB at once).
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431,
                    f"The request line and headers are larger than {MAX_HEAD_BYTES:,} bytes; "
                    "send fewer or smaller headers.",
                )
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # the next request on this connection starts with its head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The client may now send its next request. A request already received
        # (pipelined) is now running and needs no timer.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._head_bytes is not None and not self.transport.is_closing():
            self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            self._refuse(
                408,
                f"The request line and headers did not arrive within {HEAD_TIMEOUT_SECONDS:g} s; "
                "send each request at once.",
            )
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request head ``status``, then linger and close."""
        log.warning("Refused a request head from %s (%d): %s", self.client, status, message)
        code = code_pb2.RESOURCE_EXHAUSTED if status == 431 else code_pb2.DEADLINE_EXCEEDED
        self._answer(status, code, message)

    def _answer(self, status: int, code: int, message: str, headers: bytes = b"") -> None:
        """Answer ``status`` with a JSON google.rpc.Status, then linger and close."""
        self._refused = True
        self._stop_head_timer()
        body = wire.encode_status(code, message, "json")
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\n"
            + headers
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
