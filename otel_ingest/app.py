"""The ASGI application: routes, lifespan, and the one place errors become HTTP statuses.

A request flows one way: read and decompress the body (wire) → decode the OTLP
message (wire) → flatten it to an Arrow batch (flatten) → commit it (writer) → answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from google.rpc import code_pb2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otel_ingest import wire
from otel_ingest.budget import DECODE_OVERHEAD, MemoryBudget
from otel_ingest.config import Settings
from otel_ingest.errors import (
    BadTableName,
    DecodeError,
    IngestError,
    PayloadTooLarge,
    SchemaMismatch,
    TableNotFound,
    Unavailable,
    UnsupportedMediaType,
)
from otel_ingest.flatten import FLATTENERS
from otel_ingest.maintenance import maintain
from otel_ingest.schema import SIGNALS, Signal
from otel_ingest.tables import TableName, Warehouse, table_set
from otel_ingest.writer import CommitPolicy, Writer

log = logging.getLogger("otel_ingest.app")

TABLE_HEADER = "X-Databricks-UC-Table-Name"  # header lookups are case-insensitive

# Domain error → (HTTP status, google.rpc.Code). The only mapping of errors to HTTP.
STATUSES: dict[type[IngestError], tuple[int, int]] = {
    DecodeError: (400, code_pb2.INVALID_ARGUMENT),
    BadTableName: (400, code_pb2.INVALID_ARGUMENT),
    SchemaMismatch: (400, code_pb2.FAILED_PRECONDITION),
    TableNotFound: (404, code_pb2.NOT_FOUND),
    PayloadTooLarge: (413, code_pb2.RESOURCE_EXHAUSTED),
    UnsupportedMediaType: (415, code_pb2.INVALID_ARGUMENT),
    Unavailable: (503, code_pb2.UNAVAILABLE),
}

# Bodies larger than this are flattened in a worker thread so that one big request
# does not stall the event loop for every other connection.
_INLINE_FLATTEN_BYTES = 256 * 1024


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
    headers = None
    if isinstance(error, Unavailable):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    return status_response(status, code, str(error), encoding, headers)


class Ingest:
    """The export endpoint of one signal."""

    def __init__(self, signal: Signal, settings: Settings, writer: Callable[[], Writer], budget: MemoryBudget) -> None:
        self.signal = signal
        self.settings = settings
        self.writer = writer
        self.budget = budget

    def _table_name(self, request: Request) -> TableName:
        raw = request.headers.get(TABLE_HEADER) or self.settings.default_table(self.signal)
        if not raw:
            raise BadTableName(
                f"The {TABLE_HEADER} header is missing; set it to catalog.schema.table "
                f"(or start the server with --default-{self.signal}-table)."
            )
        return TableName.parse(raw)

    async def __call__(self, request: Request) -> Response:
        content_type = request.headers.get("content-type")
        encoding = _error_encoding(content_type)
        try:
            with self.budget.reservation() as held:
                encoding = wire.media_type(content_type)
                name = self._table_name(request)
                writer = self.writer()
                await writer.check(name, self.signal)  # 404/400 before the body is read
                limit = self.settings.max_body_bytes
                raw = await wire.read_body(request.stream(), request.headers.get("content-length"), limit, held.resize)
                body = wire.decompress(raw, request.headers.get("content-encoding"), limit)
                # Held until answered: the decoded message, then its rows waiting for the commit.
                held.resize(len(raw) + len(body) * DECODE_OVERHEAD)
                size = len(body)
                message, encoding = wire.decode_request(self.signal, body, encoding)
                del raw, body
                flatten = FLATTENERS[self.signal]
                if size > _INLINE_FLATTEN_BYTES:
                    flattened = await asyncio.to_thread(flatten, message)
                else:
                    flattened = flatten(message)
                del message
                await writer.append(name, self.signal, flattened.columns, size)
        except IngestError as error:
            log.debug("Request to %s answered with error: %s", request.url.path, error)
            return error_response(error, encoding)
        return Response(
            wire.encode_response(self.signal, flattened.rejected, flattened.first_error, encoding),
            media_type=wire.CONTENT_TYPES[encoding],
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


async def _maintain_forever(writer: Writer, interval: float) -> None:
    """Background maintenance of every table this process writes; failures are only logged."""
    while True:
        await asyncio.sleep(interval)
        for table in writer.tables:
            try:
                await asyncio.to_thread(maintain, writer.warehouse, table.name)
            except Exception:
                log.warning("Background maintenance of %s failed; will try again.", table.name, exc_info=True)


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI app; tables in ``settings.create_tables`` are created at start-up."""
    warehouse = Warehouse(settings.warehouse, dict(settings.storage_options))
    budget = MemoryBudget(settings.max_buffer_bytes)
    state: dict[str, Writer] = {}

    def writer() -> Writer:
        return state["writer"]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for prefix in settings.create_tables:
            for signal, name in table_set(prefix).items():
                await asyncio.to_thread(warehouse.create_for_signal, name, signal)
        policy = CommitPolicy(settings.commit_max_rows, settings.commit_max_bytes, settings.commit_max_delay)
        state["writer"] = Writer(warehouse, settings.auto_create, policy)
        log.info("Writing to warehouse %s.", warehouse.root)
        maintenance = None
        if settings.maintenance_interval > 0:
            maintenance = asyncio.create_task(_maintain_forever(state["writer"], settings.maintenance_interval))
        try:
            yield
        finally:
            if maintenance is not None:
                maintenance.cancel()
            log.info("Shutting down: committing buffered rows.")
            await state["writer"].close()
            log.info("All accepted rows are committed.")

    routes = []
    for signal in SIGNALS:
        # A bound method, so Starlette wraps it as a request → response endpoint.
        endpoint: Callable[[Request], Awaitable[Response]] = Ingest(signal, settings, writer, budget).__call__
        for path in (f"/api/2.0/otel/v1/{signal}", f"/v1/{signal}"):
            routes.append(Route(path, endpoint, methods=["POST"], name=f"{signal}:{path}"))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )


def create_app_from_environment() -> Starlette:
    """App factory for ``serve --workers N``: each worker rebuilds the parent's settings."""
    settings = Settings.from_environment()
    configure_logging(settings.log_level)
    return create_app(settings)


def configure_logging(level: str) -> None:
    """Lifecycle and commit messages as full sentences on stderr."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
