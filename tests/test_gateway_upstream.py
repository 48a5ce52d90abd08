"""The gateway's HTTP/1.1 client (otel_ingest/gateway/upstream.py) against a scripted
server on loopback: keep-alive reuse, every way a body can end, a server closing an idle
connection, timeouts, resets, 1xx heads, and a relay that stops early closing its
connection. The gateway tests cover the same client end to end; these pin the pool."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otel_ingest.gateway.upstream import (
    HIGH_WATER,
    ConnectError,
    ReadTimeout,
    RemoteProtocolError,
    Upstream,
    UpstreamResponse,
)

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"


class Scripted:
    """A loopback server answering each request by its path; counts connections and
    notes when a client closed one."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.client_closed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                path = head.split(b" ")[1]
                if path.startswith(b"http://"):  # absolute form: this server is a proxy
                    path = b"/" + path.split(b"/", 3)[3]
                if path == b"/chunked":
                    writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                elif path == b"/length":
                    writer.write(HEAD + b"content-length: 5\r\n\r\nhello")
                elif path == b"/until-close":
                    writer.write(HEAD + b"\r\nhello, until the end")
                    await writer.drain()
                    break
                elif path == b"/close-when-idle":
                    writer.write(HEAD + b"content-length: 2\r\n\r\nok")
                    await writer.drain()
                    break  # as a server whose keep-alive timeout expired
                elif path == b"/early-hints":
                    writer.write(
                        b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + HEAD + b"content-length: 2\r\n\r\nok"
                    )
                elif path == b"/reset":
                    writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    await writer.drain()
                    writer.transport.abort()
                    return
                elif path == b"/stall":
                    writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    await writer.drain()
                    await reader.read()  # until the client gives up and closes
                    self.client_closed.set()
                    break
                elif path == b"/endless":
                    writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n")
                    try:
                        while True:
                            writer.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
                            await writer.drain()
                    except ConnectionError:
                        self.client_closed.set()
                        return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
        finally:
            writer.close()


async def body_of(response: UpstreamResponse) -> bytes:
    parts = []
    try:
        while True:
            chunk, done = await response.read()
            parts.append(chunk)
            if done:
                return b"".join(parts)
    finally:
        await response.aclose()


def run(test: Callable[[Upstream, Scripted, str], Awaitable[None]]) -> None:
    async def main() -> None:
        scripted = Scripted()
        url = await scripted.start()
        upstream = Upstream()
        try:
            await asyncio.wait_for(test(upstream, scripted, url), 30)
        finally:
            await upstream.aclose()  # the handlers see their connections close, and end
            assert scripted.server is not None
            scripted.server.close()
            await asyncio.wait(scripted.handlers, timeout=10)
            await asyncio.sleep(0)  # let the closed transports release their sockets

    asyncio.run(main())


def test_bodies_end_every_way_and_kept_alive_connections_are_reused() -> None:
    async def test(upstream: Upstream, scripted: Scripted, url: str) -> None:
        for _ in range(3):
            response = await upstream.send("POST", url + "/chunked", [("x-a", "1")], b'{"m":1}', 5, 5)
            assert response.status_code == 200 and response.header(b"content-type") == "text/event-stream"
            assert await body_of(response) == b"hello world"  # de-chunked, as httpx's aiter_raw
            assert await body_of(await upstream.send("POST", url + "/length", [], b"{}", 5, 5)) == b"hello"
        assert scripted.connections == 1  # one connection, six calls
        head, _, body = scripted.requests[0].partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[:3] == [b"POST /chunked HTTP/1.1", f"host: {url[7:]}".encode(), b"x-a: 1"]
        assert b"content-length: 7" in head and body == b'{"m":1}'
        early = await upstream.send("GET", url + "/early-hints", [], b"", 5, 5)
        assert early.status_code == 200 and early.header(b"link") is None and await body_of(early) == b"ok"
        # A body that ends with the connection: complete, and that connection is not reused.
        response = await upstream.send("POST", url + "/until-close", [], b"{}", 5, 5)
        assert await body_of(response) == b"hello, until the end"
        # A server that closes a kept-alive connection: the pool drops it, the next call connects anew.
        assert await body_of(await upstream.send("POST", url + "/close-when-idle", [], b"{}", 5, 5)) == b"ok"
        pooled = upstream.idle[("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))]
        while pooled and not pooled[-1].closed:  # wait for the server's FIN to arrive
            await asyncio.sleep(0.01)
        before = scripted.connections
        assert await body_of(await upstream.send("POST", url + "/length", [], b"{}", 5, 5)) == b"hello"
        assert scripted.connections == before + 1

    run(test)


def test_failures_are_upstream_errors_and_a_stopped_relay_closes_its_connection() -> None:
    async def test(upstream: Upstream, scripted: Scripted, url: str) -> None:
        reset = await upstream.send("POST", url + "/reset", [], b"{}", 5, 5)
        assert (await reset.read())[0] == b"hello"  # what arrived before the reset is delivered
        try:
            await reset.read()
            raise AssertionError("a reset mid-body must raise")
        except RemoteProtocolError:
            pass
        await reset.aclose()
        stall = await upstream.send("POST", url + "/stall", [], b"{}", 0.3, 5)
        assert (await stall.read())[0] == b"hello"
        try:
            await stall.read()
            raise AssertionError("a stalled body must time out")
        except ReadTimeout:
            pass
        await stall.aclose()
        await scripted.client_closed.wait()  # the stalled provider saw the connection close
        scripted.client_closed.clear()
        # A relay that stops reading (its client left): back-pressure holds the provider,
        # then closing the response closes the connection: the provider's send fails.
        endless = await upstream.send("POST", url + "/endless", [], b"{}", 5, 5)
        received = 0
        while received < 4 * HIGH_WATER:
            received += len((await endless.read())[0])
        await endless.aclose()
        await scripted.client_closed.wait()
        try:
            await upstream.send("POST", "http://127.0.0.1:9/none", [], b"{}", 5, 5)  # discard port: refused
            raise AssertionError("a refused connection must raise")
        except ConnectError:
            pass

    run(test)


def test_with_a_proxy_in_the_environment_calls_go_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def test(_: Upstream, scripted: Scripted, url: str) -> None:
        monkeypatch.setenv("HTTP_PROXY", url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        upstream = Upstream()
        try:
            assert upstream.proxied is not None
            response = await upstream.send("POST", "http://provider.invalid/chunked", [("x-a", "1")], b"{}", 5, 5)
            assert response.status_code == 200 and response.header(b"content-type") == "text/event-stream"
            assert await body_of(response) == b"hello world"
            assert scripted.requests[-1].startswith(b"POST http://provider.invalid/chunked HTTP/1.1\r\n")
        finally:
            await upstream.aclose()

    run(test)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own authority, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otel-ingest test provider")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "provider.pem", directory / "provider.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_https_providers_are_verified_and_their_connections_kept_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real providers are https: the stdlib TLS path, with the CA bundle httpx would use
    (SSL_CERT_FILE honoured), verifies the provider and reuses its connection."""
    cert_file, key_file = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)

    async def main() -> None:
        scripted = Scripted()
        scripted.server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0, ssl=server_context)
        url = f"https://127.0.0.1:{scripted.server.sockets[0].getsockname()[1]}"
        untrusting, trusting = Upstream(), None
        try:
            # Not signed by a known authority: refused before any request is sent.
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.send("POST", url + "/length", [], b"{}", 5, 5)
            assert scripted.requests == []
            monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
            trusting = Upstream()
            for _ in range(3):
                response = await trusting.send("POST", url + "/chunked", [("x-a", "1")], b'{"m":1}', 5, 5)
                assert response.status_code == 200 and await body_of(response) == b"hello world"
            assert (
                len(scripted.requests) == 3 and scripted.connections == 1
            )  # one kept alive (the refused handshake never got a handler)
            assert scripted.requests[0].split(b"\r\n")[:2] == [b"POST /chunked HTTP/1.1", f"host: {url[8:]}".encode()]
        finally:
            await untrusting.aclose()
            if trusting is not None:
                await trusting.aclose()
            scripted.server.close()
            if scripted.handlers:
                await asyncio.wait(scripted.handlers, timeout=10)
            await asyncio.sleep(0)

    asyncio.run(asyncio.wait_for(main(), 30))
