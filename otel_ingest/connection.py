"""The HTTP/1.1 connection: uvicorn's httptools protocol with a bound on the request head.

httptools keeps a request line and headers in memory, without limit, until they are
complete; only then does the application see the request. A single connection sending
an endless header (no token needed) could so take all the server's memory: 300 MiB of
header grew the process by 600 MiB. This protocol counts the bytes of each request head
as they arrive and answers 431 once they pass ``MAX_HEAD_BYTES``.
"""

from __future__ import annotations

import logging
from typing import Any

from google.rpc import code_pb2
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from otel_ingest import wire

log = logging.getLogger("otel_ingest.connection")

# Real exporters send well under 4 KiB of headers; nginx allows 32 KiB by default.
MAX_HEAD_BYTES = 64 * 1024
# After the 431, what the client still sends is read and dropped for this long before the
# connection closes: closing with unread data would reset it, and the client would see a
# reset instead of the answer.
LINGER_SECONDS = 2.0


class BoundedHeadProtocol(HttpToolsProtocol):
    """``uvicorn --http`` protocol refusing request heads larger than ``MAX_HEAD_BYTES``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes received since the current request head began; None while a body arrives.
        self._head_bytes: int | None = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431: dropped
        if self._head_bytes is not None:
            # Judged on what came before this chunk, so a head within the limit is never
            # refused because its last chunk also carries body bytes. A hostile head can
            # pass the limit by one chunk (the event loop reads at most 256 KiB at once).
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # the next request on this connection starts with its head

    def _refuse_head(self) -> None:
        self._refused = True
        message = (
            f"The request line and headers are larger than {MAX_HEAD_BYTES:,} bytes; send fewer or smaller headers."
        )
        log.warning("Refused a request head of more than %d bytes from %s.", MAX_HEAD_BYTES, self.client)
        body = wire.encode_status(code_pb2.RESOURCE_EXHAUSTED, message, "json")
        self.transport.write(
            STATUS_LINE[431]
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
