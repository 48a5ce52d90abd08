"""``otel-ingest dashboard`` in a real browser (Debian's chromium driven by Playwright):
the numbers on the page equal the API's and the report's, filters change them, CSV
export downloads, no console errors, and sign-in is required when a token file is set
(which ``dashboard`` demands on a non-loopback address)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import Server, free_port, load_captures

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUNS = ("cc_hello", "cc_tool", "gemini_hello", "codex_hello")
SINCE = "2026-11-01"
READER_TOKEN = "reader-token-0123456789abcdef"
CLAUDE_READER_TOKEN = "claude-reader-token-0123456789"
WRITER_TOKEN = "writer-token-0123456789abcdef"


class Dashboard:
    def __init__(self, warehouse: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = warehouse.parent / f"dashboard-{self.port}.log"
        self._log = self.log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "otel_ingest",
            "dashboard",
            "--port",
            str(self.port),
            "--warehouse",
            str(warehouse),
            *args,
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"dashboard did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard") / "warehouse"
    server = Server(folder, "--auto-create", "--default-traces-table", "main.telemetry.gemini_otel_spans")
    try:
        for run in RUNS:
            for capture in load_captures(run):
                assert server.replay(capture).status_code == 200
    finally:
        server.stop()
    return folder


@pytest.fixture(scope="module")
def open_dashboard(warehouse: Path) -> Iterator[Dashboard]:
    dashboard = Dashboard(warehouse)
    yield dashboard
    dashboard.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian's chromium is needed at {CHROMIUM} (.ci/run installs it: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _api(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(url + path, params={"since": SINCE, **params}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _wait_loaded(page: Any, after: str | None = None) -> str:
    page.wait_for_function(
        # document.body is null for a moment while a form post navigates (the sign-in).
        "previous => document.body && document.body.dataset.loaded && document.body.dataset.loaded !== previous",
        arg=after or "",
    )
    loaded: str = page.evaluate("document.body.dataset.loaded")
    return loaded


def _shown_totals(page: Any) -> dict[str, str]:
    values: dict[str, str] = page.eval_on_selector_all(
        "[data-total]", "els => Object.fromEntries(els.map(e => [e.dataset.total, e.dataset.value]))"
    )
    return values


def test_page_shows_the_apis_numbers_filters_and_csv(
    open_dashboard: Dashboard, browser: Any, tmp_path: Path, warehouse: Path
) -> None:
    page = browser.new_page(accept_downloads=True)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{open_dashboard.url}/?since={SINCE}")
    loaded = _wait_loaded(page)
    api = _api(open_dashboard.url, "/api/summary")
    shown = _shown_totals(page)
    for key in ("calls", "tokens", "sessions", "active_users", "prompts", "lines_added"):
        assert shown[key] == str(api["totals"][key]), key
    assert float(shown["cost_usd"]) == pytest.approx(api["totals"]["cost_usd"])
    assert api["totals"]["calls"] > 0

    # The same numbers as the report command.
    report = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "otel_ingest",
                "usage",
                "--json",
                "--by",
                "agent",
                "--since",
                SINCE,
                "--warehouse",
                str(warehouse),
                "--no-refresh",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert sum(r["calls"] for r in report) == api["totals"]["calls"]
    assert {r["agent"]: r["input_tokens"] for r in report} == {r["agent"]: r["input_tokens"] for r in api["by_agent"]}
    rows = page.eval_on_selector_all("table[data-table=by_agent] tr", "trs => trs.length")
    assert rows == len(api["by_agent"]) + 1

    # A filter changes the numbers, to the API's numbers for that filter.
    page.select_option("select[name=agent]", "codex")
    _wait_loaded(page, loaded)
    filtered = _api(open_dashboard.url, "/api/summary", agent="codex")
    shown = _shown_totals(page)
    assert shown["calls"] == str(filtered["totals"]["calls"])
    assert shown["tokens"] == str(filtered["totals"]["tokens"]) != str(api["totals"]["tokens"])

    # CSV export of a panel downloads what the API exports.
    with page.expect_download() as download:
        page.click("a.export[data-export=by_model]")
    path = tmp_path / "by_model.csv"
    download.value.save_as(path)
    exported = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["model"] for r in exported] == [r["model"] for r in filtered["by_model"]] == ["gpt-5.1-codex"]
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert errors == []
    page.close()


def test_sign_in_required_with_tokens_and_read_grants(warehouse: Path, browser: Any, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "dashboard", "--host", "0.0.0.0", "--warehouse", str(warehouse)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "without --tokens" in refused.stderr
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[principals]]\nname = "lead"\ntoken_sha256 = "{hashlib.sha256(READER_TOKEN.encode()).hexdigest()}"\n'
        'read = ["main.telemetry.*"]\n\n'
        f'[[principals]]\nname = "claude-lead"\ntoken = "{CLAUDE_READER_TOKEN}"\nread = ["main.telemetry.claude_*"]\n\n'
        f'[[principals]]\nname = "exporter"\ntoken = "{WRITER_TOKEN}"\ntables = ["main.telemetry.*"]\n'
    )
    dashboard = Dashboard(warehouse, "--host", "0.0.0.0", "--tokens", str(tokens))
    try:
        url = dashboard.url
        assert httpx.get(f"{url}/api/summary").status_code == 401
        assert httpx.get(f"{url}/api/summary", headers={"authorization": f"Bearer {WRITER_TOKEN}"}).status_code == 403
        mine = httpx.get(
            f"{url}/api/summary", params={"since": SINCE}, headers={"authorization": f"Bearer {CLAUDE_READER_TOKEN}"}
        ).json()
        assert [r["agent"] for r in mine["by_agent"]] == ["claude-code"]
        assert mine["filters"]["table_set"] == ["main.telemetry.claude"]

        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/?since={SINCE}")
        assert page.url.startswith(f"{url}/login")
        page.fill("input[name=token]", "wrong-token-0123456789")
        page.click("button[type=submit]")
        assert "failed" in page.url
        page.fill("input[name=token]", READER_TOKEN)
        page.click("button[type=submit]")
        _wait_loaded(page)
        (cookie,) = context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        all_agents = httpx.get(
            f"{url}/api/summary", params={"since": SINCE}, headers={"authorization": f"Bearer {READER_TOKEN}"}
        ).json()
        assert _shown_totals(page)["calls"] == str(all_agents["totals"]["calls"])
        context.close()
    finally:
        dashboard.stop()
