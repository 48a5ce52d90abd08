"""The ASGI application: routes, lifespan, and the one place errors become HTTP statuses.

An export request flows one way: authenticate and authorize (auth) → read and
decompress the body and decode the OTLP message (wire) → flatten it to columns
(flatten) → commit them (writer) → answer.

Operators get ``/readyz`` and ``/metrics`` on a separate ops listener (``--ops-host``,
``--ops-port``; loopback by default, as the Collector does): they name every table and
the warehouse, which the clients need not see. ``/healthz`` is on both and says only "ok".
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from google.rpc import code_pb2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_ingest import decode, wire
from otel_ingest.auth import Authenticator
from otel_ingest.budget import DECODE_OVERHEAD, MemoryBudget
from otel_ingest.config import Settings, is_loopback
from otel_ingest.errors import (
    BadTableName,
    ClientGone,
    DecodeError,
    Forbidden,
    IngestError,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    SchemaMismatch,
    TableNotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from otel_ingest.handoff import DIRECTORY_VARIABLE as HANDOFF_DIRECTORY
from otel_ingest.handoff import Handoff
from otel_ingest.maintenance import maintain
from otel_ingest.monitoring import Monitoring, access_log, log_field
from otel_ingest.readiness import Readiness
from otel_ingest.resend import Entry, Reply, Resends, request_key
from otel_ingest.schema import SIGNALS, Signal
from otel_ingest.tables import TableName, Warehouse, table_set
from otel_ingest.writer import CommitPolicy, Writer

log = logging.getLogger("otel_ingest.app")

TABLE_HEADER = "X-Databricks-UC-Table-Name"  # header lookups are case-insensitive
HASH_ON_LOOP_BYTES = 1 << 20  # a request's key (resend.py) is computed off the event loop above this

# Domain error → (HTTP status, google.rpc.Code). The only mapping of errors to HTTP.
STATUSES: dict[type[IngestError], tuple[int, int]] = {
    DecodeError: (400, code_pb2.INVALID_ARGUMENT),
    BadTableName: (400, code_pb2.INVALID_ARGUMENT),
    SchemaMismatch: (400, code_pb2.FAILED_PRECONDITION),
    Unauthorized: (401, code_pb2.UNAUTHENTICATED),
    Forbidden: (403, code_pb2.PERMISSION_DENIED),
    TableNotFound: (404, code_pb2.NOT_FOUND),
    RequestTimeout: (408, code_pb2.DEADLINE_EXCEEDED),
    # nginx's "client closed request": nobody reads it, but logs and metrics show it.
    ClientGone: (499, code_pb2.CANCELLED),
    PayloadTooLarge: (413, code_pb2.RESOURCE_EXHAUSTED),
    UnsupportedMediaType: (415, code_pb2.INVALID_ARGUMENT),
    RateLimited: (429, code_pb2.RESOURCE_EXHAUSTED),
    Unavailable: (503, code_pb2.UNAVAILABLE),
}


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that hangs up midway is a ClientGone."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise ClientGone("The client closed the connection before the whole body arrived.") from exc


def status_response(
    status: int, code: int, message: str, encoding: wire.Encoding, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        wire.encode_status(code, message, encoding),
        status_code=status,
        media_type=wire.CONTENT_TYPES[encoding],
        headers=headers,
    )


def _error_encoding(content_type: str | None) -> wire.Encoding:
    """Errors follow the request's encoding; unknown types get JSON, readable by a person."""
    try:
        return wire.media_type(content_type)
    except UnsupportedMediaType:
        return "json"


def error_response(error: IngestError, encoding: wire.Encoding) -> Response:
    status, code = next(v for cls, v in STATUSES.items() if isinstance(error, cls))
    headers = {}
    if isinstance(error, (Unavailable, RateLimited)):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="otel-ingest"'
    return status_response(status, code, str(error), encoding, headers)


@dataclass
class Services:
    """What every endpoint shares; the writer exists only while the app runs."""

    settings: Settings
    warehouse: Warehouse
    authenticator: Authenticator
    budget: MemoryBudget
    monitoring: Monitoring
    resends: Resends
    readiness: Readiness
    writer: Writer | None = None


class Ingest:
    """The export endpoint of one signal."""

    def __init__(self, signal: Signal, services: Services) -> None:
        self.signal = signal
        self.services = services

    def _table_name(self, request: Request) -> TableName:
        raw = request.headers.get(TABLE_HEADER) or self.services.settings.default_table(self.signal)
        if not raw:
            raise BadTableName(
                f"The {TABLE_HEADER} header is missing; set it to catalog.schema.table "
                f"(or start the server with --default-{self.signal}-table)."
            )
        return TableName.parse(raw)

    async def __call__(self, request: Request) -> Response:
        with self.services.monitoring.requests_in_flight.track_inprogress():
            return await self._answer(request)

    async def _answer(self, request: Request) -> Response:
        started = time.perf_counter()
        services = self.services
        commit_deadline = services.settings.commit_deadline
        deadline = time.monotonic() + commit_deadline if commit_deadline > 0 else math.inf
        content_type = request.headers.get("content-type")
        encoding = _error_encoding(content_type)
        principal_name, table, rows, rejected = "-", "-", 0, 0
        try:
            with services.budget.reservation() as held:
                principal = services.authenticator.authenticate(request.headers.get("authorization"))
                principal_name = principal.name
                encoding = wire.media_type(content_type)
                name = self._table_name(request)
                table = str(name)
                services.authenticator.authorize(principal, name)
                services.authenticator.admit(principal)
                writer = services.writer
                assert writer is not None, "the lifespan starts the writer before requests arrive"
                await writer.check(name, self.signal)  # 404/400 before the body is read
                settings = services.settings
                limit = settings.max_body_bytes
                raw = await wire.read_body(
                    _body(request), request.headers.get("content-length"), limit, held, settings.read_timeout
                )
                services.authenticator.admit(principal, len(raw))
                coding = request.headers.get("content-encoding")
                # Decompression, parsing and flattening run in worker threads: a large body
                # never holds the event loop, so other requests and /healthz are answered meanwhile.
                if coding:
                    body = await asyncio.to_thread(wire.decompress, raw, coding, limit)
                else:
                    body = wire.decompress(raw, coding, limit)
                # Held until answered: the decoded message, then its rows waiting for the commit.
                decoded_bytes = len(raw) + len(body) * DECODE_OVERHEAD
                held.resize(decoded_bytes)
                size = len(body)
                # A byte-identical resend of a request answered 503 at its deadline joins that
                # request's commit, or is answered as it was once that committed (resend.py).
                if size > HASH_ON_LOOP_BYTES:  # ~1.5 ms a MiB: a large body is hashed off the event loop
                    key = await asyncio.to_thread(request_key, name, self.signal, body)
                else:
                    key = request_key(name, self.signal, body)
                known = services.resends.find(key)
                if known is None:
                    # What the rows may take: the native decoder hands a body past it to the
                    # Python path, which charges and refuses it as below (413 or 503).
                    # Bounded by 16x the body too: rows past that (a large resource copied into
                    # every row) are left to the Python path, which refuses them before building.
                    free = min(services.budget.limit - services.budget.used, 16 * size + (8 << 20))
                    flattened, encoding = await asyncio.to_thread(decode.decode, self.signal, body, encoding, free)
                    reply = Reply(flattened.rows, flattened.rejected, flattened.first_error, encoding)
                    del raw, body
                    # Values shared by many rows are copied into each when the commit builds
                    # its Arrow batch: charged now, so a small request cannot expand unbounded.
                    held.resize(decoded_bytes + flattened.repeated_bytes)
                    if flattened.rows:
                        identity = Resends.identity(key, deadline, reply)
                        queued = await writer.submit(
                            name, self.signal, flattened.columns, size, principal.name, identity
                        )
                        known = Entry(reply, queued)
                    else:
                        # Auto-create: the table is made once a valid body has arrived.
                        await writer.check(name, self.signal, principal.name)
                    del flattened
                else:
                    reply = known.reply
                    services.resends.recognised(name, known)
                rows, rejected = reply.rows, reply.rejected
                if known is not None:
                    await services.resends.wait(key, known, name, deadline)
            response = Response(
                wire.encode_response(self.signal, reply.rejected, reply.first_error, reply.encoding),
                media_type=wire.CONTENT_TYPES[reply.encoding],
            )
        except IngestError as error:
            response = error_response(error, encoding)
            rows = 0
        self._record(request, response.status_code, principal_name, table, rows, rejected, started)
        return response

    def _record(
        self, request: Request, status: int, principal: str, table: str, rows: int, rejected: int, started: float
    ) -> None:
        """Metrics and the access log line (which never holds the token)."""
        seconds = time.perf_counter() - started
        monitoring = self.services.monitoring
        monitoring.requests.labels(self.signal, request.url.path, str(status)).inc()
        monitoring.request_seconds.labels(self.signal).observe(seconds)
        if rejected and status == 200:
            monitoring.rows_rejected.labels(table).inc(rejected)
        client = request.client.host if request.client else "-"
        # Escaped: the client address may come from X-Forwarded-For, principal names from
        # the token file; neither may forge a field or a line.
        access_log.info(
            "%s %s principal=%s table=%s status=%d rows=%d rejected=%d ms=%.1f",
            log_field(client),
            log_field(request.url.path),
            log_field(principal),
            log_field(table),
            status,
            rows,
            rejected,
            seconds * 1000,
        )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and other routing errors, in the same Status form as the rest."""
    assert isinstance(exc, HTTPException)
    message, code = {
        404: (
            f"There is no endpoint at {request.url.path}; use /api/2.0/otel/v1/{{metrics,logs,traces}}.",
            code_pb2.NOT_FOUND,
        ),
        405: (f"{request.method} is not allowed here; OTLP exports are sent with POST.", code_pb2.UNIMPLEMENTED),
    }.get(exc.status_code, (str(exc.detail), code_pb2.INVALID_ARGUMENT))
    encoding = _error_encoding(request.headers.get("content-type"))
    return status_response(exc.status_code, code, message, encoding, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("Unexpected error while handling %s %s", request.method, request.url.path, exc_info=exc)
    return status_response(
        500,
        code_pb2.INTERNAL,
        "Internal server error; the data was not stored. See the server log.",
        _error_encoding(request.headers.get("content-type")),
    )


def _json(document: dict[str, object], status: int = 200) -> Response:
    return Response(json.dumps(document), status_code=status, media_type="application/json")


async def _healthz(request: Request) -> Response:
    return _json({"status": "ok"})


def _ops_routes(services: Services) -> list[Route]:
    async def readyz(request: Request) -> Response:
        if services.writer is None:
            return _json({"status": "starting"}, 503)
        ready, document = await services.readiness.check()
        if ready:
            document["warehouse"] = services.warehouse.root
        return _json(document, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(services.monitoring.exposition(), media_type="text/plain; version=0.0.4")

    return [Route("/healthz", _healthz), Route("/readyz", readyz), Route("/metrics", metrics)]


_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(?::\d*)?")


def loopback_host(value: str) -> bool:
    """Whether a Host header names this machine: localhost (and *.localhost, RFC 6761),
    or a loopback address, with or without a port."""
    match = _HOST_PORT.fullmatch(value.strip())
    if match is None:
        return False
    host = match["host"].lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


class LoopbackHostOnly:
    """Refuse requests addressed to a name that is not this machine's (DNS rebinding).

    A web page can make a browser send requests to 127.0.0.1 under its own name, once
    that name resolves to 127.0.0.1; the browser then lets the page read the answers.
    Such requests carry the page's name in Host. Used where loopback is the only
    protection: the OTLP port without a token file, and the ops port on loopback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), None)
            if host is not None and not loopback_host(host.decode("latin-1")):
                shown = host.decode("latin-1")[:100]
                message = (
                    f"Host {shown!r} is not a loopback name: this server answers only requests addressed to "
                    "localhost or a loopback address (it has no token file; see docs/security.md)."
                )
                content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
                encoding = _error_encoding(content_type.decode("latin-1"))
                response = status_response(403, code_pb2.PERMISSION_DENIED, message, encoding)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Listeners:
    """Sends each request to the app of the listener it arrived on (by local port);
    lifespan events go to the OTLP app, which owns the services."""

    def __init__(self, ingest: ASGIApp, ops: ASGIApp | None, ops_port: int) -> None:
        self.ingest = ingest
        self.ops = ops
        self.ops_port = ops_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ops is not None and scope["type"] == "http":
            server = scope.get("server")
            if server is not None and server[1] == self.ops_port:
                await self.ops(scope, receive, send)
                return
        await self.ingest(scope, receive, send)


async def _maintain_forever(writer: Writer, interval: float) -> None:
    """Background maintenance of every table this process writes; failures are only logged."""
    while True:
        await asyncio.sleep(interval)
        for table in writer.tables:
            try:
                # Every replica runs this loop; the lease lets one of them do each pass.
                await asyncio.to_thread(maintain, writer.warehouse, table.name, every=interval)
            except Exception:
                log.warning("Background maintenance of %s failed; will try again.", table.name, exc_info=True)


def create_app(settings: Settings, handoff_directory: Path | None = None) -> ASGIApp:
    """Build the ASGI app; tables in ``settings.create_tables`` are created at start-up.
    ``settings.ops_port`` must be the port the ops listener is bound to. With
    ``handoff_directory`` (``--workers N``), each table is committed by one worker (handoff.py)."""
    warehouse = Warehouse(settings.warehouse, dict(settings.storage_options))
    monitoring = Monitoring()
    services = Services(
        settings=settings,
        warehouse=warehouse,
        authenticator=Authenticator(settings.tokens),
        budget=MemoryBudget(settings.max_buffer_bytes),
        monitoring=monitoring,
        resends=Resends(settings.resend_window, monitoring=monitoring),
        readiness=Readiness(warehouse, settings.readiness_interval, monitoring),
    )
    services.monitoring.buffered_bytes.set_function(lambda: services.budget.used)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for prefix in settings.create_tables:
            for signal, name in table_set(prefix).items():
                await asyncio.to_thread(services.warehouse.create_for_signal, name, signal)
        policy = CommitPolicy(
            settings.commit_max_rows,
            settings.commit_max_bytes,
            settings.commit_max_delay,
            max(settings.commit_max_delay, settings.commit_max_backoff),
        )
        handoff = Handoff(handoff_directory, settings.workers) if handoff_directory is not None else None
        services.writer = Writer(
            services.warehouse,
            settings.auto_create,
            policy,
            services.monitoring,
            settings.auto_create_max_tables,
            handoff,
            services.resends,
        )
        if handoff is not None:
            await handoff.serve(services.writer.hand_in)
        if not services.authenticator.enabled:
            log.warning(
                "No token file: accepting unauthenticated writes on %s%s.",
                settings.host,
                " (--insecure-no-auth)" if settings.insecure_no_auth else ", a loopback address",
            )
        native, decoder = decode.describe()
        log.log(logging.INFO if native else logging.WARNING, decoder)
        log.info("Writing to warehouse %s.", services.warehouse.root)
        services.readiness.start()
        background = [asyncio.create_task(services.authenticator.watch())]
        if settings.maintenance_interval > 0:
            log.info(
                "Maintaining the tables written every %g s (--maintenance-interval).", settings.maintenance_interval
            )
            background.append(asyncio.create_task(_maintain_forever(services.writer, settings.maintenance_interval)))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            services.readiness.close()
            log.info("Shutting down: committing buffered rows.")
            await services.writer.close()
            if handoff is not None:  # after the last commit answered the rows handed to it
                handoff.close()
            log.info("All accepted rows are committed.")

    handlers: dict[object, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    routes = _ops_routes(services) if settings.ops_listener == "shared" else [Route("/healthz", _healthz)]
    for signal in SIGNALS:
        # A bound method, so Starlette wraps it as a request → response endpoint.
        endpoint: Callable[[Request], Awaitable[Response]] = Ingest(signal, services).__call__
        for path in (f"/api/2.0/otel/v1/{signal}", f"/v1/{signal}"):
            routes.append(Route(path, endpoint, methods=["POST"], name=f"{signal}:{path}"))
    ingest: ASGIApp = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    if settings.loopback_only:
        ingest = LoopbackHostOnly(ingest)
    if settings.ops_listener != "separate":
        return ingest
    ops: ASGIApp = Starlette(routes=_ops_routes(services), exception_handlers=handlers)
    if is_loopback(settings.ops_host):
        ops = LoopbackHostOnly(ops)
    return Listeners(ingest, ops, settings.ops_port)


def create_app_from_environment() -> ASGIApp:
    """App factory for ``serve --workers N``: each worker rebuilds the parent's settings."""
    settings = Settings.from_environment()
    configure_logging(settings.log_level)
    handoff_directory = os.environ.get(HANDOFF_DIRECTORY)
    return create_app(settings, Path(handoff_directory) if handoff_directory else None)


def configure_logging(level: str) -> None:
    """Lifecycle and commit messages as full sentences on stderr."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
