"""The ``otel-ingest`` command: ``serve``, ``tables create``, ``tables retention``, ``sql``, ``maintain``,
``tokens new``, ``usage``, ``dashboard`` and ``demo``.

Every ``serve`` flag can also be given as an ``OTEL_INGEST_<FLAG>`` environment
variable (``--max-body-bytes`` ↔ ``OTEL_INGEST_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import resource
import secrets
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otel_ingest import __version__, preflight
from otel_ingest.app import configure_logging
from otel_ingest.auth import TokenFileError, load_token_file
from otel_ingest.config import OPTIONS, OPTIONS_BY_NAME, ConfigError, Settings
from otel_ingest.errors import IngestError, TableNotFound
from otel_ingest.handoff import DIRECTORY_VARIABLE as HANDOFF_DIRECTORY
from otel_ingest.maintenance import DELTA_DEFAULT_RETENTION, maintain
from otel_ingest.schema import DDLError, parse_ddl
from otel_ingest.tables import (
    DEFAULT_DELETED_FILE_RETENTION,
    DEFAULT_LOG_RETENTION,
    DELETED_FILE_RETENTION_PROPERTY,
    LOG_RETENTION_PROPERTY,
    TableName,
    Warehouse,
    interval_seconds,
    table_set,
)
from otel_ingest.usage.pricing import PriceFileError

log = logging.getLogger("otel_ingest")

_STORAGE_OPTIONS = ("warehouse", "storage_options")
SHUTDOWN_SECONDS = 30


def _add_option(parser: argparse.ArgumentParser, name: str) -> None:
    option = OPTIONS_BY_NAME[name]
    default = option.default
    shown = ", ".join(default) if isinstance(default, tuple) else default
    help_text = f"{option.help} [env {option.env}; default {shown!r}]"
    if option.parse is bool or name in ("auto_create", "insecure_no_auth"):
        parser.add_argument(option.flag, dest=name, action="store_const", const=True, default=None, help=help_text)
        return

    def parse(raw: str) -> object:
        try:
            return option.parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{option.flag} {raw!r}: {exc}") from exc

    parser.add_argument(option.flag, dest=name, type=parse, default=None, metavar=option.metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-ingest",
        description="OTLP/HTTP ingestion into Delta tables, compatible with Databricks' OpenTelemetry endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"otel-ingest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the OTLP/HTTP server")
    for option in OPTIONS:
        _add_option(serve, option.name)

    tables = commands.add_parser("tables", help="manage table sets")
    table_commands = tables.add_subparsers(dest="tables_command", required=True)
    create = table_commands.add_parser(
        "create", help="create <prefix>_otel_metrics, <prefix>_otel_logs and <prefix>_otel_spans"
    )
    create.add_argument("prefix", metavar="CATALOG.SCHEMA.PREFIX")
    for name in _STORAGE_OPTIONS:
        _add_option(create, name)

    maintain = commands.add_parser(
        "maintain", help="compact small files, checkpoint, vacuum and clean the log of tables"
    )
    maintain.add_argument("target", metavar="CATALOG.SCHEMA.TABLE_OR_PREFIX")
    maintain.add_argument(
        "--retention-hours",
        type=int,
        default=None,
        help="override the table's delta.deletedFileRetentionDuration: delete replaced files older than "
        "this, even if the table says to keep them longer (readers of older versions may then fail) "
        "[default: each table's own retention]",
    )
    maintain.add_argument(
        "--force",
        action="store_true",
        help="run even if the table's maintenance lease is held: only when no server maintains the table "
        "(e.g. one was killed mid-pass and its claim has not lapsed yet)",
    )
    for name in _STORAGE_OPTIONS:
        _add_option(maintain, name)

    retention = table_commands.add_parser(
        "retention",
        help="show or change how long a table keeps replaced files and log entries",
        description="Without options, print each table's retentions. Values are Delta intervals, "
        "e.g. 'interval 2 hours' or 'interval 7 days'.",
    )
    retention.add_argument("target", metavar="CATALOG.SCHEMA.TABLE_OR_PREFIX")
    retention.add_argument(
        "--deleted-files",
        metavar="INTERVAL",
        help=f"delta.deletedFileRetentionDuration: how long vacuum keeps replaced data files, i.e. how long "
        f"a query may run and how far back time travel reaches [default for new tables "
        f"{DEFAULT_DELETED_FILE_RETENTION!r}]",
    )
    retention.add_argument(
        "--log",
        metavar="INTERVAL",
        help=f"delta.logRetentionDuration: how long log entries are kept [default for new tables "
        f"{DEFAULT_LOG_RETENTION!r}]",
    )
    for name in _STORAGE_OPTIONS:
        _add_option(retention, name)

    tokens = commands.add_parser("tokens", help="make token file entries")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    new = token_commands.add_parser("new", help="print a new random token and its [[principals]] entry")
    new.add_argument("name", help="the principal's name, shown in logs and metrics")
    new.add_argument("tables", nargs="+", metavar="TABLE_PATTERN", help="e.g. 'main.telemetry.claude_*'")

    gateway = commands.add_parser("gateway", help="run the AI gateway for coding agents (docs/gateway.md)")
    gateway.add_argument("config", type=Path, metavar="CONFIG.toml", help="endpoints, tables and limits")
    gateway.add_argument("--host", default=None, help="address to listen on [default: the config's, 127.0.0.1]")
    gateway.add_argument("--port", type=int, default=None, help="port to listen on [default: the config's, 4000]")
    gateway.add_argument(
        "--ops-host", default=None, help="address of the ops listener (/metrics, /healthz) [default: 127.0.0.1]"
    )
    gateway.add_argument(
        "--ops-port",
        type=int,
        default=None,
        help="port of the ops listener; 0 = none, the same as --port = on the gateway port [default: 9400]",
    )
    gateway.add_argument("--log-level", default="info", help="debug, info, warning or error")

    sql = commands.add_parser("sql", help="run the CREATE TABLE statements of a SQL file (Databricks DDL)")
    sql.add_argument("file", type=Path, metavar="FILE")
    for name in _STORAGE_OPTIONS:
        _add_option(sql, name)
    _add_usage_commands(commands)
    return parser


def _add_usage_commands(commands: Any) -> None:
    """``usage``, ``dashboard`` and ``demo`` (otel_ingest.usage / otel_ingest.dashboard)."""
    usage = commands.add_parser(
        "usage", help="coding-agent usage report: tokens and cost by day, agent, model, user, session"
    )
    usage.add_argument(
        "period",
        nargs="?",
        choices=["daily", "weekly", "monthly", "session", "blocks", "prices"],
        default=None,
        help="a report, or 'prices': write the prices table the SQL views join (docs/usage.md)",
    )
    usage.add_argument(
        "--table",
        default="main.telemetry.usage_prices",
        help="usage prices: the table to write [default main.telemetry.usage_prices]",
    )
    usage.add_argument(
        "--by", default=None, help="group by any of agent,model,user,session,day,week,month,block,table_set"
    )
    usage.add_argument("--since", default=None, help="from this date/time (2026-11-01, 2026-11-01T09:00, 7d)")
    usage.add_argument("--until", default=None, help="up to this date (inclusive) or time (exclusive)")
    usage.add_argument("--agent", action="append", default=[], help="only this agent (repeatable)")
    usage.add_argument("--user", action="append", default=[], help="only this user (repeatable)")
    usage.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
    usage.add_argument("--table-set", action="append", default=[], help="only this catalog.schema.prefix")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON array, one object per group")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per group")
    usage.add_argument("--prices", default=None, help="price-override TOML file (see docs/usage.md)")
    usage.add_argument("--no-refresh", action="store_true", help="report what the derived tables hold now")
    usage.add_argument("--refresh-only", action="store_true", help="refresh the derived tables and print figures")
    for name in _STORAGE_OPTIONS:
        _add_option(usage, name)

    dashboard = commands.add_parser("dashboard", help="serve the usage dashboard (its own process and port)")
    demo = commands.add_parser(
        "demo", help="replay sample captures of Claude Code, Gemini CLI and Codex, then serve the dashboard"
    )
    for each in (dashboard, demo):
        each.add_argument("--host", default="127.0.0.1", help="address to listen on [default 127.0.0.1]")
        each.add_argument("--port", type=int, default=DASHBOARD_PORT, help=f"port [default {DASHBOARD_PORT}]")
        each.add_argument("--tokens", default=None, help="token file; principals need read = [...] grants")
        each.add_argument("--prices", default=None, help="price-override TOML file (see docs/usage.md)")
        each.add_argument("--refresh-seconds", type=float, default=30.0, help="refresh the usage tables this often")
        for name in _STORAGE_OPTIONS:
            _add_option(each, name)


def _warehouse(settings: Settings) -> Warehouse:
    return Warehouse(settings.warehouse, dict(settings.storage_options))


def _raise_descriptor_limit() -> int:
    """Raise the soft open-file limit to the hard one (every connection holds a descriptor;
    systemd's default soft limit is 1,024); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("Could not raise the open-file limit from %d to %d: %s.", soft, target, exc)
            return soft
        log.info("Raised the open-file limit from %d to %d (the hard limit).", soft, target)
        return target
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limit(settings: Settings, descriptors: int) -> int:
    """--max-connections, or the descriptor limit less a reserve for table files,
    object-store connections and the runtime."""
    return settings.max_connections or max(16, descriptors - min(256, descriptors // 2))


def _listen(host: str, port: int, what: str, hint: str) -> socket.socket:
    """A bound socket for uvicorn (which listens on it), inherited by worker processes."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on {host}:{port} for {what}: {exc.strerror or exc}; {hint}.") from exc
    sock.set_inheritable(True)
    return sock


def _serve(settings: Settings) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from otel_ingest.app import create_app
    from otel_ingest.connection import BoundedHeadProtocol

    if settings.tokens is not None:
        load_token_file(settings.tokens)  # fail fast, before any worker starts
    descriptors = _raise_descriptor_limit()
    max_connections = connection_limit(settings, descriptors)
    sockets = [_listen(settings.host, settings.port, "OTLP", "pass another --port")]
    settings = dataclasses.replace(settings, port=sockets[0].getsockname()[1])
    if settings.ops_listener == "separate":
        ops = _listen(settings.ops_host, settings.ops_port, "ops endpoints", "pass another --ops-port, or 0 for none")
        sockets.append(ops)
        settings = dataclasses.replace(settings, ops_port=ops.getsockname()[1])
    log.info("OTLP/HTTP on http://%s:%d.", settings.host, settings.port)
    if settings.ops_listener == "separate":
        log.info("/readyz and /metrics on http://%s:%d (--ops-host, --ops-port).", settings.ops_host, settings.ops_port)
    else:
        where = "on the OTLP port" if settings.ops_listener == "shared" else "off"
        log.info("/readyz and /metrics: %s (--ops-port).", where)
    log.info("At most %d connections per process (--max-connections).", max_connections)
    options: dict[str, Any] = {
        "log_level": settings.log_level,
        # On SIGTERM, requests already received are committed and answered before exit.
        "timeout_graceful_shutdown": SHUTDOWN_SECONDS,
        # otel_ingest.access logs every request with its principal and table instead.
        "access_log": False,
        # uvicorn's httptools protocol, with bounds on request heads and connections.
        "http": functools.partial(BoundedHeadProtocol, max_connections=max_connections),
        # X-Forwarded-For names the client only when it comes from a configured proxy;
        # uvicorn trusted it from loopback, so any local process could forge log lines.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
        "workers": settings.workers,
    }
    if settings.workers > 1:
        # Worker processes import the app by name and rebuild the settings from this variable.
        os.environ.update(settings.to_environment())
        # The workers' slot locks and sockets, for one committer per table (handoff.py).
        with tempfile.TemporaryDirectory(prefix="otel-ingest-workers-") as handoff_directory:
            os.environ[HANDOFF_DIRECTORY] = handoff_directory
            config = uvicorn.Config("otel_ingest.app:create_app_from_environment", factory=True, **options)
            Multiprocess(config, sockets=sockets).run()
        return 0
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    server.run(sockets=sockets)
    return 0 if server.started else 3


def _tables_create(settings: Settings, prefix: str) -> int:
    warehouse = _warehouse(settings)
    for signal, name in table_set(prefix).items():
        warehouse.create_for_signal(name, signal)
        print(f"{name}: ready at {warehouse.location(name)}")
    return 0


def _sql(settings: Settings, file: Path) -> int:
    definitions = parse_ddl(file.read_text(encoding="utf-8"))
    warehouse = _warehouse(settings)
    for definition in definitions:
        if "<" in definition.name:
            raise DDLError(
                f"Table name {definition.name!r} still holds a placeholder; replace <catalog>, "
                "<schema> and <table_prefix> with real names."
            )
        warehouse.create_definition(definition)
        name = TableName.parse(definition.name)
        print(f"{name}: ready at {warehouse.location(name)}")
    return 0


def _tokens_new(name: str, tables: list[str]) -> int:
    """The token goes to stderr and only the entry to stdout, so ``>> tokens.toml`` never
    stores the plaintext token (the file keeps its SHA-256 only)."""
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    patterns = ", ".join(json.dumps(t.lower()) for t in tables)
    print(f"Token for {name} (give it to the client; it is not stored anywhere): {token}", file=sys.stderr)
    print("[[principals]]")
    print(f"name = {json.dumps(name)}")
    print(f'token_sha256 = "{digest}"')
    print(f"tables = [{patterns}]")
    return 0


def _existing_tables(warehouse: Warehouse, target: str) -> list[TableName]:
    """The table ``target``, or the existing tables of the set with prefix ``target``."""
    name = TableName.parse(target)
    names = [name] if warehouse.exists(name) else [n for n in table_set(target).values() if warehouse.exists(n)]
    if not names:
        raise TableNotFound(f"No table {target} and no table set with prefix {target} exists in {warehouse.root}.")
    return names


def _maintain(settings: Settings, target: str, retention_hours: int | None, force: bool) -> int:
    warehouse = _warehouse(settings)
    for each in _existing_tables(warehouse, target):
        report = maintain(warehouse, each, retention_hours, force=force)
        print(report)
        if report.skipped:
            # Two reasons (maintenance.py): another pass holds the lease, or the vacuum lost its
            # commit races to busy writers; running again helps both, --force only the first.
            print(
                f"otel-ingest: {each} was not fully maintained; run it again later, "
                "or now with --force if no server is maintaining it.",
                file=sys.stderr,
            )
    return 0


def _retention(settings: Settings, target: str, deleted_files: str | None, log_retention: str | None) -> int:
    warehouse = _warehouse(settings)
    changes = {
        key: value
        for key, value in ((DELETED_FILE_RETENTION_PROPERTY, deleted_files), (LOG_RETENTION_PROPERTY, log_retention))
        if value is not None
    }
    for key, value in changes.items():
        try:
            interval_seconds(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
    for name in _existing_tables(warehouse, target):
        configuration = warehouse.set_properties(name, changes) if changes else warehouse.properties(name)
        files = configuration.get(DELETED_FILE_RETENTION_PROPERTY, f"{DELTA_DEFAULT_RETENTION} (Delta's default)")
        log_entries = configuration.get(LOG_RETENTION_PROPERTY, "interval 30 days (Delta's default)")
        print(f"{name}: deleted files kept {files}, log entries kept {log_entries}")
    return 0


def _listen_advice(host_flag: str | None) -> str | None:
    """How to fix a refused unauthenticated start, in the terms the user set it up in."""
    if preflight.in_container():
        return (
            "Mount a token file and set OTEL_INGEST_TOKENS to its path (make one with `docker run --rm "
            "otel-ingest tokens new NAME 'CATALOG.SCHEMA.*' > tokens.toml`), or set "
            "OTEL_INGEST_INSECURE_NO_AUTH=true on a trusted network."
        )
    if host_flag is None and OPTIONS_BY_NAME["host"].env in os.environ:
        return (
            "Set OTEL_INGEST_TOKENS to a token file, set OTEL_INGEST_HOST to a loopback address, "
            "or set OTEL_INGEST_INSECURE_NO_AUTH=true."
        )
    return None


def _gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from otel_ingest.config import is_loopback
    from otel_ingest.gateway.app import create_gateway_app
    from otel_ingest.gateway.config import GatewayConfigError, load_config
    from otel_ingest.gateway.grants import check_grants

    configure_logging(args.log_level)
    try:
        config = load_config(str(args.config))
        config = dataclasses.replace(
            config,
            host=args.host or config.host,
            port=config.port if args.port is None else args.port,
            ops_host=args.ops_host or config.ops_host,
            ops_port=config.ops_port if args.ops_port is None else args.ops_port,
        )
        if config.tokens is not None:
            check_grants(load_token_file(config.tokens), config.endpoints, config.tokens)
        if config.tokens is None and not is_loopback(config.host):
            raise GatewayConfigError(
                f"refusing to serve {config.host} without a token file: anyone could spend "
                "the provider keys. Set [gateway] tokens."
            )
        sockets = [_listen(config.host, config.port, "the gateway", "pass another --port")]
        if config.ops_listener == "separate":
            ops_hint = "pass another --ops-port, or 0 for none"
            sockets.append(_listen(config.ops_host, config.ops_port, "the gateway's ops endpoints", ops_hint))
    except (GatewayConfigError, TokenFileError, ConfigError) as error:
        print(f"otel-ingest gateway: {error}", file=sys.stderr)
        return 2
    if config.ops_listener == "separate":
        log.info("/metrics on http://%s:%d (--ops-host, --ops-port).", config.ops_host, config.ops_port)
    server = uvicorn.Server(
        uvicorn.Config(
            create_gateway_app(config),
            log_level=args.log_level,
            # The gateway logs every call with its principal, endpoint and tokens instead.
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        )
    )
    server.run(sockets=sockets)
    return 0 if server.started else 3


def _usage(settings: Settings, args: argparse.Namespace) -> int:
    from otel_ingest.usage import query, report
    from otel_ingest.usage.pricing import Pricer, load_overrides
    from otel_ingest.usage.store import UsageStore

    try:
        keys = report.group_keys(None if args.period == "prices" else args.period, args.by)
        filters = query.Filters(
            since=query.parse_time(args.since) if args.since else None,
            until=query.parse_time(args.until, end=True) if args.until else None,
            agents=tuple(args.agent),
            users=tuple(args.user),
            models=tuple(args.model),
            table_sets=tuple(args.table_set),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    store = UsageStore(_warehouse(settings), Pricer(load_overrides(args.prices) if args.prices else []))
    if not args.no_refresh:
        refreshed = store.refresh()
        if args.refresh_only:
            print(
                f"Refreshed from {refreshed.raw_tables} raw tables: read {refreshed.files_read} files, "
                f"{refreshed.rows_read:,} rows; added {refreshed.added} in {refreshed.seconds:.2f} s."
            )
            return 0
    if args.period == "prices":
        return _usage_prices(store, filters, args)
    usage = report.load(store, filters, keys)
    items = report.rows(usage, keys)
    if args.json:
        print(report.to_json(items))
    elif args.csv:
        print(report.to_csv(items, keys), end="")
    else:
        print(report.to_table(items, keys))
        for note in (report.unpriced_note(usage), report.mismatch_note(usage)):
            if note:
                print(note, file=sys.stderr)
    return 0


def _usage_prices(store: Any, filters: Any, args: argparse.Namespace) -> int:
    """``otel-ingest usage prices``: the rates of every (agent, model) in the facts, by day."""
    import datetime as dt

    import deltalake
    import polars as pl

    from otel_ingest.usage import prices_table, query

    facts = (
        query.Filters(since=filters.since, until=filters.until, agents=filters.agents, models=filters.models)
        .apply(store.scan("model_calls"))
        .filter(pl.col("model").is_not_null())
        .select("agent", "model", "day")
        .collect()
    )
    if not facts.height:
        raise ConfigError("No model calls in this range: nothing to price (see otel-ingest usage).")
    first = filters.since.date() if filters.since else dt.date.fromisoformat(str(facts["day"].min()))
    last = max(dt.date.fromisoformat(str(facts["day"].max())), query.today())
    prices = prices_table.table(store.pricer, facts.select("agent", "model").unique().iter_rows(), first, last)
    if args.csv:
        print(pl.from_arrow(prices).write_csv(), end="")  # type: ignore[union-attr]
        return 0
    try:
        name = TableName.parse(args.table)
    except ValueError as error:
        raise ConfigError(f"--table {args.table!r}: {error}") from error
    location = store.warehouse.location(name)
    if store.warehouse.is_local:
        os.makedirs(location, exist_ok=True)
    deltalake.write_deltalake(
        location, prices, mode="overwrite", schema_mode="overwrite", storage_options=store.warehouse.storage_options
    )
    print(f"Wrote {prices.num_rows} prices of {facts.select('agent', 'model').n_unique()} models to {name}.")
    return 0


DASHBOARD_PORT = 8090


def _dashboard(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from otel_ingest.config import is_loopback
    from otel_ingest.dashboard.app import DashboardSettings, create_dashboard_app
    from otel_ingest.usage.pricing import Pricer, load_overrides

    if args.tokens is None and not is_loopback(args.host):
        raise ConfigError(
            f"Refusing to serve the dashboard on {args.host} without --tokens: the usage data names people. "
            "Give a token file whose principals have read = [...] grants, or listen on 127.0.0.1."
        )
    if args.tokens is not None:
        load_token_file(args.tokens)
    warehouse = _warehouse(settings)
    if args.command == "demo":
        from otel_ingest.dashboard.demo import replay_samples

        stored = replay_samples(warehouse.root)
        print(f"Replayed {stored} sample requests into {warehouse.root}.")
    app = create_dashboard_app(
        DashboardSettings(
            warehouse=warehouse,
            tokens=args.tokens,
            pricer=Pricer(load_overrides(args.prices) if args.prices else []),
            refresh_seconds=args.refresh_seconds,
        )
    )
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"Usage dashboard: http://{shown}:{args.port}/?since=2026-11-01", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level, access_log=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tokens":
        return _tokens_new(args.name, args.tables)
    if args.command == "gateway":
        return _gateway(args)
    try:
        settings = Settings.from_sources(vars(args))
        configure_logging(settings.log_level)
        if args.command == "usage":
            return _usage(settings, args)
        if args.command in ("dashboard", "demo"):
            return _dashboard(settings, args)
        if args.command == "serve":
            settings.check_safe_to_listen(_listen_advice(args.host))
            if settings.tokens is not None:
                preflight.check_token_file(settings.tokens)
            preflight.check_warehouse(_warehouse(settings))
            return _serve(settings)
        if args.command == "tables" and args.tables_command == "retention":
            return _retention(settings, args.target, args.deleted_files, args.log)
        if args.command == "tables":
            return _tables_create(settings, args.prefix)
        if args.command == "maintain":
            return _maintain(settings, args.target, args.retention_hours, args.force)
        return _sql(settings, args.file)
    except (ConfigError, DDLError, IngestError, OSError, TokenFileError, PriceFileError) as error:
        print(f"otel-ingest: {error}", file=sys.stderr)
        return 2
