"""The dashboard's web app: the page, its JSON API and CSV/JSON export, sign-in.

Access: with a token file, every request needs a principal with ``read`` grants — a
bearer token (scripts) or the session cookie set by signing in once on ``/login``
(HttpOnly, SameSite=Strict). A principal sees only the table sets whose tables its
``read`` patterns match. Without a token file the dashboard only listens on loopback
(the CLI refuses otherwise), and everyone sees everything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import io
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import polars as pl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from otel_ingest.auth import Authenticator, Principal
from otel_ingest.errors import Unauthorized
from otel_ingest.schema import TABLE_SUFFIXES
from otel_ingest.tables import Warehouse
from otel_ingest.usage import query, rolled, rollup
from otel_ingest.usage.pricing import Pricer
from otel_ingest.usage.store import UsageStore

from . import panels

log = logging.getLogger("otel_ingest.dashboard")

COOKIE = "otel_ingest_session"
SESSION_SECONDS = 12 * 3600
# Facts of recently shown ranges kept in memory (dropped when the derived tables change).
CACHE_ENTRIES = 4
CACHE_BYTES = 512 * 2**20
SUMMARY_ENTRIES = 64
STATIC_FILES = {"dashboard.js": "text/javascript", "chart.umd.min.js": "text/javascript", "dashboard.css": "text/css"}


@dataclass
class DashboardSettings:
    warehouse: Warehouse
    tokens: str | None = None
    pricer: Pricer | None = None
    refresh_seconds: float = 30.0
    # Serve totals, charts and leaderboards from the per-day rollup tables (False: from the
    # facts, as before the rollups existed; bench/usage.py compares the two).
    rollups: bool = True


class Sessions:
    """Browser sessions: a random id in the cookie → the principal's name, with expiry."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[str, float]] = {}

    def new(self, principal: Principal) -> str:
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (principal.name, time.monotonic() + SESSION_SECONDS)
        return session

    def principal_name(self, session: str | None) -> str | None:
        if not session or session not in self._sessions:
            return None
        name, expires = self._sessions[session]
        if time.monotonic() > expires:
            del self._sessions[session]
            return None
        return name

    def drop(self, session: str | None) -> None:
        if session:
            self._sessions.pop(session, None)


def _static(name: str) -> str:
    return str(resources.files("otel_ingest.dashboard").joinpath("static", name))


class Dashboard:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.store = UsageStore(settings.warehouse, settings.pricer)
        self.auth = Authenticator(settings.tokens)
        self.sessions = Sessions()
        self._refresh_lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple[query.Filters, tuple[int, ...]], rolled.Rolled] = (
            collections.OrderedDict()
        )
        self._bodies: collections.OrderedDict[tuple[Any, ...], dict[str, Any]] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self.last_refresh: datetime | None = None

    # ------------------------------------------------------------------ access

    def principal(self, request: Request) -> Principal | None:
        """The signed-in principal; None when no token file is configured (open on loopback).
        Raises Unauthorized without a valid bearer token or session cookie."""
        if not self.auth.enabled:
            return None
        authorization = request.headers.get("authorization")
        if authorization:
            return self.auth.authenticate(authorization)
        name = self.sessions.principal_name(request.cookies.get(COOKIE))
        found = next((p for p in self.auth.principals if p.name == name), None)
        if found is None:
            raise Unauthorized("Sign in on /login, or send Authorization: Bearer <token>.")
        return found

    @staticmethod
    def readable(principal: Principal | None, table_set: str) -> bool:
        if principal is None:
            return True
        return any(principal.may_read(table_set + suffix) for suffix in TABLE_SUFFIXES.values())

    # ------------------------------------------------------------------- data

    def refresh(self) -> None:
        if not self._refresh_lock.acquire(blocking=False):
            return  # a refresh is already running
        try:
            result = self.store.refresh()
            self.last_refresh = datetime.now(UTC)
            if result.added:
                log.info("Usage refreshed: %s in %.2f s.", result.added, result.seconds)
        except Exception:
            log.exception("Usage refresh failed; showing the facts refreshed before.")
        finally:
            self._refresh_lock.release()

    def versions(self) -> tuple[int, ...]:
        """The derived tables' current versions (-1: not created yet)."""
        return tuple(
            -1 if (table := self.store.snapshot(name)) is None else table.version()
            for name in ("model_calls", "activity", *rollup.SOURCES)
        )

    def summary(self, request: Request, principal: Principal | None, stack: str) -> dict[str, Any]:
        """Every panel and the filter options. A request for an explicit range whose answer
        was computed at the derived tables' current versions, for the same grants, is
        answered from memory: many viewers of one range cost one computation per refresh."""
        params = request.query_params
        key = None
        if params.get("since"):
            grants = None if principal is None else (principal.name, tuple(principal.read))
            key = (tuple(sorted(params.multi_items())), self.versions(), grants, stack)
            with self._cache_lock:
                found = self._bodies.get(key)
                if found is not None:
                    self._bodies.move_to_end(key)
                    return dict(found)
        usage, options = self.usage(request, principal)
        body = panels.summary(usage, stack)
        body["filters"] = options
        if key is not None:
            with self._cache_lock:
                self._bodies[key] = body
                while len(self._bodies) > SUMMARY_ENTRIES:
                    self._bodies.popitem(last=False)
        return dict(body)

    def _load(self, filters: query.Filters) -> rolled.Rolled:
        """The range's counted usage as rollup rows (``rolled.load``), kept for the next
        requests of the same range until a refresh (here or in any other process) commits
        a new version of the derived tables. The page asks for whole days, so every viewer
        of a range shares one entry."""
        key = (filters, self.versions())
        with self._cache_lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        assert filters.since is not None
        if self.settings.rollups:
            usage = rolled.load(self.store, filters.since, filters.until)
        else:
            usage = rolled.from_usage(query.load(self.store, filters), self.store)
        size = _size(usage)
        if size <= CACHE_BYTES:
            with self._cache_lock:
                self._cache[key] = usage
                while len(self._cache) > CACHE_ENTRIES or (
                    len(self._cache) > 1 and sum(_size(u) for u in self._cache.values()) > CACHE_BYTES
                ):
                    self._cache.popitem(last=False)
        return usage

    def _readable_rows(self, frame: pl.DataFrame, principal: Principal | None) -> pl.DataFrame:
        """The rows of the table sets the principal may read (decided once per table set)."""
        if principal is None or not frame.height:
            return frame
        allowed = [t for t in frame["table_set"].unique().to_list() if self.readable(principal, t)]
        return frame.filter(pl.col("table_set").is_in(allowed))

    def usage(self, request: Request, principal: Principal | None) -> tuple[rolled.Rolled, dict[str, list[str]]]:
        """The usage in the request's time range and filters, and the values the filters offer."""
        params = request.query_params
        now = datetime.now(UTC)
        since = query.parse_time(params["since"]) if params.get("since") else now - timedelta(days=30)
        until = query.parse_time(params["until"], end=True) if params.get("until") else None
        everything = self._load(query.Filters(since=since, until=until))
        mismatches = self._readable_rows(everything.mismatches, principal)
        if principal is not None:
            table_sets = pl.concat([everything.calls["table_set"], everything.activity["table_set"]]).unique()
            allowed = [t for t in table_sets.to_list() if self.readable(principal, t)]
            everything = everything.where(table_set=allowed or ["\x00none"])
        calls, activity = everything.calls, everything.activity
        options = {
            key: sorted(v for v in pl.concat([calls[key], activity[key]]).unique().to_list() if v is not None)
            for key in rolled.FILTER_COLUMNS
        }
        wanted = {key: [w for w in params.getlist(key) if w] for key in rolled.FILTER_COLUMNS}
        chosen = everything.where(**wanted)
        return rolled.Rolled(chosen.calls, chosen.activity, mismatches, chosen.details), options


def _size(usage: rolled.Rolled) -> int:
    frames = [usage.calls, usage.activity]
    if usage.details is not None:
        frames += [usage.details.facts.calls, usage.details.facts.activity]
    return sum(int(frame.estimated_size()) for frame in frames)


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_dashboard_app(settings: DashboardSettings) -> Starlette:
    dashboard = Dashboard(settings)

    async def guard(request: Request) -> Principal | Response | None:
        try:
            principal = dashboard.principal(request)
        except Unauthorized as error:
            if request.url.path.startswith("/api/"):
                return _error(401, str(error))
            return RedirectResponse("/login", status_code=303)
        if principal is not None and not principal.read:
            return _error(403, f"Principal {principal.name!r} has no read grants; add read = [...] in the token file.")
        return principal

    async def page(request: Request) -> Response:
        principal = await guard(request)
        if isinstance(principal, Response):
            return principal
        return FileResponse(_static("index.html"), media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return _error(404, f"No file {name}.")
        return FileResponse(_static(name), media_type=STATIC_FILES[name])

    async def api_summary(request: Request) -> Response:
        principal = await guard(request)
        if isinstance(principal, Response):
            return principal
        stack = request.query_params.get("stack", "agent")
        if stack not in ("agent", "model"):
            return _error(400, "stack must be agent or model.")
        try:
            body = await asyncio.to_thread(dashboard.summary, request, principal, stack)
        except ValueError as error:
            return _error(400, str(error))
        body["refreshed_at"] = dashboard.last_refresh.isoformat() if dashboard.last_refresh else None
        return JSONResponse(body)

    async def api_panel(request: Request) -> Response:
        principal = await guard(request)
        if isinstance(principal, Response):
            return principal
        name = request.path_params["name"]
        if name not in panels.PANELS:
            return _error(404, f"No panel {name!r}; panels: {', '.join(panels.PANELS)}.")
        stack = request.query_params.get("stack", "agent")
        try:
            usage, _ = await asyncio.to_thread(dashboard.usage, request, principal)
            rows = await asyncio.to_thread(panels.panel, usage, name, stack if stack in ("agent", "model") else "agent")
        except ValueError as error:
            return _error(400, str(error))
        if request.query_params.get("format") == "csv":
            return Response(
                _csv(rows),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{name}.csv"'},
            )
        return JSONResponse(rows)

    async def login_page(request: Request) -> Response:
        return FileResponse(_static("login.html"), media_type="text/html")

    async def login(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        if not dashboard.auth.enabled:
            return RedirectResponse("/", status_code=303)
        try:
            principal = dashboard.auth.authenticate(f"Bearer {token}")
        except Unauthorized:
            return RedirectResponse("/login?failed=1", status_code=303)
        if not principal.read:
            return RedirectResponse("/login?failed=read", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            dashboard.sessions.new(principal),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(request: Request) -> Response:
        dashboard.sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(dashboard.refresh)

        async def loop() -> None:
            while True:
                await asyncio.sleep(settings.refresh_seconds)
                await asyncio.to_thread(dashboard.refresh)

        task = asyncio.create_task(loop())
        # The token file is re-read off the event loop by this task (otel_ingest.auth).
        watcher = asyncio.create_task(dashboard.auth.watch())
        try:
            yield
        finally:
            task.cancel()
            watcher.cancel()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", static),
            Route("/api/summary", api_summary),
            Route("/api/panel/{name}", api_panel),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST", "GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    return app
