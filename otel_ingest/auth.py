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

Tokens are only ever handled as SHA-256 digests, looked up in a dict keyed by digest
(so the cost of a bad token does not grow with the number of principals), and never
logged. The file is re-read when its modification time changes (checked once a second,
in a worker thread: a slow, huge or blocking file never stalls requests); a file that
fails to load in any way keeps the previous principals in force.

Patterns are ``fnmatch`` globs over the whole lower-cased name: ``*`` crosses dots, so
``main.tele*`` also grants ``main.telemetry.secret_otel_logs``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import math
import os
import stat
import time
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otel_ingest.errors import Forbidden, RateLimited, Unauthorized
from otel_ingest.tables import TableName

log = logging.getLogger("otel_ingest.auth")

RELOAD_CHECK_SECONDS = 1.0
DEFAULT_BURST_SECONDS = 2.0
# Keys of a [[principals]] entry; a new kind of grant adds its key here and in _principal.
LIMIT_KEYS = ("requests_per_second", "bytes_per_second", "burst_seconds")
PRINCIPAL_KEYS = frozenset({"name", "token", "token_sha256", "tables", "gateway", "read", *LIMIT_KEYS})


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
    for key in LIMIT_KEYS:
        if key in entry:
            value = entry[key]
            # nan compares false with everything, so `value <= 0` alone let it through as "no limit".
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value > 0):
                raise TokenFileError(
                    f"{where}: {key} must be a positive finite number (leave it out for no limit), not {value!r}."
                )
            limits[key] = float(value)
    gateway = entry.get("gateway")
    if gateway is not None and not isinstance(gateway, dict):
        raise TokenFileError(f"{where}: gateway must be a table ([principals.gateway]).")
    read = entry.get("read", [])
    if not isinstance(read, list) or not all(isinstance(t, str) and t for t in read):
        raise TokenFileError(f"{where}: read must be a list of patterns such as 'main.telemetry.*'.")
    unknown = set(entry) - PRINCIPAL_KEYS
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


def _read_regular_file(path: str) -> bytes:
    """The bytes of ``path``, which must be a regular file: opening a FIFO or a device
    could block for ever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise TokenFileError(f"Cannot read token file {path}: {exc.strerror}.") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TokenFileError(f"Token file {path} is not a regular file.")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    except OSError as exc:
        raise TokenFileError(f"Cannot read token file {path}: {exc.strerror}.") from exc
    finally:
        os.close(fd)


def load_token_file(path: str) -> list[Principal]:
    """Read, parse and validate a token file; raises TokenFileError naming the problem."""
    raw = _read_regular_file(path)
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"Token file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"Token file {path} is not valid TOML: {exc}.") from exc
    entries = document.get("principals")
    if not isinstance(entries, list) or not entries:
        raise TokenFileError(f"Token file {path} must hold at least one [[principals]] entry.")
    principals = [_principal(entry, i, path) for i, entry in enumerate(entries)]
    names = [p.name for p in principals]
    if len(set(names)) != len(names):
        raise TokenFileError(f"Token file {path} names a principal twice.")
    seen: dict[bytes, str] = {}
    for principal in principals:
        if principal.token_sha256 in seen:
            raise TokenFileError(
                f"Token file {path}: principals {seen[principal.token_sha256]!r} and {principal.name!r} "
                "share a token; give each its own."
            )
        seen[principal.token_sha256] = principal.name
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

    def __init__(self, path: str | None, check: Callable[[list[Principal]], None] | None = None) -> None:
        """``check`` validates what only the caller understands (the gateway's grants); it
        raises TokenFileError, which refuses the file at start-up and on reload alike."""
        self.path = path
        self.check = check
        self._by_digest: dict[bytes, Principal] = {}
        self._mtime: float | None = None
        if path is not None:
            self._mtime = os.stat(path).st_mtime
            self._install(self._load(path))
            log.info("Loaded %d principals from %s.", len(self._by_digest), path)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _load(self, path: str) -> list[Principal]:
        principals = load_token_file(path)
        if self.check is not None:
            self.check(principals)
        return principals

    @property
    def principals(self) -> list[Principal]:
        return list(self._by_digest.values())

    def _install(self, principals: list[Principal]) -> None:
        """Put ``principals`` in force (one assignment: a request sees the old or the new set)."""
        self._by_digest = {p.token_sha256: p for p in principals}

    def _load_if_changed(self) -> list[Principal] | None:
        """The principals of the token file if it changed since the last look, else None.
        Runs in a worker thread; any failure is logged and keeps the loaded principals."""
        assert self.path is not None
        count = len(self._by_digest)
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            log.error("Token file %s is gone; keeping the %d principals loaded.", self.path, count)
            return None
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            principals = self._load(self.path)
        except TokenFileError as error:
            log.error("%s Keeping the %d principals loaded before.", error, count)
            return None
        except Exception:
            log.exception("Token file %s failed to load; keeping the %d principals loaded before.", self.path, count)
            return None
        # Keep the rate-limit state of principals that stay.
        old = {p.name: p for p in self._by_digest.values()}
        for principal in principals:
            previous = old.get(principal.name)
            if previous and (previous.requests_per_second, previous.bytes_per_second) == (
                principal.requests_per_second,
                principal.bytes_per_second,
            ):
                principal.requests, principal.bytes = previous.requests, previous.bytes
        return principals

    async def reload(self) -> None:
        """Load the token file if it changed, off the event loop."""
        principals = await asyncio.to_thread(self._load_if_changed)
        if principals is not None:
            self._install(principals)
            log.info("Reloaded %s: %d principals.", self.path, len(principals))

    async def watch(self) -> None:
        """Reload the token file whenever it changes, for as long as the app runs."""
        while self.enabled:
            await asyncio.sleep(RELOAD_CHECK_SECONDS)
            await self.reload()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a request's Authorization header; raises Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("The request has no bearer token; send Authorization: Bearer <token>.")
        # A dict lookup by digest: its timing can reveal at most something about the
        # digest of a token the client already has, never about a valid one.
        found = self._by_digest.get(_digest(token))
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
