"""The real coding-agent CLIs from npm — Claude Code, Codex CLI, Gemini CLI — configured as the
README's Gateway section says, complete a prompt with a tool call through the gateway against
the fake providers, offline; their usage rows equal the fake's usage; on a 429 they back off
and retry. Installed once into .cache/gateway-clis (skipped with the reason when npm cannot)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from gateway_support import Fake, GatewayProcess, endpoints_toml

from support import wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "claude": "@anthropic-ai/claude-code@2.1.197",
    "codex": "@openai/codex@0.171.0",
    "gemini": "@google/gemini-cli@0.61.0",
}
TOKEN = "cli-user-token-0123456789abcdef"
SLOW_TOKEN = "cli-slow-token-0123456789abcdef"  # 20 requests per minute
PRINCIPALS = f"""
[[principals]]
name = "cli-user"
token = "{TOKEN}"
tables = []
[principals.gateway]
endpoints = ["*"]

[[principals]]
name = "cli-slow"
token = "{SLOW_TOKEN}"
tables = []
[principals.gateway]
endpoints = ["*"]
requests_per_minute = 20
"""
USAGE_TABLE = "main.ai_gateway.usage"
CLI_TIMEOUT = 240


@pytest.fixture(scope="module")
def clis() -> dict[str, Path]:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the coding-agent CLIs cannot be installed")
    prefix = Path(os.environ.get("OTEL_INGEST_CLI_CACHE", ROOT / ".cache" / "gateway-clis"))
    binaries = {name: prefix / "node_modules" / ".bin" / name for name in PACKAGES}
    if not all(path.exists() for path in binaries.values()):
        prefix.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *PACKAGES.values()],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            pytest.skip(f"npm install of the CLIs failed (no registry access?): {result.stderr[-500:]}")
    for name, path in binaries.items():
        if subprocess.run([str(path), "--version"], capture_output=True, timeout=120).returncode != 0:
            pytest.skip(f"{name} --version fails on this machine")
    return binaries


@pytest.fixture(scope="module")
def gateway(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("gateway"), endpoints_toml(fake.url), principals=PRINCIPALS)
    yield process
    process.stop()


def _workspace(tmp_path: Path) -> tuple[Path, Path, str]:
    """A working folder with the probe file, a fresh HOME, and the probe's secret content."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    content = f"probe-content-{secrets.token_hex(4)}"
    (work / "gateway-probe.txt").write_text(content + "\n")
    return work, home, content


def _environment(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "TMPDIR", "SYSTEMROOT")
    return {**{k: v for k, v in os.environ.items() if k in keep}, "HOME": str(home), "NO_COLOR": "1", "CI": "1"}


def claude_code(binary: Path, gateway: GatewayProcess, home: Path, token: str) -> tuple[list[str], dict[str, str]]:
    env = {
        "ANTHROPIC_BASE_URL": f"{gateway.url}/anthropic",
        "ANTHROPIC_AUTH_TOKEN": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    return [str(binary), "-p", "{prompt}", "--model", "claude-sonnet-4-5", "--allowedTools", "Read"], env


def codex(binary: Path, gateway: GatewayProcess, home: Path, token: str) -> tuple[list[str], dict[str, str]]:
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        'model = "gpt-5-codex"\n'
        'model_provider = "gateway"\n'
        "[model_providers.gateway]\n"
        'name = "otel-ingest gateway"\n'
        f'base_url = "{gateway.url}/openai/v1"\n'
        'env_key = "OTEL_INGEST_GATEWAY_TOKEN"\n'
        'wire_api = "responses"\n'
    )
    env = {"CODEX_HOME": str(codex_home), "OTEL_INGEST_GATEWAY_TOKEN": token}
    command = [str(binary), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "{prompt}"]
    return command, env


def gemini(binary: Path, gateway: GatewayProcess, home: Path, token: str) -> tuple[list[str], dict[str, str]]:
    settings = home / ".gemini"
    settings.mkdir()
    (settings / "settings.json").write_text('{"security": {"auth": {"selectedType": "gemini-api-key"}}}')
    env = {
        "GOOGLE_GEMINI_BASE_URL": f"{gateway.url}/gemini",
        "GEMINI_API_KEY": token,
        "GEMINI_API_KEY_AUTH_MECHANISM": "bearer",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
    }
    return [str(binary), "-p", "{prompt}", "-m", "gemini-2.5-flash", "--yolo"], env


AGENTS: dict[str, Any] = {"claude": claude_code, "codex": codex, "gemini": gemini}
EXPECTED = {
    # agent column, api type, (input, cache read, cache write, output, reasoning) from tests/fake_providers.py
    "claude": ("claude_code", "messages", (23, 5, 7, 13, None)),
    "codex": ("codex", "responses", (31, 17, 0, 19, 8)),
    "gemini": ("gemini_cli", "generate_content", (53, 21, 0, 41, 12)),
}


def _run(name: str, clis: dict[str, Path], gateway: GatewayProcess, tmp_path: Path, token: str) -> tuple[str, str]:
    work, home, content = _workspace(tmp_path)
    command, env = AGENTS[name](clis[name], gateway, home, token)
    prompt = f"Read the file {work / 'gateway-probe.txt'} and tell me what it says."
    command = [prompt if part == "{prompt}" else part for part in command]
    result = subprocess.run(
        command,
        cwd=work,
        env={**_environment(home), **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout, content


def _rows(gateway: GatewayProcess, requester: str, agent: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        frame = gateway.table(USAGE_TABLE)
        if frame.is_empty():
            return None
        rows = frame.filter((pl.col("requester") == requester) & (pl.col("agent") == agent)).to_dicts()
        return rows if len(rows) >= count else None

    found: list[dict[str, Any]] = wait_until(enough, f"{count} usage rows of {agent}", 30)
    return found


@pytest.mark.parametrize("name", list(AGENTS))
def test_cli_completes_a_prompt_with_a_tool_call(
    name: str, clis: dict[str, Path], gateway: GatewayProcess, tmp_path: Path
) -> None:
    output, content = _run(name, clis, gateway, tmp_path, TOKEN)
    # The fake answers the tool result with the file's content: the tool really ran.
    assert f"The file says {content}" in output
    agent, api_type, (tokens_in, read, write, tokens_out, reasoning) = EXPECTED[name]
    rows = _rows(gateway, "cli-user", agent, 2)  # the tool call, then the answer
    for row in rows:
        assert row["status_code"] == 200 and row["api_type"] == api_type and row["streaming"]
        assert (row["input_tokens"], row["cache_read_input_tokens"], row["cache_creation_input_tokens"]) == (
            tokens_in,
            read,
            write,
        )
        assert (row["output_tokens"], row["reasoning_output_tokens"]) == (tokens_out, reasoning)
    if name != "gemini":  # Gemini CLI sends no session header
        assert rows[0]["session_id"]


@pytest.mark.parametrize("name", list(AGENTS))
def test_cli_backs_off_on_429_and_retries(
    name: str, clis: dict[str, Path], gateway: GatewayProcess, tmp_path: Path
) -> None:
    """cli-slow may make 20 requests a minute. Another client keeps its bucket empty until the
    agent has been refused once; the agent must then back off and retry, and finish."""
    agent = EXPECTED[name][0]
    refused = threading.Event()
    stop = threading.Event()

    def take() -> int:
        return httpx.post(
            f"{gateway.url}/anthropic/v1/messages/count_tokens",
            json={"model": "claude-sonnet-4-5", "messages": []},
            headers={"x-api-key": SLOW_TOKEN},
        ).status_code

    wait_until(lambda: take() == 429, "cli-slow's bucket to be empty")

    start = gateway.log_path.stat().st_size

    def agent_refused() -> bool:
        """The gateway's access log (written at once, unlike the Delta rows) shows a 429 for
        cli-slow on a path other than the drainer's count_tokens."""
        with gateway.log_path.open("rb") as log:
            log.seek(start)
            return any(
                b"principal=cli-slow" in line and b"status=429" in line and b"count_tokens" not in line for line in log
            )

    def drain() -> None:
        deadline = time.monotonic() + CLI_TIMEOUT
        while not stop.is_set() and time.monotonic() < deadline:
            take()
            if agent_refused():
                refused.set()
                return
            stop.wait(0.1)

    drainer = threading.Thread(target=drain)
    drainer.start()
    try:
        output, content = _run(name, clis, gateway, tmp_path, SLOW_TOKEN)
    finally:
        stop.set()
        drainer.join()
    # Whether the agent was refused is read from its rows, not from the drainer's flag: the
    # agent can retry, succeed and exit before the drainer sees the 429 row committed.
    assert f"The file says {content}" in output

    def ended_with_200() -> list[int] | None:
        rows = _rows(gateway, "cli-slow", agent, 3)
        statuses = [r["status_code"] for r in sorted(rows, key=lambda r: r["event_time"])]
        return statuses if statuses[-1] == 200 else None

    # The agent's last rows may still be in the gateway's buffer: wait for its final call's.
    statuses = wait_until(ended_with_200, "the agent's final 200 row", 60)
    assert 429 in statuses
