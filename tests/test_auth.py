"""Tokens, table grants, rate limits and safe defaults (SPEC §5), against real servers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from test_cli import run_cli

from support import Server, load_captures, row_count, wait_until

CLAUDE_TOKEN = "claude-token-0123456789abcdef"
CODEX_TOKEN = "codex-token-fedcba9876543210"
LOGS = "main.telemetry.claude_otel_logs"
CODEX_LOGS = "main.telemetry.codex_otel_logs"


def token_file(path: Path, extra: str = "") -> Path:
    codex_digest = hashlib.sha256(CODEX_TOKEN.encode()).hexdigest()
    path.write_text(
        f"""
[[principals]]
name = "claude-team"
token = "{CLAUDE_TOKEN}"
tables = ["main.telemetry.claude_*"]

[[principals]]
name = "codex-bot"
token_sha256 = "{codex_digest}"
tables = ["main.telemetry.codex_otel_logs", "main.other.*"]
{extra}
"""
    )
    return path


def _logs_body() -> bytes:
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    return capture.body


def _post(server: Server, authorization: str | None, table: str = LOGS, content_type: str = "application/x-protobuf"):  # type: ignore[no-untyped-def]
    headers = {"content-type": content_type, "x-databricks-uc-table-name": table}
    if authorization is not None:
        headers["authorization"] = authorization
    body = _logs_body() if content_type == "application/x-protobuf" else b"{}"
    return server.post("/api/2.0/otel/v1/logs", body, headers)


def _message(response: httpx.Response) -> str:
    status = status_pb2.Status()
    if response.headers["content-type"] == "application/json":
        json_format.Parse(response.content, status)
    else:
        status.ParseFromString(response.content)
    return str(status.message)


@pytest.fixture
def secured(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    tokens = token_file(tmp_path / "tokens.toml")
    return start_server("--tokens", str(tokens), "--create-tables", "main.telemetry.claude,main.telemetry.codex")


def test_missing_and_unknown_tokens_get_401(secured: Server) -> None:
    for authorization in (None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer wrong-token-123456789"):
        response = _post(secured, authorization)
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/x-protobuf"
        assert "Authorization: Bearer" in _message(response) or "not valid" in _message(response)
    json_response = _post(secured, None, content_type="application/json")
    assert json_response.status_code == 401
    assert json_response.headers["content-type"] == "application/json"
    assert row_count(secured.warehouse, LOGS) == 0


def test_granted_tokens_write(secured: Server) -> None:
    assert _post(secured, f"Bearer {CLAUDE_TOKEN}").status_code == 200
    # Claude Code sends the space URL-encoded when the header comes from OTEL_EXPORTER_OTLP_HEADERS.
    assert _post(secured, f"Bearer%20{CLAUDE_TOKEN}").status_code == 200
    assert _post(secured, f"bearer {CODEX_TOKEN}", table=CODEX_LOGS).status_code == 200
    rows = load_captures("cc_hello")[0].expected_rows
    assert row_count(secured.warehouse, LOGS) == 2 * rows
    assert row_count(secured.warehouse, CODEX_LOGS) == rows


def test_token_not_granted_the_table_gets_403(secured: Server) -> None:
    response = _post(secured, f"Bearer {CODEX_TOKEN}", table=LOGS)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/x-protobuf"
    assert LOGS in _message(response)
    assert "codex-bot" in _message(response)
    assert row_count(secured.warehouse, LOGS) == 0


def test_tokens_are_never_logged(secured: Server) -> None:
    for authorization in (f"Bearer {CLAUDE_TOKEN}", f"Bearer {CODEX_TOKEN}", "Bearer not-a-real-token-xyz"):
        _post(secured, authorization)
    log = secured.log()
    assert "principal=claude-team" in log
    assert "principal=codex-bot" in log
    for secret in (CLAUDE_TOKEN, CODEX_TOKEN, "not-a-real-token-xyz"):
        assert secret not in log


def test_token_file_reloads_without_restart(secured: Server, tmp_path: Path) -> None:
    assert _post(secured, f"Bearer {CODEX_TOKEN}", table=LOGS).status_code == 403
    path = tmp_path / "tokens.toml"
    text = path.read_text().replace('"main.telemetry.codex_otel_logs"', '"main.telemetry.*"')
    _rewrite(path, text)
    wait_until(
        lambda: _post(secured, f"Bearer {CODEX_TOKEN}", table=LOGS).status_code != 403,
        "the new grant to be picked up",
        every=0.2,
    )
    assert _post(secured, f"Bearer {CODEX_TOKEN}", table=LOGS).status_code == 200
    # A broken file keeps the principals in force and says so in the log.
    _rewrite(path, "[[principals]]\nname = 'x'\n")
    wait_until(
        lambda: (
            _post(secured, f"Bearer {CLAUDE_TOKEN}").status_code == 200
            and "Keeping the 2 principals loaded before" in secured.log()
        ),
        "the broken token file to be noticed",
        every=0.2,
    )


def _rewrite(path: Path, text: str) -> None:
    """Write ``text`` with a modification time surely different from the last one."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_rate_limits(start_server: Callable[..., Server], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f"""
[[principals]]
name = "slow"
token = "{CLAUDE_TOKEN}"
tables = ["*"]
requests_per_second = 0.5
burst_seconds = 2

[[principals]]
name = "thin"
token = "{CODEX_TOKEN}"
tables = ["*"]
bytes_per_second = 1000
"""
    )
    server = start_server("--tokens", str(tokens), "--create-tables", "main.telemetry.claude")
    first = _post(server, f"Bearer {CLAUDE_TOKEN}")
    assert first.status_code == 200
    second = _post(server, f"Bearer {CLAUDE_TOKEN}")
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/x-protobuf"
    # One request per 2 s and a bucket of one: the wait computed from the bucket is 2 s.
    assert second.headers["retry-after"] == "2"
    assert "slow" in _message(second)
    # Bytes: the body (1,771 bytes) exceeds the 1,000-byte bucket, which a full bucket allows once.
    assert _post(server, f"Bearer {CODEX_TOKEN}").status_code == 200
    third = _post(server, f"Bearer {CODEX_TOKEN}")
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) >= 1
    assert "bytes per second" in _message(third)
    rows = load_captures("cc_hello")[0].expected_rows
    assert row_count(server.warehouse, LOGS) == 2 * rows


def test_no_token_file_only_on_loopback(tmp_path: Path, start_server: Callable[..., Server]) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert "Refusing to listen on 0.0.0.0 without a token file" in result.stderr
    assert not (tmp_path / "wh").exists()
    server = start_server("--create-tables", "main.telemetry.claude")
    assert "No token file: accepting unauthenticated writes on 127.0.0.1, a loopback address" in server.log()
    insecure = start_server("--host", "0.0.0.0", "--insecure-no-auth", warehouse=tmp_path / "insecure")
    assert "(--insecure-no-auth)" in insecure.log()


def test_listen_check_is_for_serve_only(tmp_path: Path) -> None:
    """The container sets OTEL_INGEST_HOST=0.0.0.0; `tables create` and `maintain` still work there."""
    env = {"OTEL_INGEST_HOST": "0.0.0.0", "OTEL_INGEST_WAREHOUSE": str(tmp_path / "wh")}
    created = run_cli("tables", "create", "main.telemetry.claude", env=env)
    assert created.returncode == 0, created.stderr
    maintained = run_cli("maintain", "main.telemetry.claude", env=env)
    assert maintained.returncode == 0, maintained.stderr
    assert maintained.stdout.count("compacted") == 3
    refused = run_cli("serve", env=env)
    assert refused.returncode == 2
    assert "Refusing to listen on 0.0.0.0" in refused.stderr


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("not toml [[[", "not valid TOML"),
        ("[[principals]]\nname = 'a'\ntables = ['*']\n", "exactly one of token or token_sha256"),
        ("[[principals]]\nname = 'a'\ntoken = 'short'\ntables = ['*']\n", "at least 16 characters"),
        ("[[principals]]\nname = 'a'\ntoken_sha256 = 'abc'\ntables = ['*']\n", "64 hex digits"),
        ("[[principals]]\nname = 'a'\ntoken = '0123456789abcdef0'\n", "tables must be a list"),
        ("[[principals]]\nname = 'a'\ntoken = '0123456789abcdef0'\ntables = ['*']\nrps = 1\n", "unknown keys"),
    ],
)
def test_bad_token_file_fails_fast(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(content)
    result = run_cli("serve", "--tokens", str(path), "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert str(path) in result.stderr


def test_tokens_new_makes_a_working_entry(start_server: Callable[..., Server], tmp_path: Path) -> None:
    result = run_cli("tokens", "new", "agent", "main.telemetry.claude_*")
    assert result.returncode == 0, result.stderr
    token = result.stderr.strip().rsplit(" ", 1)[1]  # the token goes to stderr only
    assert token not in result.stdout  # the entry holds only the digest
    path = tmp_path / "tokens.toml"
    path.write_text(result.stdout)
    server = start_server("--tokens", str(path), "--create-tables", "main.telemetry.claude")
    assert _post(server, f"Bearer {token}").status_code == 200
    assert _post(server, f"Bearer {token}", table=CODEX_LOGS).status_code == 403
