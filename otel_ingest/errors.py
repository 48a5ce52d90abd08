"""Domain errors raised inside the service; only ``app.py`` maps them to HTTP.

    IngestError
    ├── ClientError                  the request is wrong; retrying it unchanged won't help
    │   ├── Unauthorized             missing or unknown bearer token                  (401)
    │   ├── Forbidden                the token may not write that table               (403)
    │   ├── RateLimited              the principal's request or byte rate is used up  (429)
    │   ├── DecodeError              body is not valid OTLP in the declared encoding   (400)
    │   ├── BadTableName             header missing or not catalog.schema.table       (400)
    │   ├── SchemaMismatch           table columns do not match the signal's schema    (400)
    │   ├── TableNotFound            table does not exist and auto-create is off       (404)
    │   ├── PayloadTooLarge          body above the size limit, before or after inflating (413)
    │   └── UnsupportedMediaType     content type or content encoding not supported     (415)
    └── Unavailable                  storage failed or the server is overloaded        (503)

``RecordRejected`` is not an ``IngestError``: it rejects one record during
flattening, and the request still succeeds with ``partial_success``.

Messages are one sentence naming the offending value and what to do about it.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class of every error that ends a request."""


class ClientError(IngestError):
    """The request itself is wrong."""


class Unauthorized(ClientError):
    """No bearer token, or one the token file does not know."""


class Forbidden(ClientError):
    """The principal is not granted the target table."""


class RateLimited(ClientError):
    """The principal's rate limit is used up for now."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DecodeError(ClientError):
    """The body cannot be decoded as an OTLP export request."""


class BadTableName(ClientError):
    """The table header is missing or is not a valid three-part name."""


class SchemaMismatch(ClientError):
    """The target table exists but its columns do not fit the signal."""


class TableNotFound(ClientError):
    """The target table does not exist."""


class PayloadTooLarge(ClientError):
    """The body exceeds the configured size limit."""


class ClientGone(ClientError):
    """The client closed its connection before its request was complete."""


class RequestTimeout(ClientError):
    """The body stopped arriving before it was complete."""


class UnsupportedMediaType(ClientError):
    """Content-Type or Content-Encoding is not one the service understands."""


class Unavailable(IngestError):
    """Storage failed or the server is overloaded; the client should retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecordRejected(Exception):
    """One record breaks a mapping rule; it is dropped and counted, the rest are kept."""
