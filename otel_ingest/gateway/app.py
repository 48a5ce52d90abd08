"""The gateway's ASGI app: authenticate, route, limit, forward byte for byte, record.

A call flows one way: resolve the path (routes) → authenticate with the shared token
file (auth) → read the body within the size limit → pick the endpoint serving the
requested model → check the principal's grant (grants) → admit it under the limits
(limits) → forward it upstream (upstream), streaming the response back unchanged while a
``Tap`` reads the usage (usage) → settle the limits with the real usage and cost
(pricing) → queue the usage and inference rows (tables). Every refusal before the
upstream call is a ``GatewayError``, rendered here in the route's provider dialect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
import urllib.parse
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otel_ingest.app import Listeners, LoopbackHostOnly
from otel_ingest.auth import Authenticator, Principal
from otel_ingest.config import is_loopback
from otel_ingest.errors import Unauthorized
from otel_ingest.gateway.config import Endpoint, GatewayConfig
from otel_ingest.gateway.errors import (
    BadRequest,
    GatewayError,
    MissingKey,
    NotPermitted,
    TooLarge,
    Unauthenticated,
    UnknownModel,
    UpstreamFailed,
    UpstreamTimeout,
    error_body,
    error_headers,
    stream_error_event,
)
from otel_ingest.gateway.grants import Grant, Grants, check_grants
from otel_ingest.gateway.limits import Limiter, Subject
from otel_ingest.gateway.models import listing
from otel_ingest.gateway.pricing import cost, warm_up_prices
from otel_ingest.gateway.routes import Target, choose_endpoint, dialect_of, resolve
from otel_ingest.gateway.tables import INFERENCE_SCHEMA, USAGE_SCHEMA, TableLog
from otel_ingest.gateway.upstream import TIMEOUTS, Upstream, UpstreamError, UpstreamResponse
from otel_ingest.gateway.usage import Tap, Usage, tap_for
from otel_ingest.monitoring import Monitoring, access_log
from otel_ingest.tables import Warehouse

log = logging.getLogger("otel_ingest.gateway")

# Headers that belong to one hop, or carry the client's gateway credentials: never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",  # the body goes up in one write: no 100-continue round trip with the provider
}
_HOP_BY_HOP_BYTES = {name.encode() for name in _HOP_BY_HOP}
_CLIENT_CREDENTIALS = {"authorization", "x-api-key", "x-goog-api-key", "cookie"}
_ENCODINGS_TAPPED = {"gzip", "deflate", "identity"}

ERROR_TEXT_CHARS = 500
# A response this small is re-assembled for the inference table on the event loop (tens of
# microseconds); a larger one in a thread. A thread hop per call cost more than the parsing.
INLINE_REASSEMBLY_BYTES = 64 << 10


class GatewayMetrics:
    def __init__(self, monitoring: Monitoring) -> None:
        r = monitoring.registry
        self.calls = Counter(
            "otel_ingest_gateway_calls", "Gateway calls answered.", ["route", "endpoint", "status"], registry=r
        )
        self.seconds = Histogram(
            "otel_ingest_gateway_call_seconds", "Time from request to the last byte answered.", ["route"], registry=r
        )
        self.tokens = Counter(
            "otel_ingest_gateway_tokens", "Tokens used through the gateway.", ["endpoint", "kind"], registry=r
        )
        self.dropped = Counter(
            "otel_ingest_gateway_log_rows_dropped",
            "Usage or inference rows dropped because the buffer was full (warehouse down).",
            ["table"],
            registry=r,
        )
        self.buffered = Gauge(
            "otel_ingest_gateway_log_rows_buffered", "Rows waiting to be written.", ["table"], registry=r
        )
        self.limit_fallbacks = Counter(
            "otel_ingest_gateway_limit_fallbacks",
            "Limit checks served by this replica alone because Redis was unreachable.",
            registry=r,
        )


@dataclass
class Call:
    """What is known about one call, for its usage and inference rows."""

    request_id: str
    target: Target | None
    path: str
    started: float = field(default_factory=time.perf_counter)
    event_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    principal: str | None = None
    endpoint: Endpoint | None = None
    model: str | None = None
    streaming: bool = False
    status: int = 0
    error: str | None = None
    ttfb: float | None = None
    finished: float | None = None  # perf_counter() at the last byte relayed
    usage: Usage | None = None
    body: bytes = b""
    subjects: list[Subject] = field(default_factory=list)
    responded: bool = False  # the response head went out


def _agent(user_agent: str, originator: str | None) -> str:
    ua = user_agent.lower()
    if ua.startswith("claude-cli") or "claude-code" in ua:
        return "claude_code"
    if (originator or "").startswith("codex") or ua.startswith("codex"):
        return "codex"
    if "geminicli" in ua or "gemini-cli" in ua:
        return "gemini_cli"
    if "cursor" in ua:
        return "cursor"
    if ua.startswith("openai/"):
        return "openai_sdk"
    return "other"


def _tags(raw: str | None) -> list[tuple[str, str]] | None:
    if not raw:
        return None
    pairs = []
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs.append((key.strip(), value.strip()))
    return pairs or None


def _client_token(request: Request) -> str | None:
    headers = request.headers
    if headers.get("authorization"):
        return headers["authorization"]
    for name in ("x-api-key", "x-goog-api-key"):
        if headers.get(name):
            return f"Bearer {headers[name]}"
    key = request.query_params.get("key")
    return f"Bearer {key}" if key else None


class Gateway:
    def __init__(self, config: GatewayConfig, monitoring: Monitoring | None = None) -> None:
        self.config = config
        self.monitoring = monitoring or Monitoring()
        self.metrics = GatewayMetrics(self.monitoring)
        self.authenticator = Authenticator(
            config.tokens, partial(check_grants, endpoints=config.endpoints, path=config.tokens or "token file")
        )
        self.grants = Grants()
        self.limiter = Limiter(config.redis_url, config.replicas, self.metrics.limit_fallbacks.inc)
        self.warehouse = Warehouse(config.warehouse, config.storage_options)
        self.usage_log: TableLog | None = None
        self.inference_log: TableLog | None = None
        self.upstream: Upstream | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # httpx logs every request line at INFO; the access log says it better, without the query.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        await asyncio.to_thread(warm_up_prices)  # genai-prices loads its data on first use
        self.upstream = Upstream()
        for attribute, name, schema in (
            ("usage_log", self.config.usage_table, USAGE_SCHEMA),
            ("inference_log", self.config.inference_table, INFERENCE_SCHEMA),
        ):
            if name is not None:
                table_log = TableLog(
                    self.warehouse,
                    name,
                    schema,
                    self.config.log_buffer_rows,
                    self.monitoring,
                    self.metrics.dropped,
                    self.config.commit_every_seconds,
                )
                self.metrics.buffered.labels(str(name)).set_function(partial(len, table_log.buffer))
                table_log.start()
                setattr(self, attribute, table_log)

    async def stop(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for table_log in (self.usage_log, self.inference_log):
            if table_log is not None:
                await table_log.close()
        if self.upstream is not None:
            await self.upstream.aclose()
        await self.limiter.close()

    # ---- the request path -------------------------------------------------------------

    def _authenticate(self, request: Request) -> Principal:
        try:
            return self.authenticator.authenticate(_client_token(request))
        except Unauthorized as error:
            raise Unauthenticated(
                f"{error} The gateway takes the token of your otel-ingest principal as the API key."
            ) from error

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        announced = request.headers.get("content-length")
        if announced and announced.isdigit() and int(announced) > limit:
            raise TooLarge(f"The request body of {int(announced):,} bytes is over the gateway's limit of {limit:,}.")
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"The request body is over the gateway's limit of {limit:,} bytes.")
            parts.append(chunk)
        return b"".join(parts)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One call, as a plain ASGI app: no middleware stack or response task group on
        the path every call takes (their CPU per call was a measurable part of the
        gateway's; bench/gateway.py)."""
        request = Request(scope, receive)
        call = Call(request_id=str(uuid.uuid4()), target=None, path=scope["path"])
        try:
            target = call.target = resolve(scope["method"], call.path)
            principal = self._authenticate(request)
            call.principal = principal.name
            grant = self.grants.of(principal)
            if grant.error:
                log.error("%s", grant.error)
            if target.is_listing:
                call.status = 200
                body = listing(target, self.config.endpoints, grant)
                self._log_access(request, call)
                await _respond(send, 200, json.dumps(body).encode(), [(b"content-type", b"application/json")])
                return
            raw = await self._read_body(request)
            call.body = raw
            await self._forward(request, send, call, target, grant, raw)
        except ClientDisconnect:
            call.status, call.error = 499, "client closed the connection while sending the request"
            self._finish(request, call, None)
        except Exception as unexpected:  # a gateway bug: still a provider-shaped 500, and logged
            if isinstance(unexpected, GatewayError):
                error = unexpected
            else:
                log.exception("Unexpected error in gateway call %s.", call.request_id)
                error = GatewayError(f"Internal gateway error (request {call.request_id}); see the gateway log.")
            call.status, call.error = error.status, str(error)
            self._finish(request, call, None)
            if call.responded:  # a gateway bug after the head went out: the connection is closed
                raise
            dialect = call.target.dialect if call.target else dialect_of(call.path)
            headers = [(n.encode(), v.encode()) for n, v in error_headers(error).items()]
            headers.append((b"x-gateway-request-id", call.request_id.encode()))
            await _respond(send, error.status, error_body(error, dialect), headers)

    def _model(self, target: Target, document: Any) -> str:
        if target.path_model is not None:
            return target.path_model
        model = document.get("model") if isinstance(document, dict) else None
        if not isinstance(model, str) or not model:
            raise BadRequest("The request body has no model; name one of the models listed at /models.")
        return model

    async def _forward(
        self, request: Request, send: Send, call: Call, target: Target, grant: Grant, raw: bytes
    ) -> None:
        try:
            document = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise BadRequest(f"The request body is not valid JSON: {exc}.") from exc
        model = call.model = self._model(target, document)
        endpoint = choose_endpoint(self.config.endpoints, target, model)
        if endpoint is None:
            raise UnknownModel(
                f"No gateway endpoint serves model {model!r} on /{target.route}; "
                "the /models listing of this route shows the models you may use."
            )
        call.endpoint = endpoint
        if not grant.allows(endpoint.name):
            raise NotPermitted(
                f"Principal {call.principal!r} may not use endpoint {endpoint.name!r}; "
                "ask the operator to add it to [principals.gateway] endpoints in the token file."
            )
        call.subjects = [
            s
            for s in (
                Subject(f"principal:{call.principal}", grant.limits),
                Subject(f"endpoint:{endpoint.name}", endpoint.limits),
            )
            if s.limits.any
        ]
        await self.limiter.admit(call.subjects)
        key = endpoint.api_key()
        if key is None and endpoint.api_key_env is not None:
            raise MissingKey(
                f"Endpoint {endpoint.name!r} has no provider key: its variable {endpoint.api_key_env} is not set "
                "in the gateway's environment; tell the operator."
            )
        call.streaming = (
            target.api_type == "generate_content" and target.upstream_path.endswith(":streamGenerateContent")
        ) or (isinstance(document, dict) and document.get("stream") is True)
        strip_usage = False
        if target.api_type == "chat_completions" and call.streaming:
            raw, strip_usage = _ask_for_usage(raw, document)
        await self._send(request, send, call, target, endpoint, key, raw, strip_usage)

    def _upstream_request(
        self, request: Request, target: Target, endpoint: Endpoint, key: str | None
    ) -> tuple[str, list[tuple[str, str]]]:
        """The upstream URL and headers: the client's, less hop-by-hop and credentials."""
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name not in _HOP_BY_HOP and name not in _CLIENT_CREDENTIALS and name != self.config.tags_header
        ]
        accepted = [e.strip() for e in request.headers.get("accept-encoding", "").split(",")]
        # The tap must read usage: only encodings it can decode are offered upstream.
        usable = [e for e in accepted if e.split(";")[0].strip().lower() in _ENCODINGS_TAPPED]
        headers = [(n, v) for n, v in headers if n != "accept-encoding"]
        headers.append(("accept-encoding", ", ".join(usable) or "identity"))
        if key is not None:
            if endpoint.provider == "anthropic":
                headers.append(("x-api-key", key))
            elif endpoint.provider == "google":
                headers.append(("x-goog-api-key", key))
            else:
                headers.append(("authorization", f"Bearer {key}"))
        # The query string goes on as sent, less a Gemini-style ?key= (the gateway token).
        query = request.scope["query_string"].decode("latin-1")
        if "key=" in query:
            query = urllib.parse.urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "key"])
        return endpoint.base_url + target.upstream_path + ("?" + query if query else ""), headers

    async def _send(
        self,
        request: Request,
        send: Send,
        call: Call,
        target: Target,
        endpoint: Endpoint,
        key: str | None,
        body: bytes,
        strip_usage: bool,
    ) -> None:
        assert self.upstream is not None
        url, headers = self._upstream_request(request, target, endpoint, key)
        hangup = Hangup(request.receive)
        try:
            try:
                upstream = await self.upstream.send(
                    request.method, url, headers, body, endpoint.timeout_seconds, endpoint.connect_timeout_seconds
                )
            except TIMEOUTS as exc:
                raise UpstreamTimeout(
                    f"Endpoint {endpoint.name!r} did not answer in time ({type(exc).__name__}); retry later."
                ) from exc
            except UpstreamError as exc:
                raise UpstreamFailed(
                    f"Endpoint {endpoint.name!r} could not be reached ({type(exc).__name__}); retry later."
                ) from exc
            call.status = upstream.status_code
            if upstream.status_code in (401, 403) and endpoint.api_key_env:
                # The provider refused the gateway's key, not the client's token: say so, and
                # never pass on a body that may quote the key.
                await upstream.aclose()
                raise UpstreamFailed(
                    f"The provider refused the gateway's key for endpoint {endpoint.name!r} "
                    f"(HTTP {upstream.status_code}); tell the operator to check {endpoint.api_key_env}."
                )
            await self._relay(request, send, call, target, endpoint, upstream, key, strip_usage, hangup)
        except asyncio.CancelledError:
            if not hangup.happened:
                raise  # the server is stopping
            # The client hung up: its call ends here (the upstream connection is closed).
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            call.status, call.error = 499, "client disconnected; the upstream call was cancelled"
            if call.finished is None:  # before the relay began: record it here
                self._finish(request, call, None)
        finally:
            hangup.disarm()

    async def _relay(
        self,
        request: Request,
        send: Send,
        call: Call,
        target: Target,
        endpoint: Endpoint,
        upstream: UpstreamResponse,
        key: str | None,
        strip_usage: bool,
        hangup: Hangup,
    ) -> None:
        """Forward the upstream bytes as they arrive; the tap reads them on the way. Each
        read hands over everything that arrived, and the last one goes out together with
        the end of the response (one write to the client, not two)."""
        inference = endpoint.inference
        sampled = (
            inference.enabled
            and self.inference_log is not None
            and (inference.sample_rate >= 1 or random.random() < inference.sample_rate)
        )
        status = upstream.status_code
        tap: Tap | None = None
        try:
            content_type = upstream.header(b"content-type") or ""
            is_sse = content_type.startswith("text/event-stream")
            tap = tap_for(
                endpoint.provider,
                target.api_type,
                is_sse,
                strip_usage and is_sse,
                inference.max_bytes if sampled else 0,
            )
            keep_length = not tap_changes(tap)
            headers = [
                (name, value)
                for name, value in upstream.headers
                if (lowered := name.lower()) not in _HOP_BY_HOP_BYTES or (lowered == b"content-length" and keep_length)
            ]
            headers.append((b"x-gateway-request-id", call.request_id.encode()))
            decoder = _decoder(upstream.header(b"content-encoding"))
            error_text: list[bytes] = []
            call.responded = True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            while True:
                chunk, done = await upstream.read()
                out = b""
                if chunk:
                    if call.ttfb is None:
                        call.ttfb = time.perf_counter() - call.started
                    plain = decoder.decompress(chunk) if decoder is not None else chunk
                    if status >= 400:
                        if sum(map(len, error_text)) < ERROR_TEXT_CHARS:
                            error_text.append(plain)
                        tap.total_bytes += len(chunk)
                        out = chunk
                    else:
                        fed = tap.feed(plain)
                        # compressed bodies are never changed (only SSE chat streams are)
                        out = chunk if decoder is not None else fed
                if done:
                    break
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            out += tap.finish()
            if status >= 400:
                text = b"".join(error_text)[:ERROR_TEXT_CHARS].decode("utf-8", "replace")
                call.error = f"upstream HTTP {status}: {_redact(text, key)}"
            elif tap.error:
                call.error = f"provider error in stream: {_redact(tap.error, key)}"
            hangup.disarm()
            await send({"type": "http.response.body", "body": out, "more_body": False})
        except UpstreamError as exc:
            error: GatewayError = (
                UpstreamTimeout(f"Endpoint {endpoint.name!r} stopped sending mid-response ({type(exc).__name__}).")
                if isinstance(exc, TIMEOUTS)
                else UpstreamFailed(
                    f"Endpoint {endpoint.name!r} broke the connection mid-response ({type(exc).__name__})."
                )
            )
            call.error = str(error)
            if tap is not None and tap.streaming:
                hangup.disarm()
                await send(
                    {
                        "type": "http.response.body",
                        "body": stream_error_event(error, target.dialect, target.api_type),
                        "more_body": False,
                    }
                )
            # else the body cannot be completed: returning without its end closes the
            # connection (uvicorn), and the client sees a truncated response.
        except asyncio.CancelledError:
            call.error = "client disconnected; the upstream call was cancelled"
            call.status = 499
            raise
        finally:
            call.finished = time.perf_counter()
            await upstream.aclose()
            call.usage = tap.usage if tap is not None else None
            # Rows, limits, metrics and the access log are built after the last bytes went out.
            asyncio.get_running_loop().call_soon(self._finish, request, call, tap if sampled else None)

    # ---- after the call -------------------------------------------------------------------

    def _finish(self, request: Request, call: Call, tap: Tap | None) -> None:
        """Settle limits, queue the rows, log and count; never raises."""
        try:
            self._record(request, call, tap)
        except Exception:
            log.exception("Could not record gateway call %s.", call.request_id)

    def _record(self, request: Request, call: Call, tap: Tap | None) -> None:
        latency = (call.finished or time.perf_counter()) - call.started
        usage, endpoint, model = call.usage, call.endpoint, call.model
        price, source = (None, None)
        if usage is not None and endpoint is not None and model is not None:
            price, source = cost(endpoint, model, usage)
            for kind, amount in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_input_tokens),
                ("cache_write", usage.cache_creation_input_tokens),
            ):
                if amount:
                    self.metrics.tokens.labels(endpoint.name, kind).inc(amount)
        if call.subjects and (usage is not None or price):
            task = asyncio.get_running_loop().create_task(self.limiter.settle(call.subjects, usage, price))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        target = call.target
        route = target.route if target else "-"
        self.metrics.calls.labels(route, endpoint.name if endpoint else "-", str(call.status)).inc()
        self.metrics.seconds.labels(route).observe(latency)
        self._log_access(request, call)
        headers = request.headers
        if self.usage_log is not None and target is not None and not target.is_listing:
            self.usage_log.add(
                {
                    "request_id": call.request_id,
                    "event_time": call.event_time,
                    "event_date": call.event_time.date(),
                    "endpoint_name": endpoint.name if endpoint else None,
                    "route": call.path,
                    "api_type": target.api_type,
                    "destination_type": endpoint.provider if endpoint else None,
                    "destination_model": model,
                    "requester": call.principal,
                    "agent": _agent(headers.get("user-agent", ""), headers.get("originator")),
                    "user_agent": headers.get("user-agent"),
                    "session_id": headers.get("x-claude-code-session-id") or headers.get("session-id"),
                    "client_request_id": headers.get("x-client-request-id"),
                    "ip_address": request.client.host if request.client else None,
                    "status_code": call.status,
                    "error": call.error,
                    "streaming": call.streaming,
                    "latency_ms": round(latency * 1000),
                    "ttfb_ms": round(call.ttfb * 1000) if call.ttfb is not None else None,
                    "input_tokens": usage.input_tokens if usage else None,
                    "cache_read_input_tokens": usage.cache_read_input_tokens if usage else None,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens if usage else None,
                    "output_tokens": usage.output_tokens if usage else None,
                    "reasoning_output_tokens": usage.reasoning_output_tokens if usage else None,
                    "total_tokens": usage.total_tokens if usage else None,
                    "cost_usd": price,
                    "cost_source": source,
                    "request_tags": _tags(headers.get(self.config.tags_header)),
                }
            )
        if tap is not None and self.inference_log is not None and endpoint is not None:
            if tap.collected_bytes <= INLINE_REASSEMBLY_BYTES:
                self._log_inference(call, tap, endpoint, latency, headers, tap.response_text())
            else:
                task = asyncio.get_running_loop().create_task(
                    self._log_inference_off_loop(call, tap, endpoint, latency, headers)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _log_inference_off_loop(
        self, call: Call, tap: Tap, endpoint: Endpoint, latency: float, headers: Headers
    ) -> None:
        """Re-assembling a long stream parses every event: in a thread."""
        try:
            response_text = await asyncio.to_thread(tap.response_text)
        except Exception:
            log.exception("Could not re-assemble the response of call %s.", call.request_id)
            return
        self._log_inference(call, tap, endpoint, latency, headers, response_text)

    def _log_inference(
        self, call: Call, tap: Tap, endpoint: Endpoint, latency: float, headers: Headers, response_text: str | None
    ) -> None:
        """Queue the inference row."""
        try:
            limit = endpoint.inference.max_bytes
            codes = []
            request_text = call.body[:limit].decode("utf-8", "replace")
            if len(call.body) > limit:
                codes.append("MAX_REQUEST_SIZE_EXCEEDED")
            if tap.truncated:
                codes.append("MAX_RESPONSE_SIZE_EXCEEDED")
            assert self.inference_log is not None
            self.inference_log.add(
                {
                    "request_id": call.request_id,
                    "client_request_id": headers.get("x-client-request-id"),
                    "request_date": call.event_time.date(),
                    "request_time": call.event_time,
                    "status_code": call.status,
                    "sampling_fraction": endpoint.inference.sample_rate,
                    "execution_duration_ms": round(latency * 1000),
                    "request": request_text,
                    "response": response_text,
                    "logging_error_codes": codes,
                    "served_entity": endpoint.name,
                    "destination_model": call.model,
                    "requester": call.principal,
                }
            )
        except Exception:
            log.exception("Could not log the payload of call %s.", call.request_id)

    def _log_access(self, request: Request, call: Call) -> None:
        usage = call.usage
        access_log.info(
            "%s %s %s principal=%s endpoint=%s model=%s status=%d in=%s out=%s ms=%.1f%s",
            request.client.host if request.client else "-",
            request.method,
            call.path,
            call.principal or "-",
            call.endpoint.name if call.endpoint else "-",
            call.model or "-",
            call.status,
            usage.input_tokens if usage else "-",
            usage.output_tokens if usage else "-",
            (time.perf_counter() - call.started) * 1000,
            f" error={call.error!r}" if call.error else "",
        )


class Hangup:
    """Cancels the call's task when the client hangs up, so that the upstream call is
    cancelled too (its connection closed) even while no byte is being relayed.

    Once the request body is read, the client's next ASGI message is ``http.disconnect``,
    and it comes only when the client goes (or the response is complete: ``disarm()``
    first). One waiting task per call, where Starlette's StreamingResponse ran a task
    group with a listener per response."""

    def __init__(self, receive: Receive) -> None:
        self.task = asyncio.current_task()
        self.happened = False
        self.armed = True
        self.waiting: asyncio.Future[Message] = asyncio.ensure_future(receive())
        self.waiting.add_done_callback(self._received)

    def _received(self, waiting: asyncio.Future[Message]) -> None:
        if not self.armed or waiting.cancelled() or waiting.exception() is not None:
            return
        if waiting.result()["type"] == "http.disconnect" and self.task is not None:
            self.happened = True
            self.task.cancel()

    def disarm(self) -> None:
        if self.armed:
            self.armed = False
            self.waiting.cancel()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def tap_changes(tap: Tap) -> bool:
    """Whether the tap may change the byte count (then content-length is not forwarded)."""
    from otel_ingest.gateway.usage import ChatUsageStripper

    return isinstance(tap, ChatUsageStripper)


def _decoder(encoding: str | None) -> Any:
    encoding = (encoding or "identity").strip().lower()
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "[redacted]") if key else text


def _ask_for_usage(raw: bytes, document: Any) -> tuple[bytes, bool]:
    """A streamed Chat Completions request gets ``stream_options.include_usage`` if it lacks
    it (the only usage source of such streams); returns the body and whether the extra
    usage chunk must be kept from the client. The body is spliced, not re-serialised,
    unless the client sent ``stream_options`` without include_usage."""
    options = document.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return raw, False
    if options is None:
        brace = raw.index(b"{")
        return raw[: brace + 1] + b'"stream_options":{"include_usage":true},' + raw[brace + 1 :], True
    patched = dict(document)
    patched["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(patched).encode(), True


class GatewayApp:
    """Model calls go straight to ``Gateway.serve``; the lifespan and the few ops paths
    (``/healthz``, ``/metrics`` when shared) to a Starlette app."""

    def __init__(self, gateway: Gateway, starlette: Starlette, starlette_paths: set[str]) -> None:
        self.gateway = gateway
        self.starlette = starlette
        self.starlette_paths = starlette_paths
        self.state = starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.starlette_paths:
            await self.gateway.serve(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def create_gateway_app(config: GatewayConfig) -> ASGIApp:
    """The gateway on its port; ``/metrics`` on the ops listener (``config.ops_port``, bound
    by the caller), as the ingestion server does: it names every principal and endpoint."""
    gateway = Gateway(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if not gateway.authenticator.enabled:
            log.warning("No token file: every caller is 'anonymous' and may use every endpoint.")
        log.info(
            "Gateway serving %d endpoints: %s.",
            len(config.endpoints),
            ", ".join(f"{e.name} ({e.provider})" for e in config.endpoints),
        )
        # The token file is re-read off the event loop by this task (otel_ingest.auth).
        watcher = asyncio.create_task(gateway.authenticator.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await gateway.stop()

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(gateway.monitoring.exposition(), media_type="text/plain; version=0.0.4")

    ops_routes = [Route("/healthz", healthz), Route("/metrics", metrics)]
    served = ops_routes if config.ops_listener == "shared" else [Route("/healthz", healthz)]
    starlette = Starlette(routes=served, lifespan=lifespan)
    starlette.state.gateway = gateway
    app = GatewayApp(gateway, starlette, {route.path for route in served})
    if config.ops_listener != "separate":
        return app
    ops: ASGIApp = Starlette(routes=ops_routes)
    if is_loopback(config.ops_host):
        ops = LoopbackHostOnly(ops)
    return Listeners(app, ops, config.ops_port)
