"""Security hardening (issue 9): each finding of the attack review, reproduced against a
real server, and /readyz on object storage (issue 8). Figures are printed with ``pytest -s``."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_auth import CLAUDE_TOKEN, CODEX_TOKEN, token_file
from test_cli import run_cli
from test_hostile import _read_until_closed, status_message

from support import Server, free_port, load_captures, row_count, table_path

LOGS = "main.telemetry.claude_otel_logs"
PROTOBUF = "application/x-protobuf"
BUCKET = "otel-warehouse"


def logs_body() -> bytes:
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    return capture.body


def headers(table: str = LOGS, token: str | None = None, **extra: str) -> dict[str, str]:
    result = {"content-type": PROTOBUF, "x-databricks-uc-table-name": table, **extra}
    if token is not None:
        result["authorization"] = f"Bearer {token}"
    return result


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def metric(server: Server, name: str) -> float:
    text = server.ops.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# 1. /readyz was an unauthenticated write on every call.


def test_readyz_probes_at_most_once_per_interval(start_server: Callable[..., Server]) -> None:
    server = start_server("--readiness-interval", "3600")
    wait_for(lambda: server.ops.get("/readyz").status_code == 200, "the first probe")
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: server.ops.get("/readyz").status_code, range(400)))
    assert set(statuses) == {200}
    assert metric(server, "otel_ingest_readiness_probes_total") == 1
    assert list(server.warehouse.glob(".otel-ingest-ready-*")) == []


# 1 + issue 8: /readyz honours --storage-options and answers at once during an outage.


@pytest.fixture
def moto() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A moto S3 server of this test's own (it is paused to play an outage): endpoint, process."""
    import boto3

    server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert server is not None, "moto_server is missing: install the test extras (pip install -e '.[test]')"
    port = free_port()
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )

    def bucket_made() -> bool:
        try:
            client.create_bucket(Bucket=BUCKET)
            return True
        except Exception:
            return False

    try:
        wait_for(bucket_made, "moto to start")
        yield endpoint, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(30)


def test_readyz_on_s3_with_keys_only_by_flag_and_during_an_outage(
    moto: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    endpoint, moto_process = moto
    given = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(os.environ)
    assert not given, f"the test needs an environment without {given}: the keys must come only by flag"
    options = ",".join(
        [
            f"aws_endpoint_url={endpoint}",
            "aws_access_key_id=test",
            "aws_secret_access_key=test",
            "aws_region=us-east-1",
            "aws_allow_http=true",
        ]
    )
    warehouse = f"s3://{BUCKET}/readyz-{uuid.uuid4().hex}"
    server = Server(
        tmp_path / "unused",
        "--storage-options",
        options,
        "--readiness-interval",
        "0.2",
        "--create-tables",
        "main.telemetry.claude",
        warehouse_uri=warehouse,
    )
    try:
        wait_for(lambda: server.ops.get("/readyz").status_code == 200, "ready on S3 with keys given by flag")
        assert server.post("/v1/logs", logs_body(), headers()).status_code == 200
        moto_process.send_signal(signal.SIGSTOP)  # the object store stops answering
        try:
            slowest = 0.0
            deadline = time.monotonic() + 60
            while True:
                started = time.monotonic()
                response = server.ops.get("/readyz", timeout=10)
                slowest = max(slowest, time.monotonic() - started)
                if response.status_code == 503:
                    break
                assert time.monotonic() < deadline, response.text
                time.sleep(0.1)
            document = response.json()
            assert "has not answered a write probe" in document["reason"]
            assert document["probe"].startswith("in progress")
            print(f"\n/readyz during the outage: slowest answer {slowest * 1000:.0f} ms")
        finally:
            moto_process.send_signal(signal.SIGCONT)
        wait_for(lambda: server.ops.get("/readyz").status_code == 200, "ready again after the outage", 120)
    finally:
        server.stop()


# 2. A lock kept for every (table, signal) ever asked for, 404s included.


def _pipelined_404s(port: int, count: int) -> None:
    """``count`` requests for distinct missing tables, pipelined on one connection."""
    body = b"{}"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        batch = 500
        for start in range(0, count, batch):
            requests = b"".join(
                b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"x-databricks-uc-table-name: main.telemetry.t%s_otel_logs\r\ncontent-length: %d\r\n\r\n%s"
                % (uuid.uuid4().hex.encode(), len(body), body)
                for _ in range(start, min(count, start + batch))
            )
            sock.sendall(requests)
            answered = b""
            while answered.count(b"HTTP/1.1 404") < min(batch, count - start):
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed"
                answered += chunk


def test_missing_table_names_do_not_grow_memory(start_server: Callable[..., Server]) -> None:
    server = start_server()
    rounds, per_round = 4, 8_000
    sizes = []
    for _ in range(rounds):
        _pipelined_404s(server.port, per_round)
        sizes.append(rss(server.process.pid))
    growth = [b - a for a, b in itertools.pairwise(sizes)]
    print(f"\nRSS after each round of {per_round:,} missing tables: {[f'{s / 2**20:.1f} MiB' for s in sizes]}")
    # A kept lock per name costs ~720 bytes: 5.5 MiB a round. Without it the later
    # rounds reuse what the first one allocated.
    assert sum(growth[1:]) / len(growth[1:]) < 200 * per_round, growth


# 3. --auto-create: created only for a valid body, and at most N tables per principal.


def test_auto_create_waits_for_a_valid_body_and_is_capped(start_server: Callable[..., Server]) -> None:
    server = start_server("--auto-create", "--auto-create-max-tables", "2")
    bad = server.post("/v1/logs", b"\xff\xff not protobuf", headers("main.telemetry.bad_otel_logs"))
    assert bad.status_code == 400
    assert not table_path(server.warehouse, "main.telemetry.bad_otel_logs").exists()
    for name in ("main.telemetry.a_otel_logs", "main.telemetry.b_otel_logs"):
        assert server.post("/v1/logs", logs_body(), headers(name)).status_code == 200
        assert row_count(server.warehouse, name) > 0
    refused = server.post("/v1/logs", logs_body(), headers("main.telemetry.c_otel_logs"))
    assert refused.status_code == 403
    message = status_message(refused)
    assert "'anonymous'" in message and "--auto-create-max-tables" in message, message
    assert not table_path(server.warehouse, "main.telemetry.c_otel_logs").exists()
    # Tables that exist are still written.
    assert server.post("/v1/logs", logs_body(), headers("main.telemetry.a_otel_logs")).status_code == 200


# 4. No connection cap: idle sockets exhausted the descriptors and new clients got resets.


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit")


def test_soft_descriptor_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    server = Server(tmp_path / "warehouse", command_prefix=["prlimit", "--nofile=256:2048", "--"])
    try:
        assert _limits(server.process.pid) == (2048, 2048)
        assert "Raised the open-file limit from 256 to 2048" in server.log()
    finally:
        server.stop()


def test_connections_past_the_limit_get_503_not_a_reset(tmp_path: Path) -> None:
    # Soft = hard = 160 descriptors: the limit cannot be raised; the connection cap is 80.
    server = Server(
        tmp_path / "warehouse",
        "--create-tables",
        "main.telemetry.claude",
        command_prefix=["prlimit", "--nofile=160:160", "--"],
    )
    idle: list[socket.socket] = []
    try:
        assert "At most 80 connections per process" in server.log()
        for _ in range(300):  # more than the server has descriptors
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        wait_for(lambda: "Refused" in server.log(), "the refusals logged")

        def refused() -> httpx.Response | None:
            # Past the connection limit and the lingering refusals, a connection is reset.
            try:
                with httpx.Client(base_url=server.url, timeout=10) as client:
                    return client.post("/v1/logs", content=logs_body(), headers=headers())
            except httpx.TransportError:
                return None

        responses: list[httpx.Response | None] = []
        wait_for(lambda: responses.append(refused()) or responses[-1] is not None, "an answer")
        response = responses[-1]
        assert response is not None and response.status_code == 503, response
        assert response.headers["retry-after"] == "1"
        assert "open connections, its limit" in response.json()["message"]
        assert "are open and the limit is 80 (--max-connections" in server.log()
        for sock in idle:
            sock.close()
        idle.clear()

        def accepted() -> bool:
            try:
                return server.post("/v1/logs", logs_body(), headers()).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(accepted, "a request accepted once the idle connections closed")
    finally:
        for sock in idle:
            sock.close()
        server.stop()


# 5. /metrics and /readyz were public on the OTLP port.


def test_operator_endpoints_are_only_on_the_ops_listener(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server("--create-tables", "main.telemetry.claude")
    assert server.post("/v1/logs", logs_body(), headers()).status_code == 200
    for path in ("/metrics", "/readyz"):
        assert server.client.get(path).status_code == 404, path
        assert server.ops.get(path).status_code in (200, 503), path
    assert LOGS in server.ops.get("/metrics").text
    public = server.client.get("/healthz")
    assert public.json() == {"status": "ok"}  # nothing about tables or the warehouse
    # The ops listener takes no exports.
    assert server.ops.post("/v1/logs", content=logs_body(), headers=headers()).status_code == 404
    # --ops-port 0: no ops listener; --ops-port equal to --port: both on one port.
    off = start_server("--ops-port", "0", warehouse=tmp_path / "off")
    assert off.client.get("/metrics").status_code == 404
    assert "/readyz and /metrics: off" in off.log()


def test_ops_listener_with_workers(start_server: Callable[..., Server]) -> None:
    """Worker processes share both listeners."""
    server = start_server("--workers", "2", "--create-tables", "main.telemetry.claude")
    wait_for(lambda: server.ops.get("/readyz").status_code == 200, "/readyz")
    assert server.client.get("/readyz").status_code == 404
    assert server.post("/v1/logs", logs_body(), headers()).status_code == 200
    assert "otel_ingest_requests_total" in server.ops.get("/metrics").text


def test_shared_ops_port(tmp_path: Path) -> None:
    """--ops-port equal to --port: one listener serves exports and the ops endpoints."""
    port = free_port()
    command = [sys.executable, "-m", "otel_ingest", "serve", "--port", str(port), "--ops-port", str(port)]
    shared = subprocess.Popen(
        [*command, "--warehouse", str(tmp_path / "wh")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def answered() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answered, "/readyz on the shared port")
        assert httpx.get(f"{url}/metrics").status_code == 200
    finally:
        shared.terminate()
        shared.wait(30)


def test_ops_port_in_use_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--ops-port", str(port), "--port", "0", "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port} for ops endpoints" in result.stderr
    assert "--ops-port" in result.stderr


# 6. Trailer fields were merged into the request headers.


def _chunked_with_trailer(port: int, head: list[tuple[bytes, bytes]], trailer: list[tuple[bytes, bytes]]) -> int:
    body = logs_body()
    request = b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ntransfer-encoding: chunked\r\n"
    request += b"".join(name + b": " + value + b"\r\n" for name, value in head) + b"\r\n"
    request += b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    request += b"".join(name + b": " + value + b"\r\n" for name, value in trailer) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = _read_until_closed(sock)
    return int(answer.split(b" ", 2)[1])


def test_trailer_fields_are_not_headers(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(
        "--tokens", str(token_file(tmp_path / "tokens.toml")), "--create-tables", "main.telemetry.claude"
    )
    table = [(b"content-type", PROTOBUF.encode()), (b"x-databricks-uc-table-name", LOGS.encode())]
    authorization = (b"authorization", b"Bearer " + CLAUDE_TOKEN.encode())
    assert _chunked_with_trailer(server.port, table, [authorization]) == 401
    assert _chunked_with_trailer(server.port, [*table, authorization], []) == 200  # the same request, head only
    # The table header or the content type in a trailer do not count either.
    assert _chunked_with_trailer(server.port, [table[0], authorization], [table[1]]) == 400
    assert row_count(server.warehouse, LOGS) == load_captures("cc_hello")[0].expected_rows


# 7. Token-file reload: off the event loop, old principals kept on any failure.


def test_token_file_not_utf8_at_start_up_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_bytes(token_file(tmp_path / "good.toml").read_bytes().replace(b"claude-team", b"claude-\xe9quipe"))
    result = run_cli("serve", "--tokens", str(path), "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert "is not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1.0", "-inf"])
def test_non_finite_or_negative_limits_are_refused(tmp_path: Path, value: str) -> None:
    path = token_file(tmp_path / "tokens.toml", f"requests_per_second = {value}\n")
    result = run_cli("serve", "--tokens", str(path), "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert "requests_per_second must be a positive finite number" in result.stderr


def test_two_principals_with_one_token_are_refused(tmp_path: Path) -> None:
    path = token_file(
        tmp_path / "tokens.toml", f'[[principals]]\nname = "twin"\ntoken = "{CLAUDE_TOKEN}"\ntables = ["*"]\n'
    )
    result = run_cli("serve", "--tokens", str(path), "--warehouse", str(tmp_path / "wh"))
    assert result.returncode == 2
    assert "share a token" in result.stderr


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    """Swap ``path`` for what ``make`` creates, atomically, with a new modification time."""
    new = path.with_name("new-" + path.name)
    make(new)
    os.utime(new, ns=(time.time_ns(), time.time_ns() + 10**9 * (int(time.time()) % 7 + 1)))
    new.replace(path)


def test_broken_token_files_keep_the_old_principals(start_server: Callable[..., Server], tmp_path: Path) -> None:
    path = token_file(tmp_path / "tokens.toml")
    server = start_server("--tokens", str(path), "--create-tables", "main.telemetry.claude")
    good = headers(token=CLAUDE_TOKEN)
    assert server.post("/v1/logs", logs_body(), good).status_code == 200

    # Not UTF-8: requests used to get 500 with a traceback.
    _replace(path, lambda p: p.write_bytes(path.read_bytes() + b"# \xff\xfe\n"))
    wait_for(lambda: "is not UTF-8" in server.log(), "the reload to be refused")
    assert server.post("/v1/logs", logs_body(), good).status_code == 200

    # A FIFO: opening it blocked the event loop, and every request, for ever.
    _replace(path, lambda p: os.mkfifo(p))
    wait_for(lambda: "is not a regular file" in server.log(), "the FIFO to be refused")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.post("/v1/logs", content=logs_body(), headers=good).status_code == 200
        assert client.post("/v1/logs", content=logs_body(), headers=headers(token=CODEX_TOKEN)).status_code == 403

    # A good file again is picked up.
    path.unlink()
    token_file(path).write_text(path.read_text().replace('"main.telemetry.codex_otel_logs"', '"main.telemetry.*"'))
    wait_for(
        lambda: server.post("/v1/logs", logs_body(), headers(token=CODEX_TOKEN)).status_code == 200,
        "the repaired file to be loaded",
    )
    assert "Traceback" not in server.log()


def test_twenty_thousand_principals(start_server: Callable[..., Server], tmp_path: Path) -> None:
    """Loaded once, looked up by digest: a bad token costs the same as with two principals."""
    path = token_file(tmp_path / "tokens.toml")
    lines = [path.read_text()]
    for index in range(20_000):
        digest = hashlib.sha256(f"token-{index:012d}-padding".encode()).hexdigest()
        lines.append(f'[[principals]]\nname = "p{index}"\ntoken_sha256 = "{digest}"\ntables = ["main.p{index}.*"]\n')
    path.write_text("\n".join(lines))
    server = start_server("--tokens", str(path), "--create-tables", "main.telemetry.claude")
    bad = headers(token="not-a-valid-token-0123456789")
    started = time.perf_counter()
    for _ in range(200):
        assert server.post("/v1/logs", b"", bad).status_code == 401
    per_request = (time.perf_counter() - started) / 200
    assert server.post("/v1/logs", logs_body(), headers(token=CLAUDE_TOKEN)).status_code == 200
    print(f"\n401 for a bad token with 20,002 principals: {per_request * 1000:.2f} ms per request (client included)")


# 8. Raw storage errors (with RUST_BACKTRACE=1, whole backtraces) in 503 bodies.


def test_storage_errors_stay_in_the_server_log(start_server: Callable[..., Server]) -> None:
    server = start_server("--create-tables", "main.telemetry.claude", env={"RUST_BACKTRACE": "1"})
    # A commit that fails after the table was opened.
    assert server.post("/v1/logs", logs_body(), headers()).status_code == 200
    log_dir = table_path(server.warehouse, LOGS) / "_delta_log"
    saved = log_dir.with_name("saved")
    log_dir.rename(saved)
    log_dir.write_text("broken")
    try:
        failed = server.post("/v1/logs", logs_body(), headers())
    finally:
        log_dir.unlink()
        saved.rename(log_dir)
    assert failed.status_code == 503
    assert status_message(failed) == f"Could not commit to table {LOGS}; the rows were not stored, retry later."
    wait_for(
        lambda: f"Commit of {load_captures('cc_hello')[0].expected_rows} rows to {LOGS} failed" in server.log(),
        "the details in the log",
    )

    # A table that cannot be opened: a corrupt commit in its log.
    spans = "main.telemetry.claude_otel_spans"
    (table_path(server.warehouse, spans) / "_delta_log" / "00000000000000000001.json").write_text("{ not json\n")
    response = server.post(
        "/v1/traces", b"{}", {"content-type": "application/json", "x-databricks-uc-table-name": spans}
    )
    assert response.status_code == 503, response.text
    assert status_message(response) == f"Could not open table {spans}; retry later."
    for text in (failed.text, response.text):
        assert str(server.warehouse) not in text and "\\n" not in text and "backtrace" not in text.lower()
    wait_for(lambda: f"Could not open table {spans}:" in server.log(), "the details in the log")


# 9. Without tokens, requests addressed to a foreign name (DNS rebinding) are refused.


def test_loopback_mode_refuses_foreign_host_names(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server("--create-tables", "main.telemetry.claude")
    port = server.port
    for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", "10.0.0.5", "127.0.0.1.nip.io"):
        response = server.post("/v1/logs", logs_body(), {**headers(), "host": host})
        assert response.status_code == 403, host
        assert "is not a loopback name" in status_message(response)
        assert server.ops.get("/metrics", headers={"host": host}).status_code == 403, host
    assert row_count(server.warehouse, LOGS) == 0
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "127.1.2.3", "app.localhost"):
        assert server.post("/v1/logs", logs_body(), {**headers(), "host": host}).status_code == 200, host
    # With a token file, the token is the protection and any name is served.
    tokens = token_file(tmp_path / "tokens.toml")
    secured = start_server(
        "--tokens", str(tokens), "--create-tables", "main.telemetry.claude", warehouse=tmp_path / "s"
    )
    named = {**headers(token=CLAUDE_TOKEN), "host": "otel.example.com"}
    assert secured.post("/v1/logs", logs_body(), named).status_code == 200


# 10. X-Forwarded-For trusted from loopback by default; access-log fields unescaped.


def _access_lines(server: Server, count: int) -> list[str]:
    wait_for(lambda: server.log().count("otel_ingest.access") >= count, f"{count} access-log lines")
    return [line for line in server.log().splitlines() if "otel_ingest.access" in line]


def test_forwarded_for_is_ignored_unless_configured(start_server: Callable[..., Server], tmp_path: Path) -> None:
    forged = "6.6.6.6 /api/2.0/otel/v1/logs principal=admin table=main.x.y status=200\x85fake"
    server = start_server("--create-tables", "main.telemetry.claude")
    response = server.post("/v1/logs", logs_body(), {**headers(), "x-forwarded-for": forged.encode("latin-1")})
    assert response.status_code == 200
    (line,) = _access_lines(server, 1)
    assert "6.6.6.6" not in line
    assert "otel_ingest.access: 127.0.0.1 /v1/logs principal=anonymous" in line

    proxied = start_server(
        "--create-tables",
        "main.telemetry.claude",
        "--forwarded-allow-ips",
        "127.0.0.1",
        warehouse=tmp_path / "proxied",
    )
    assert proxied.post("/v1/logs", logs_body(), {**headers(), "x-forwarded-for": "203.0.113.7"}).status_code == 200
    response = proxied.post("/v1/logs", logs_body(), {**headers(), "x-forwarded-for": forged.encode("latin-1")})
    assert response.status_code == 200
    first, second = _access_lines(proxied, 2)
    assert "otel_ingest.access: 203.0.113.7 /v1/logs" in first
    # The forged value is one escaped field: no second principal=, no line break of any kind.
    assert "otel_ingest.access: 6.6.6.6\\x20/api/2.0/otel/v1/logs\\x20principal=admin" in second
    assert "\\x85fake /v1/logs principal=anonymous" in second
    assert len(second.splitlines()) == 1 and "\x85" not in second
