"""The pooled HTTP client the gateway forwards calls with.

One connection pool for the process: connections to each provider are kept alive and
reused (a TLS handshake per call would cost more than everything else the gateway does).

Calls go straight to httpx's transport (``Upstream.send``), not through ``AsyncClient.send``:
the client's per-call machinery — merging its default headers, cookies, auth and redirect
flows, event hooks — cost more CPU than the rest of the relay and added what the gateway
must not: ``user-agent: python-httpx`` when a client sent none, and a cookie jar shared by
every principal (a provider's ``Set-Cookie`` for one person went out with everyone's next
call). Only when the environment names a proxy (``HTTPS_PROXY``…) does the client path run,
since it is what honours proxies; its cookie jar refuses every cookie.

Its connections send a request in **one write**. httpcore writes the request head and the
body separately; each write to a loopback or LAN peer wakes the provider's process, which
reads the head and goes back to sleep until the body comes. Holding the writes until the
connection starts reading the response (``CoalescingStream``) sends head and body in a
single segment: one wake-up of the provider instead of two, measured in bench/gateway.py.
The bytes sent are the same; only their grouping into system calls changes.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpcore
import httpx

MAX_CONNECTIONS = 1000
MAX_KEEPALIVE_CONNECTIONS = 100


class CoalescingStream(httpcore.AsyncNetworkStream):
    """A network stream whose writes are sent together just before the next read."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self.stream = stream
        self.pending: list[bytes] = []

    async def flush(self, timeout: float | None = None) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            await self.stream.write(data, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self.pending.append(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self.flush(timeout)
        return await self.stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self.pending.clear()
        await self.stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        await self.flush(timeout)
        return CoalescingStream(await self.stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class CoalescingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own network backend, with every connection wrapped in CoalescingStream."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return CoalescingStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return CoalescingStream(await self.backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class Upstream:
    """The gateway's connections to the providers."""

    def __init__(self) -> None:
        self.transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS)
        )
        # httpx builds its httpcore pool without a way to pass a network backend; the pool
        # reads this attribute for every new connection (httpcore 1.x).
        pool: Any = self.transport._pool
        pool._network_backend = CoalescingBackend(pool._network_backend)
        self.client = httpx.AsyncClient(
            transport=self.transport,
            # The client's request decides; the gateway never follows a redirect itself.
            follow_redirects=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        proxies = urllib.request.getproxies()
        self.direct = not any(scheme in proxies for scheme in ("http", "https", "all"))

    @staticmethod
    def request(
        method: str, url: str, headers: list[tuple[str, str]], content: bytes, timeout: httpx.Timeout
    ) -> httpx.Request:
        """The request exactly as given (httpx adds only Host and Content-Length)."""
        return httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": timeout.as_dict()})

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body is read by the caller (``aiter_raw``)."""
        if not self.direct:
            return await self.client.send(request, stream=True)
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.client.aclose()  # closes the transport and its connections
