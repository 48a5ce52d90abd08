"""One frozen ``Settings`` object, built from command-line flags and ``OTEL_INGEST_*``
environment variables alike (a flag wins over its variable, which wins over the default).

``OPTIONS`` is the single list of settings; the CLI turns it into flags and the
environment lookup into variable names, so the two can never drift apart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_ingest.errors import BadTableName
from otel_ingest.schema import SIGNALS, Signal
from otel_ingest.tables import TableName

ENV_PREFIX = "OTEL_INGEST_"
# Internal: how ``serve --workers N`` hands the parsed settings to its worker processes.
SETTINGS_JSON_ENV = "OTEL_INGEST_SETTINGS_JSON"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """A setting has a value the service cannot use; the message names both."""


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _size(raw: str) -> int:
    """Bytes, with an optional KiB/MiB/GiB (or K/M/G) suffix."""
    text = raw.strip().upper().removesuffix("B").removesuffix("I")
    for suffix, factor in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def _pairs(raw: str) -> dict[str, str]:
    """``key=value,key=value`` (for storage options)."""
    result = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result


def _words(raw: str) -> tuple[str, ...]:
    return tuple(filter(None, (part.strip() for part in raw.replace(",", " ").split())))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Option:
    """One setting: its flag/variable name, parser, default and help text."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "127.0.0.1", "address to listen on"),
    Option("port", int, 4318, "port to listen on (4318 is the OTLP/HTTP port)"),
    Option(
        "warehouse",
        str,
        "./warehouse",
        "where tables live: a local folder or an s3://, az://, abfss:// or gs:// URI",
    ),
    Option("auto_create", _boolean, False, "create a missing table on its first request instead of answering 404"),
    Option(
        "auto_create_max_tables",
        int,
        100,
        "most tables --auto-create makes for one principal (per process); past it, 403",
        "N",
    ),
    Option(
        "create_tables",
        _words,
        (),
        "table sets to create at start-up, as catalog.schema.prefix (comma-separated)",
        "CATALOG.SCHEMA.PREFIX",
    ),
    Option("max_body_bytes", _size, 64 << 20, "largest request body, before and after decompression", "BYTES"),
    Option(
        "read_timeout",
        float,
        30.0,
        "longest pause while a request body arrives; a stalled body is answered 408",
        "SECONDS",
    ),
    *(
        Option(
            f"default_{signal}_table",
            str,
            None,
            f"table for {signal} requests that carry no X-Databricks-UC-Table-Name header",
            "CATALOG.SCHEMA.TABLE",
        )
        for signal in SIGNALS
    ),
    Option("storage_options", _pairs, {}, "object-store options as key=value,key=value", "KEY=VALUE,..."),
    Option("commit_max_rows", int, 200_000, "most rows in one commit; a fuller queue commits at once", "ROWS"),
    Option(
        "commit_max_bytes",
        _size,
        64 << 20,
        "most OTLP payload bytes in one commit; a fuller queue commits now",
        "BYTES",
    ),
    Option(
        "commit_max_delay",
        float,
        0.05,
        "commit each table at most this often; an idle table commits at once, a busy one gathers requests",
        "SECONDS",
    ),
    Option(
        "commit_max_backoff",
        float,
        1.0,
        "while other writers (replicas, --workers) commit to the same table in between, grow the "
        "commit delay up to this (= --commit-max-delay: never)",
        "SECONDS",
    ),
    Option(
        "commit_deadline",
        float,
        8.0,
        "answer 503 + Retry-After if a request's commit has not finished this long after it arrived "
        "(keep it below the exporters' 10 s timeout; 0 = wait for ever)",
        "SECONDS",
    ),
    Option(
        "resend_window",
        float,
        600.0,
        "a byte-identical resend of a request answered 503 at the deadline joins that commit "
        "or is answered 200 without writing, for this long (0 = off)",
        "SECONDS",
    ),
    Option(
        "max_buffer_bytes",
        _size,
        1 << 30,
        "bytes held for unanswered requests, per process; past it requests get 503 + Retry-After",
        "BYTES",
    ),
    Option("workers", int, 1, "server processes sharing the port (each table committed by one of them)", "N"),
    Option(
        "maintenance_interval",
        float,
        300.0,
        "seconds between background compaction/vacuum of the tables this server writes; replicas "
        "writing the same tables take turns (0 = off)",
        "SECONDS",
    ),
    Option("tokens", str, None, "token file (TOML) of principals, their tables and rate limits", "FILE"),
    Option(
        "insecure_no_auth",
        _boolean,
        False,
        "accept unauthenticated writes on a non-loopback address (without --tokens)",
    ),
    Option(
        "ops_host",
        str,
        "127.0.0.1",
        "address of the ops listener (/readyz, /metrics, /healthz); 0.0.0.0 in a pod for probes and scrapes",
    ),
    Option(
        "ops_port",
        int,
        9318,
        "port of the ops listener; 0 = no ops listener, the same as --port = ops endpoints on the OTLP port",
    ),
    Option(
        "readiness_interval",
        float,
        5.0,
        "seconds between warehouse write probes behind /readyz (answers in between are cached)",
        "SECONDS",
    ),
    Option(
        "max_connections",
        int,
        0,
        "open connections per process; past it new ones get 503 (0 = the file-descriptor limit less a reserve)",
        "N",
    ),
    Option(
        "forwarded_allow_ips",
        str,
        "",
        "proxy addresses trusted for X-Forwarded-For/-Proto, comma-separated ('' = trust none, '*' = all)",
        "ADDRESSES",
    ),
    Option("log_level", str, "info", "debug, info, warning or error"),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, validated once at start-up."""

    host: str = "127.0.0.1"
    port: int = 4318
    warehouse: str = "./warehouse"
    auto_create: bool = False
    auto_create_max_tables: int = 100
    create_tables: tuple[str, ...] = ()
    max_body_bytes: int = 64 << 20
    read_timeout: float = 30.0
    default_metrics_table: str | None = None
    default_logs_table: str | None = None
    default_traces_table: str | None = None
    storage_options: Mapping[str, str] = field(default_factory=dict)
    commit_max_rows: int = 200_000
    commit_max_bytes: int = 64 << 20
    commit_max_delay: float = 0.05
    commit_max_backoff: float = 1.0
    commit_deadline: float = 8.0
    resend_window: float = 600.0
    max_buffer_bytes: int = 1 << 30
    workers: int = 1
    maintenance_interval: float = 300.0
    tokens: str | None = None
    insecure_no_auth: bool = False
    ops_host: str = "127.0.0.1"
    ops_port: int = 9318
    readiness_interval: float = 5.0
    max_connections: int = 0
    forwarded_allow_ips: str = ""
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in ("port", "ops_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} {getattr(self, name)} is out of range; use 0–65535.")
        for name in ("auto_create_max_tables", "max_connections"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)} must not be negative.")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes {self.max_body_bytes} must be positive.")
        for name in ("commit_max_rows", "commit_max_bytes", "max_buffer_bytes", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} must be at least 1.")
        for name in (
            "commit_max_delay",
            "commit_max_backoff",
            "maintenance_interval",
            "read_timeout",
            "commit_deadline",
            "resend_window",
            "readiness_interval",
        ):
            if not getattr(self, name) >= 0:  # refuses nan too
                raise ConfigError(f"{name} {getattr(self, name)} must not be negative.")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"log_level {self.log_level!r} must be debug, info, warning or error.")
        names = [*self.create_tables, *filter(None, map(self.default_table, SIGNALS))]
        for name in names:
            try:
                TableName.parse(name)
            except BadTableName as exc:
                raise ConfigError(f"{exc} (in the settings)") from exc

    def check_safe_to_listen(self, advice: str | None = None) -> None:
        """Refuse to serve unauthenticated writes beyond this machine (``serve`` only: the
        other commands share the settings, e.g. a container's OTEL_INGEST_HOST=0.0.0.0).
        ``advice`` replaces the default remedy (flags), e.g. with variables in a container."""
        if self.tokens is None and not self.insecure_no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"Refusing to listen on {self.host} without a token file: anyone who can reach it could "
                "write your tables. "
                + (advice or "Pass --tokens FILE, listen on 127.0.0.1, or pass --insecure-no-auth.")
            )

    @property
    def ops_listener(self) -> str:
        """``separate``, ``shared`` (ops endpoints on the OTLP port) or ``off``."""
        if self.ops_port == 0:
            return "off"
        if self.ops_port == self.port:
            return "shared"
        return "separate"

    @property
    def loopback_only(self) -> bool:
        """No token file and no --insecure-no-auth: only this machine may write, so a
        request must also be addressed to a loopback name (a browser's DNS rebinding
        would otherwise reach the server under a foreign name)."""
        return self.tokens is None and not self.insecure_no_auth

    def default_table(self, signal: Signal) -> str | None:
        value: str | None = getattr(self, f"default_{signal}_table")
        return value

    def to_environment(self) -> dict[str, str]:
        """The settings as one environment variable, for worker processes to rebuild them."""
        return {SETTINGS_JSON_ENV: json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_environment(cls) -> Settings:
        values = json.loads(os.environ[SETTINGS_JSON_ENV])
        values["create_tables"] = tuple(values["create_tables"])
        return cls(**values)

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from parsed flags (None = not given), then the environment, then defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in OPTIONS:
            value = flags.get(option.name)
            if value is None and option.env in environ:
                try:
                    value = option.parse(environ[option.env])
                except ValueError as exc:
                    raise ConfigError(f"{option.env}={environ[option.env]!r} is invalid: {exc}.") from exc
            if value is not None:
                values[option.name] = value
        return cls(**values)
