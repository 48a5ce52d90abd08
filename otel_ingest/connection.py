"""The HTTP/1.1 connection: uvicorn's httptools protocol with bounds on the request head.

httptools keeps a request line and headers in memory, without limit, until they are
complete; only then does the application see the request. And uvicorn waits for a head
for ever. So one connection sending an endless header could take all the server's memory
(300 MiB of header grew the process by 600 MiB), and connections that send a head a byte
at a time could hold every file descriptor. This protocol answers 431 once a head passes
``MAX_HEAD_BYTES`` and 408 when it is not complete ``HEAD_TIMEOUT_SECONDS`` after the
connection opened or the previous response was sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

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


class BoundedHeadProtocol(HttpToolsProtocol):
    """``uvicorn --http`` protocol bounding the size and the arrival time of request heads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes received since the current request head began; None while a body arrives.
        self._head_bytes: int | None = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

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
        """Answer ``status`` with a JSON google.rpc.Status, then linger and close."""
        self._refused = True
        self._stop_head_timer()
        log.warning("Refused a request head from %s (%d): %s", self.client, status, message)
        code = code_pb2.RESOURCE_EXHAUSTED if status == 431 else code_pb2.DEADLINE_EXCEEDED
        body = wire.encode_status(code, message, "json")
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
