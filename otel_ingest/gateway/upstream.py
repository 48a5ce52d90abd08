"""The gateway's HTTP/1.1 client to the providers: pooled keep-alive connections, one write
per request, the response body handed over as it arrives.

Why not httpx here: a relayed call is a few small writes and reads, and httpx's stack
(httpx → httpcore → h11 → anyio streams, a cancel scope per read and write) cost more CPU
per call than the gateway's own work, on the event loop every call waits for. This client
is an ``asyncio.Protocol`` with ``httptools``' response parser (llhttp, the C parser
uvicorn already uses for the gateway's own side): bytes arrive in ``data_received``, the
parser splits head, body (de-chunked, content encoding untouched) and end, and the relay
awaits one future per read. TLS is the stdlib ``ssl`` module through the event loop
(httpx's CA bundle and settings: ``httpx.create_ssl_context``).

* **One pool per process**, keyed by scheme, host and port: connections are reused while
  their response was read to the end and the server keeps them alive; an idle connection
  older than ``KEEPALIVE_SECONDS`` (httpx's default) or closed by the server is dropped at
  checkout. A relay that stops early (client gone, error) closes its connection: that is
  how a client's disconnect cancels the provider's work.
* **One write per request** (head and body together): one wake-up of the provider.
* **Timeouts**: connecting within the endpoint's connect timeout, and every wait for
  bytes (the response head, then each read of the body) within its ``timeout_seconds``.
* **Back-pressure**: reading from the provider pauses while more than ``HIGH_WATER`` bytes
  wait for the relay (a slow client slows the provider's stream instead of filling memory).
* **Proxies**: when the environment names one (``HTTPS_PROXY``…), calls go through an
  ``httpx.AsyncClient`` instead, which honours it (``ProxiedUpstream``); the relay sees the
  same ``UpstreamResponse`` interface.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Protocol, cast

import httptools
import httpx

KEEPALIVE_SECONDS = 5.0
MAX_IDLE_PER_HOST = 100
HIGH_WATER = 1 << 20
DEFAULT_PORTS = {"http": 80, "https": 443}


class UpstreamError(Exception):
    """The provider could not be reached, or broke the exchange."""


class ConnectError(UpstreamError):
    pass


class ConnectTimeout(UpstreamError):
    pass


class ReadTimeout(UpstreamError):
    pass


class RemoteProtocolError(UpstreamError):
    """The connection closed or reset before the response ended, or the bytes were not HTTP."""


TIMEOUTS = (ConnectTimeout, ReadTimeout)


class UpstreamResponse(Protocol):
    status_code: int
    headers: list[tuple[bytes, bytes]]  # as received, names as sent

    def header(self, name: bytes) -> str | None: ...

    async def read(self) -> tuple[bytes, bool]:
        """The body bytes that arrived since the last read (waiting for some), and whether
        the response ended with them."""
        ...

    async def aclose(self) -> None: ...


class Target:
    """Where a request goes: the pool key, the Host header and the request target."""

    __slots__ = ("host", "host_header", "key", "path", "port", "scheme")

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORTS[self.scheme]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = shown if parts.port in (None, DEFAULT_PORTS[self.scheme]) else f"{shown}:{self.port}"
        # The client's path arrives percent-decoded; encode what may not stand in a request
        # line, leaving what may (and existing %XX escapes) as they are, as httpx does.
        path = urllib.parse.quote(parts.path or "/", safe="!$&'()*+,;=:@/%-._~")
        query = urllib.parse.quote(parts.query, safe="!$&'()*+,;=:@/?%-._~")
        self.path = path + ("?" + query if query else "")
        self.key = (self.scheme, self.host, self.port)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a provider, carrying one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.error: UpstreamError | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"invalid HTTP from the provider: {exc}"))
            self.close()
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        if self.head_done and not self.complete and self._ends_at_close():
            self.complete = True  # a body delimited by the connection's end
            self.idle_since = -1.0  # never reused
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        self.closed = True
        if not self.complete:
            self._fail(RemoteProtocolError("the provider closed the connection before the response ended"))
        self._wake()

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 103 Early Hints and the like: the real head follows
            self.headers = []
            return
        self.status = status
        self.head_done = True
        # Asked now: once the message is complete the parser has moved on to the next one.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

    # -- used by the pool and the response -----------------------------------------------

    def _ends_at_close(self) -> bool:
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, error: UpstreamError) -> None:
        self._fail(error)
        self._wake()

    async def wait(self, timeout: float, ready: Any, error: UpstreamError) -> None:
        """Wait until ``ready()`` (or a failure), at most ``timeout`` seconds per wait."""
        while not ready() and self.error is None:
            self.waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._timed_out, error)
            try:
                await self.waiter
            finally:
                timer.cancel()
                self.waiter = None
        if self.error is not None and not ready():
            raise self.error

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(data)

    def take(self) -> bytes:
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.idle_since >= 0 and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Response:
    __slots__ = ("_connection", "_pool", "_target", "_timeout", "headers", "status_code")

    def __init__(self, pool: Upstream, target: Target, connection: _Connection, timeout: float) -> None:
        self._pool, self._target, self._connection, self._timeout = pool, target, connection, timeout
        self.status_code = connection.status
        self.headers = connection.headers

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    async def read(self) -> tuple[bytes, bool]:
        connection = self._connection
        if connection is None:
            return b"", True
        await connection.wait(
            self._timeout,
            lambda: connection.chunks or connection.complete,
            ReadTimeout("the provider sent nothing within the endpoint's timeout"),
        )
        return connection.take(), connection.complete and not connection.chunks

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None  # type: ignore[assignment]
        if connection is not None:
            self._pool.release(self._target, connection)


class Upstream:
    """The gateway's connections to the providers."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self.ssl_context: ssl.SSLContext | None = None
        proxies = urllib.request.getproxies()
        self.proxied = ProxiedUpstream() if any(s in proxies for s in ("http", "https", "all")) else None

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
        connect_timeout: float,
    ) -> UpstreamResponse:
        """Send the request as given (adding only Host and Content-Length); returns once
        the response head arrived. The body is read with ``read()``; ``aclose()`` always."""
        if self.proxied is not None:
            return await self.proxied.send(method, url, headers, body, timeout, connect_timeout)
        target = Target(url)
        lines = [f"{method} {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} holds a line break")
            lines.append(f"{name}: {value}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}\r\n")
        lines.append("\r\n")
        request = "".join(lines).encode("latin-1") + body
        connection = await self._checkout(target, connect_timeout)
        try:
            connection.send(request)
            await connection.wait(
                timeout,
                lambda: connection.head_done,
                ReadTimeout("the provider did not answer within the endpoint's timeout"),
            )
        except BaseException:
            connection.close()
            raise
        return _Response(self, target, connection, timeout)

    async def _checkout(self, target: Target, connect_timeout: float) -> _Connection:
        idle = self.idle.get(target.key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        if target.scheme == "https" and self.ssl_context is None:
            self.ssl_context = httpx.create_ssl_context()
            self.ssl_context.set_alpn_protocols(["http/1.1"])
        try:
            async with asyncio.timeout(connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop),
                    target.host,
                    target.port,
                    ssl=self.ssl_context if target.scheme == "https" else None,
                    server_hostname=target.host if target.scheme == "https" else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"could not connect within {connect_timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        return protocol

    def release(self, target: Target, connection: _Connection) -> None:
        """Back to the pool when its response was read to the end, else closed."""
        if not connection.reusable():
            connection.close()
            return
        idle = self.idle.setdefault(target.key, deque())
        if len(idle) >= MAX_IDLE_PER_HOST:
            idle.popleft().close()
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        for idle in self.idle.values():
            while idle:
                idle.pop().close()
        if self.proxied is not None:
            await self.proxied.aclose()


class _ProxiedResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = [(n, v) for n, v in response.headers.raw]
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()

    def header(self, name: bytes) -> str | None:
        value: str | None = self._response.headers.get(name.decode())
        return value

    async def read(self) -> tuple[bytes, bool]:
        try:
            return await anext(self._chunks), False
        except StopAsyncIteration:
            return b"", True
        except httpx.TimeoutException as exc:
            raise ReadTimeout(type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise RemoteProtocolError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class ProxiedUpstream:
    """Calls through the proxy the environment names, with httpx (which honours it). Its
    cookie jar refuses every cookie: one principal's ``Set-Cookie`` must not go out with
    everyone's next call."""

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(
            follow_redirects=False, cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        )

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
        connect_timeout: float,
    ) -> UpstreamResponse:
        request = self.client.build_request(
            method, url, headers=headers, content=body, timeout=httpx.Timeout(timeout, connect=connect_timeout)
        )
        try:
            return _ProxiedResponse(await self.client.send(request, stream=True))
        except httpx.ConnectTimeout as exc:
            raise ConnectTimeout(type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise ReadTimeout(type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise ConnectError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self.client.aclose()
