"""Bearer tokens, table grants and per-principal rate limits (SPEC §5).

The token file is TOML, one ``[[principals]]`` table per principal::

    [[principals]]
    name = "claude-team"                       # shown in logs and metrics
    token_sha256 = "9f86d081884c7d65..."      # or: token = "the token itself"
    tables = ["main.telemetry.claude_*"]       # glob patterns, matched lower-case
    requests_per_second = 20                   # optional
    bytes_per_second = 5_000_000               # optional (request bytes as sent)
    burst_seconds = 2                          # optional: bucket size, in seconds of rate
    read = ["main.telemetry.*"]                # optional: tables whose usage it may read (dashboard)

Tokens are only ever compared as SHA-256 digests, in constant time, and never logged.
The file is re-read when its modification time changes (checked at most once a second);
a file that fails to load keeps the previous principals in force.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import os
import time
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from otel_ingest.errors import Forbidden, RateLimited, Unauthorized
from otel_ingest.tables import TableName

log = logging.getLogger("otel_ingest.auth")

RELOAD_CHECK_SECONDS = 1.0
DEFAULT_BURST_SECONDS = 2.0


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and the entry."""


class TokenBucket:
    """Refills at ``rate`` per second up to ``capacity``. A take larger than the capacity
    is allowed from a full bucket and leaves it in debt, so big requests still pass."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0: it may be taken now)."""
        self._refill()
        needed = min(amount, self.capacity)
        if self.tokens >= needed:
            return 0.0
        return (needed - self.tokens) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.tokens -= amount


@dataclass
class Principal:
    """Who a token belongs to, what it may write, and how fast."""

    name: str
    token_sha256: bytes
    tables: tuple[str, ...]
    requests_per_second: float | None = None
    bytes_per_second: float | None = None
    burst_seconds: float = DEFAULT_BURST_SECONDS
    requests: TokenBucket | None = field(default=None, repr=False)
    bytes: TokenBucket | None = field(default=None, repr=False)
    # The [principals.gateway] table, as written: endpoints and limits of the AI gateway,
    # checked by otel_ingest.gateway.grants (None: no gateway access).
    gateway: dict[str, Any] | None = None
    # Tables whose usage this principal may read in the dashboard (glob patterns).
    read: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.requests_per_second:
            self.requests = TokenBucket(
                self.requests_per_second, max(1.0, self.requests_per_second * self.burst_seconds)
            )
        if self.bytes_per_second:
            self.bytes = TokenBucket(self.bytes_per_second, self.bytes_per_second * self.burst_seconds)

    def may_write(self, table: TableName) -> bool:
        name = str(table)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.tables)

    def may_read(self, table: str) -> bool:
        return any(fnmatch.fnmatchcase(table.lower(), pattern) for pattern in self.read)


ANONYMOUS = Principal(name="anonymous", token_sha256=b"", tables=("*",))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _principal(entry: Any, index: int, path: str) -> Principal:
    where = f"{path}: principals[{index}]"
    if not isinstance(entry, dict):
        raise TokenFileError(f"{where} must be a table.")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise TokenFileError(f"{where} needs a name.")
    where = f"{path}: principal {name!r}"
    if ("token" in entry) == ("token_sha256" in entry):
        raise TokenFileError(f"{where} needs exactly one of token or token_sha256.")
    if "token" in entry:
        if not isinstance(entry["token"], str) or len(entry["token"]) < 16:
            raise TokenFileError(f"{where}: token must be a string of at least 16 characters.")
        digest = _digest(entry["token"])
    else:
        try:
            digest = bytes.fromhex(entry["token_sha256"])
        except (TypeError, ValueError) as exc:
            raise TokenFileError(f"{where}: token_sha256 must be 64 hex digits.") from exc
        if len(digest) != 32:
            raise TokenFileError(f"{where}: token_sha256 must be 64 hex digits.")
    # A read-only principal (dashboard) needs no write grants.
    tables = entry.get("tables", [] if "read" in entry else None)
    if not isinstance(tables, list) or not all(isinstance(t, str) and t for t in tables):
        raise TokenFileError(f"{where}: tables must be a list of patterns such as 'main.telemetry.*'.")
    limits: dict[str, float] = {}
    for key in ("requests_per_second", "bytes_per_second", "burst_seconds"):
        if key in entry:
            value = entry[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise TokenFileError(f"{where}: {key} must be a positive number.")
            limits[key] = float(value)
    gateway = entry.get("gateway")
    if gateway is not None and not isinstance(gateway, dict):
        raise TokenFileError(f"{where}: gateway must be a table ([principals.gateway]).")
    read = entry.get("read", [])
    if not isinstance(read, list) or not all(isinstance(t, str) and t for t in read):
        raise TokenFileError(f"{where}: read must be a list of patterns such as 'main.telemetry.*'.")
    unknown = set(entry) - {"name", "token", "token_sha256", "tables", "gateway", "read", *limits}
    if unknown:
        raise TokenFileError(f"{where}: unknown keys {sorted(unknown)}.")
    return Principal(
        name=name,
        token_sha256=digest,
        tables=tuple(t.lower() for t in tables),
        requests_per_second=limits.get("requests_per_second"),
        bytes_per_second=limits.get("bytes_per_second"),
        burst_seconds=limits.get("burst_seconds", DEFAULT_BURST_SECONDS),
        gateway=gateway,
        read=tuple(t.lower() for t in read),
    )


def load_token_file(path: str) -> list[Principal]:
    """Parse and validate a token file; raises TokenFileError naming the problem."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise TokenFileError(f"Cannot read token file {path}: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"Token file {path} is not valid TOML: {exc}.") from exc
    entries = document.get("principals")
    if not isinstance(entries, list) or not entries:
        raise TokenFileError(f"Token file {path} must hold at least one [[principals]] entry.")
    principals = [_principal(entry, i, path) for i, entry in enumerate(entries)]
    names = [p.name for p in principals]
    if len(set(names)) != len(names):
        raise TokenFileError(f"Token file {path} names a principal twice.")
    return principals


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; ``Bearer%20<token>`` is accepted
    too (Claude Code sends it so when the header comes from OTEL_EXPORTER_OTLP_HEADERS)."""
    if not authorization:
        return None
    value = authorization.strip()
    if value[:9].lower() == "bearer%20":
        value = "Bearer " + urllib.parse.unquote(value[9:])
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Maps bearer tokens to principals; without a token file everyone is ``anonymous``."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.principals: list[Principal] = []
        self._mtime: float | None = None
        self._checked = 0.0
        if path is not None:
            self.principals = load_token_file(path)
            self._mtime = os.stat(path).st_mtime
            log.info("Loaded %d principals from %s.", len(self.principals), path)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            log.error("Token file %s is gone; keeping the %d principals loaded.", self.path, len(self.principals))
            return
        if mtime == self._mtime:
            return
        try:
            principals = load_token_file(self.path)
        except TokenFileError as error:
            log.error("%s Keeping the %d principals loaded before.", error, len(self.principals))
            self._mtime = mtime
            return
        # Keep the rate-limit state of principals that stay.
        old = {p.name: p for p in self.principals}
        for principal in principals:
            previous = old.get(principal.name)
            if previous and (previous.requests_per_second, previous.bytes_per_second) == (
                principal.requests_per_second,
                principal.bytes_per_second,
            ):
                principal.requests, principal.bytes = previous.requests, previous.bytes
        self.principals, self._mtime = principals, mtime
        log.info("Reloaded %s: %d principals.", self.path, len(principals))

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a request's Authorization header; raises Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        self._maybe_reload()
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("The request has no bearer token; send Authorization: Bearer <token>.")
        digest = _digest(token)
        found = None
        for principal in self.principals:  # compare with all, in constant time each
            if hmac.compare_digest(digest, principal.token_sha256):
                found = principal
        if found is None:
            raise Unauthorized("The bearer token is not valid; check the token the exporter sends.")
        return found

    @staticmethod
    def authorize(principal: Principal, table: TableName) -> None:
        """Raise Forbidden unless ``principal`` may write ``table``."""
        if not principal.may_write(table):
            raise Forbidden(
                f"Principal {principal.name!r} may not write table {table}; "
                "ask the operator to grant it in the token file."
            )

    @staticmethod
    def admit(principal: Principal, size: int | None = None) -> None:
        """Charge one request — or, given ``size``, that many bytes — to the principal's
        rate limit; raises RateLimited with the wait computed from the bucket."""
        bucket, what, amount = (
            (principal.requests, "requests", 1.0) if size is None else (principal.bytes, "bytes", float(size))
        )
        if bucket is None:
            return
        wait = bucket.wait_for(amount)
        if wait > 0:
            raise RateLimited(
                f"Principal {principal.name!r} is over its {what} per second limit; retry in {wait:.1f} s.",
                retry_after=wait,
            )
        bucket.take(amount)
