"""Storage that fails on purpose: an HTTP proxy in front of a real S3 server (moto) that
forwards chosen requests and then loses their answers.

It makes the failures a write path must survive without writing rows twice: the
object store *did* store the commit file, but the writer never hears so (the
connection is reset, or a 5xx comes back instead of the 200). Nothing in deltalake is
mocked: delta-rs talks HTTP to the proxy as it would to S3, and the proxy talks HTTP
to moto, which really stores every object.

    with FaultProxy(upstream) as proxy:          # upstream: "http://127.0.0.1:PORT"
        proxy.fail(COMMIT_PUT, times=1)          # the next commit lands, its answer is lost
        ... point AWS_ENDPOINT_URL at proxy.url ...
        proxy.events                             # what passed, and what was faulted

Used by tests/test_exactly_once.py; reusable for any test that needs a flaky store.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

# A Delta commit: the PUT of _delta_log/<version>.json (delta-rs writes it with
# If-None-Match: *, so a second PUT of the same version is refused with 412).
COMMIT_PUT = re.compile(r"^PUT .*/_delta_log/\d{20}\.json(\?.*)?$")

# "reset": the request reaches the store, then the client's connection is reset
# before any answer. "status": the request reaches the store, and the client gets
# ``status`` instead of the store's answer. "refuse": the client gets ``status`` and the
# request never reaches the store (an ordinary, unambiguous failure).
Mode = Literal["reset", "status", "refuse"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    pattern: re.Pattern[str]
    mode: Mode
    times: int
    status: int = 503


@dataclass
class Event:
    """One request that passed through the proxy."""

    method: str
    path: str
    upstream_status: int | None  # None: not forwarded
    faulted: Mode | None


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class FaultProxy:
    """A threaded HTTP/1.1 proxy on a free loopback port; ``fail`` arms faults."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self._upstream = (parts.hostname, parts.port)
        self._state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, pattern: re.Pattern[str], times: int = 1, mode: Mode = "reset", status: int = 503) -> None:
        """The next ``times`` requests whose ``"METHOD /path"`` matches ``pattern`` fail so."""
        with self._state.lock:
            self._state.faults.append(Fault(pattern, mode, times, status))

    def clear(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    @property
    def events(self) -> list[Event]:
        with self._state.lock:
            return list(self._state.events)

    def faulted(self) -> list[Event]:
        return [e for e in self.events if e.faulted]

    def wait_for(self, predicate: object, timeout: float = 60) -> list[Event]:
        """Block until ``predicate(events)`` is true (or fail after ``timeout`` s)."""
        assert callable(predicate)
        with self._state.changed:
            if not self._state.changed.wait_for(lambda: predicate(self._state.events), timeout):
                raise AssertionError(f"proxy never saw the expected requests; saw {self._state.events}")
            return list(self._state.events)

    def _take_fault(self, request_line: str) -> Fault | None:
        with self._state.lock:
            for fault in self._state.faults:
                if fault.times > 0 and fault.pattern.search(request_line):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, event: Event) -> None:
        with self._state.changed:
            self._state.events.append(event)
            self._state.changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream: http.client.HTTPConnection | None = None

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(body)
                        body += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
                    if self.upstream is None:
                        self.upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                    try:
                        self.upstream.request(self.command, self.path, body=body, headers=headers)
                        response = self.upstream.getresponse()
                        data = response.read()
                        return response.status, response.getheaders(), data
                    except (ConnectionError, http.client.HTTPException):
                        self.upstream.close()
                        self.upstream = None
                        if attempt == 2:
                            raise
                raise AssertionError("unreachable")

            def _reset(self) -> None:
                """Close the client's connection with a TCP reset: no answer at all."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response_only(status)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                path = self.path
                fault = proxy._take_fault(f"{self.command} {path}")
                if fault is not None and fault.mode == "refuse":
                    proxy._record(Event(self.command, path, None, "refuse"))
                    self._answer(fault.status, [("Content-Type", "application/xml")], _error_xml(fault.status))
                    return
                status, headers, data = self._forward(body)
                proxy._record(Event(self.command, path, status, fault.mode if fault else None))
                if fault is None:
                    self._answer(status, headers, data)
                elif fault.mode == "reset":
                    self._reset()
                else:
                    self._answer(fault.status, [("Content-Type", "application/xml")], _error_xml(fault.status))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    if self.upstream is not None:
                        self.upstream.close()

        return Handler


def _error_xml(status: int) -> bytes:
    code = {500: "InternalError", 503: "SlowDown"}.get(status, "ServiceUnavailable")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by tests/faults.py</Message></Error>"
    ).encode()
