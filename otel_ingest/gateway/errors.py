"""Gateway errors, and their rendering in each provider's own error format.

Agents decide whether to retry, back off or give up from the status and the error body
their provider would send; the gateway's own refusals (auth, grants, limits, size,
unknown models) therefore speak the dialect of the route they arrived on:

===========  ===================================================================
anthropic    ``{"type":"error","error":{"type":"rate_limit_error","message":…}}``
openai       ``{"error":{"message":…,"type":…,"param":null,"code":"rate_limit_exceeded"}}``
google       ``{"error":{"code":429,"message":…,"status":"RESOURCE_EXHAUSTED"}}``
===========  ===================================================================

Messages never contain a provider key: they are written by the gateway, and upstream
error bodies are passed through as the provider sent them.
"""

from __future__ import annotations

import json
import math
from typing import Literal

Dialect = Literal["anthropic", "openai", "google"]


class GatewayError(Exception):
    status = 500
    anthropic_type = "api_error"
    openai_type = "server_error"
    openai_code: str | None = None
    google_status = "INTERNAL"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadRequest(GatewayError):
    status = 400
    anthropic_type = "invalid_request_error"
    openai_type = "invalid_request_error"
    google_status = "INVALID_ARGUMENT"


class Unauthenticated(GatewayError):
    status = 401
    anthropic_type = "authentication_error"
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"
    google_status = "UNAUTHENTICATED"


class NotPermitted(GatewayError):
    status = 403
    anthropic_type = "permission_error"
    openai_type = "invalid_request_error"
    openai_code = "model_not_permitted"
    google_status = "PERMISSION_DENIED"


class UnknownRoute(GatewayError):
    status = 404
    anthropic_type = "not_found_error"
    openai_type = "invalid_request_error"
    openai_code = "unknown_url"
    google_status = "NOT_FOUND"


class UnknownModel(GatewayError):
    status = 404
    anthropic_type = "not_found_error"
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"
    google_status = "NOT_FOUND"


class TooLarge(GatewayError):
    status = 413
    anthropic_type = "request_too_large"
    openai_type = "invalid_request_error"
    openai_code = "request_too_large"
    google_status = "INVALID_ARGUMENT"


class OverLimit(GatewayError):
    status = 429
    anthropic_type = "rate_limit_error"
    openai_type = "requests"
    openai_code = "rate_limit_exceeded"
    google_status = "RESOURCE_EXHAUSTED"


class UpstreamFailed(GatewayError):
    """The provider could not be reached or broke the connection."""

    status = 502
    anthropic_type = "api_error"
    openai_type = "server_error"
    openai_code = "upstream_error"
    google_status = "UNAVAILABLE"


class UpstreamTimeout(UpstreamFailed):
    status = 504
    openai_code = "upstream_timeout"
    google_status = "DEADLINE_EXCEEDED"


class MissingKey(GatewayError):
    """The endpoint's key variable is not set in the gateway's environment."""

    status = 503
    anthropic_type = "api_error"
    openai_type = "server_error"
    openai_code = "gateway_misconfigured"
    google_status = "UNAVAILABLE"


def error_document(error: GatewayError, dialect: Dialect) -> dict[str, object]:
    message = str(error)
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": error.anthropic_type, "message": message}}
    if dialect == "google":
        return {"error": {"code": error.status, "message": message, "status": error.google_status}}
    return {"error": {"message": message, "type": error.openai_type, "param": None, "code": error.openai_code}}


def error_body(error: GatewayError, dialect: Dialect) -> bytes:
    return json.dumps(error_document(error, dialect)).encode()


def error_headers(error: GatewayError) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return headers


def stream_error_event(error: GatewayError, dialect: Dialect, api_type: str) -> bytes:
    """An error told inside an event stream whose 200 headers were already sent."""
    if dialect == "anthropic":
        body = json.dumps(error_document(error, dialect))
        return f"event: error\ndata: {body}\n\n".encode()
    if api_type == "responses":
        body = json.dumps({"type": "error", "code": error.openai_code, "message": str(error), "param": None})
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {json.dumps(error_document(error, dialect))}\n\n".encode()
