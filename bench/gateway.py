"""The gateway's overhead, measured side by side against a fake upstream on loopback.

    python bench/gateway.py [--requests 400] [--megabytes 64]

Starts a minimal Anthropic-speaking upstream (this file, ``--upstream PORT``) and
``otel-ingest gateway`` in front of it (usage and inference tables on, as users run it), then:

  (a) time to first byte of a streamed Messages call, direct vs through the gateway,
      interleaved one by one: p50 and p99 of each, and the added p50/p99;
  (b) stream throughput: one large SSE stream (``--megabytes`` of content_block_delta
      events in 16 KiB writes), direct vs through, MB/s and the loss in percent;
  (c) gateway CPU-seconds per streamed MB (what the tap and relay cost).

The machine is shared and noisy: the figures are from one run, compare them side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-upstream-key-0123456789"
TOKEN = "bench-token-0123456789abcdef"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def upstream_app(megabytes: int) -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    def event(name: str, data: dict[str, object]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    start = event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_b",
                "type": "message",
                "role": "assistant",
                "model": "claude-bench",
                "content": [],
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
    )
    delta = event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "token " * 8}},
    )
    end = event(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}
    ) + event("message_stop", {"type": "message_stop"})
    per_write = max(1, 16384 // len(delta))
    block = delta * per_write
    short = [start, delta, delta, end]

    async def messages(request: Request) -> Response:
        document = json.loads(await request.body())

        async def big() -> object:
            yield start
            sent = 0
            while sent < megabytes << 20:
                yield block
                sent += len(block)
            yield end

        async def small() -> object:
            for part in short:
                yield part

        body = big() if document.get("model") == "claude-bench-big" else small()
        return StreamingResponse(body, media_type="text/event-stream")  # type: ignore[arg-type]

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a server did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def ttfb(client: httpx.Client, url: str, headers: dict[str, str], body: bytes) -> float:
    started = time.perf_counter()
    with client.stream("POST", url, content=body, headers=headers) as response:
        iterator = response.iter_raw()
        next(iterator)
        first = time.perf_counter() - started
        for _ in iterator:
            pass
    return first


def throughput(client: httpx.Client, url: str, headers: dict[str, str], body: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    size = 0
    with client.stream("POST", url, content=body, headers=headers) as response:
        for chunk in response.iter_raw(65536):
            size += len(chunk)
    return size / (time.perf_counter() - started) / 1e6, size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        import uvicorn

        uvicorn.run(upstream_app(args.megabytes), host="127.0.0.1", port=args.upstream, log_level="warning")  # type: ignore[arg-type]
        return

    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    upstream_port, gateway_port = free_port(), free_port()
    (folder / "tokens.toml").write_text(
        f'[[principals]]\nname = "bench"\ntoken = "{TOKEN}"\ntables = []\n[principals.gateway]\nendpoints = ["*"]\n'
    )
    (folder / "gateway.toml").write_text(
        f'[gateway]\ntokens = "tokens.toml"\nwarehouse = "{folder / "warehouse"}"\n'
        f'[[endpoints]]\nname = "claude"\nprovider = "anthropic"\nbase_url = "http://127.0.0.1:{upstream_port}"\n'
        f'api_key_env = "BENCH_UPSTREAM_KEY"\nmodels = ["claude-*"]\n'
    )
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY}
    upstream = subprocess.Popen(
        [sys.executable, __file__, "--upstream", str(upstream_port), "--megabytes", str(args.megabytes)],
        stdout=subprocess.DEVNULL,
    )
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_ingest",
            "gateway",
            str(folder / "gateway.toml"),
            "--port",
            str(gateway_port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(upstream_port, upstream)
        wait_listening(gateway_port, gateway)
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/messages"
        gateway_url = f"http://127.0.0.1:{gateway_port}/anthropic/v1/messages"
        direct_headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        gateway_headers = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
        small = json.dumps({"model": "claude-bench", "stream": True, "max_tokens": 10, "messages": []}).encode()
        big = json.dumps({"model": "claude-bench-big", "stream": True, "max_tokens": 10, "messages": []}).encode()
        with httpx.Client(timeout=120) as client:
            for _ in range(20):  # warm up both paths (connections, imports, genai-prices, tables)
                ttfb(client, direct_url, direct_headers, small)
                ttfb(client, gateway_url, gateway_headers, small)
            direct, through = [], []
            for _ in range(args.requests):
                direct.append(ttfb(client, direct_url, direct_headers, small))
                through.append(ttfb(client, gateway_url, gateway_headers, small))
            print(f"(a) time to first byte over {args.requests} streamed calls each, interleaved")
            for label, values in (("direct", direct), ("gateway", through)):
                print(
                    f"    {label:8} p50 {percentile(values, 0.5) * 1000:6.2f} ms   "
                    f"p99 {percentile(values, 0.99) * 1000:6.2f} ms"
                )
            print(
                f"    added    p50 {(percentile(through, 0.5) - percentile(direct, 0.5)) * 1000:6.2f} ms   "
                f"p99 {(percentile(through, 0.99) - percentile(direct, 0.99)) * 1000:6.2f} ms"
            )
            rates_direct, rates_through, cpu = [], [], []
            for _ in range(3):
                rates_direct.append(throughput(client, direct_url, direct_headers, big)[0])
                before = cpu_seconds(gateway.pid)
                rate, size = throughput(client, gateway_url, gateway_headers, big)
                cpu.append((cpu_seconds(gateway.pid) - before) / (size / 1e6))
                rates_through.append(rate)
            best_direct, best_through = max(rates_direct), max(rates_through)
            print(f"(b) one {args.megabytes} MB SSE stream, best of 3 each")
            print(
                f"    direct  {best_direct:7.1f} MB/s   gateway {best_through:7.1f} MB/s   "
                f"loss {(1 - best_through / best_direct) * 100:5.1f} %"
            )
            print(
                f"(c) gateway CPU {statistics.median(cpu) * 1000:.2f} ms per streamed MB "
                f"(a model streaming 100 tokens/s sends ~0.02 MB/s)"
            )
    finally:
        for process in (gateway, upstream):
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
