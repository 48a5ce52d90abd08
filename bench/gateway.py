"""The gateway's overhead, measured side by side against a fake upstream on loopback.

    python bench/gateway.py [--requests 1000] [--megabytes 32] [--rounds 3]

Starts a minimal Anthropic-speaking upstream (this file, ``--upstream PORT``) and
``otel-ingest gateway`` in front of it (usage and inference tables on, as users run it), then:

  (a) time to first byte of a streamed Messages call: the same call made directly twice
      (A and B) and through the gateway, in a shuffled order within each triple so that no
      path is favoured by position. p50/p90/p99 of each; the added p50/p99 (gateway − A);
      and direct B − A: what the machine's own scheduling noise does to a p99 with no
      gateway at all (on a shared machine the p99 is mostly that).
  (b) the gateway's CPU time per call (from /proc, over the whole of (a)): its own cost,
      which no scheduling noise inflates; on an idle core this is the added latency.
  With ``--limits`` the principal and the endpoint get limits and budgets that never
  refuse, kept in a redis-server started here, so (a) includes the limit checks.
  With ``--without-tables`` the same gateway also runs with its tables off (what the usage
  and inference rows and their Delta commits cost).
  With ``--compare-with DIR`` a second gateway, from another source tree, runs in the
  same shuffled rounds (before/after a change, on the same machine at the same moment).
  (c) stream throughput: one large SSE stream (``--megabytes`` of content_block_delta
      events in 16 KiB writes), direct vs through, alternating, best and median of
      ``--rounds``; the loss in percent and the gateway's CPU per streamed MB. The three
      processes (client, gateway, upstream) all want a core at once here, so on two cores
      this is the machine's CPU contention more than the gateway's rate.
  (d) a paced stream, as a model sends one: ``--paced-rate`` text deltas per second for
      ``--paced-seconds``, each carrying the upstream's send time, direct vs through,
      alternating for ``--rounds``. The delivered rate (events/s from the first to the last
      delta) gives the throughput loss, and the per-event lag (receive − send) the latency the
      gateway adds to every token, p50/p99.

The client sets TCP_NODELAY, as the coding agents' HTTP stacks do (Node's sockets do by
default): without it, httpx's separate writes of headers and body meet the server's
delayed ACK and add ~40 ms to some calls on both paths alike. The load average is printed
at the start and the end: the machine is shared, compare figures of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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


def upstream_app(megabytes: int, paced_rate: float = 0.0, paced_seconds: float = 0.0) -> object:
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

        async def paced() -> object:
            # On schedule (not "sleep then send"): a late event does not delay the next ones.
            yield start
            begun = time.time()
            for i in range(int(paced_rate * paced_seconds)):
                delay = begun + i / paced_rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                yield event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": repr(time.time())},
                    },
                )
            yield end

        model = document.get("model")
        body = big() if model == "claude-bench-big" else paced() if model == "claude-bench-paced" else small()
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


def paced_stream(client: httpx.Client, url: str, headers: dict[str, str], body: bytes) -> tuple[float, list[float]]:
    """(delivered text deltas per second, each delta's lag in seconds) of one paced stream."""
    lags: list[float] = []
    arrivals: list[float] = []
    with client.stream("POST", url, content=body, headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and '"text_delta"' in line:
                now = time.time()
                arrivals.append(now)
                lags.append(now - float(json.loads(line[5:])["delta"]["text"]))
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return rate, lags


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return "   ".join(f"p{round(q * 100)} {percentile(values, q) * 1000:7.2f} ms" for q in (0.5, 0.9, 0.99))


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def start_gateway(source: Path, config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """``otel-ingest gateway`` from the source tree ``source`` on a free port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "otel_ingest",
        "gateway",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if "ops_port" in (source / "otel_ingest" / "gateway" / "config.py").read_text():
        command += ["--ops-port", "0"]  # gateways without an ops listener have no such flag
    process = subprocess.Popen(
        command,
        env={**env, "PYTHONPATH": str(source)},  # ahead of the editable install of this tree
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="calls per path for (a) [1000]")
    parser.add_argument("--megabytes", type=int, default=32, help="size of the stream of (c) [32]")
    parser.add_argument("--rounds", type=int, default=3, help="streams per path for (c) [3]")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="SOURCE_DIR",
        help="also run the gateway of another source tree (`git archive COMMIT | tar -x -C DIR`) in the same run",
    )
    parser.add_argument(
        "--limits",
        action="store_true",
        help="give the principal and the endpoint limits and budgets that never refuse, kept in a "
        "redis-server started here: (a) then includes the limit checks' Redis round trips",
    )
    parser.add_argument(
        "--without-tables",
        action="store_true",
        help="also run this gateway with its usage and inference tables off: what logging costs",
    )
    parser.add_argument("--paced-rate", type=float, default=500.0, help="text deltas per second in (d) [500]")
    parser.add_argument("--paced-seconds", type=float, default=4.0, help="length of each paced stream in (d) [4]")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        import uvicorn

        uvicorn.run(
            upstream_app(args.megabytes, args.paced_rate, args.paced_seconds),
            host="127.0.0.1",
            port=args.upstream,
            log_level="warning",
        )  # type: ignore[arg-type]
        return

    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    upstream_port = free_port()
    limits = ""
    redis: subprocess.Popen[bytes] | None = None
    if args.limits:
        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_listening(redis_port, redis)
        limits = "requests_per_minute = 1e9\ntokens_per_minute = 1e12\nusd_per_day = 1e9\nusd_per_month = 1e9\n"
    (folder / "tokens.toml").write_text(
        f'[[principals]]\nname = "bench"\ntoken = "{TOKEN}"\ntables = []\n[principals.gateway]\nendpoints = ["*"]\n'
        + limits
    )
    sources = {"gateway": (ROOT, "")}
    if args.without_tables:
        sources["gw no tables"] = (ROOT, "usage_table = false\ninference_table = false\n")
    if args.compare_with:
        sources[f"gw {args.compare_with.name}"] = (args.compare_with.resolve(), "")
    env = {**os.environ, "BENCH_UPSTREAM_KEY": KEY}
    upstream = subprocess.Popen(
        [
            *(sys.executable, __file__, "--upstream", str(upstream_port), "--megabytes", str(args.megabytes)),
            *("--paced-rate", str(args.paced_rate), "--paced-seconds", str(args.paced_seconds)),
        ],
        stdout=subprocess.DEVNULL,
    )
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for name, (source, settings) in sources.items():
        config = folder / f"gateway-{len(gateways)}.toml"  # each its own tables
        config.write_text(
            f'[gateway]\ntokens = "tokens.toml"\nwarehouse = "{folder / f"warehouse-{len(gateways)}"}"\n{settings}'
            + (f'redis_url = "redis://127.0.0.1:{redis_port}/{len(gateways)}"\n' if redis else "")
            + f'[[endpoints]]\nname = "claude"\nprovider = "anthropic"\nbase_url = "http://127.0.0.1:{upstream_port}"\n'
            f'api_key_env = "BENCH_UPSTREAM_KEY"\nmodels = ["claude-*"]\n'
            + ("requests_per_minute = 1e9\n" if redis else "")
        )
        gateways[name] = start_gateway(source, config, env)
    print(f"start: {load()} ({os.cpu_count()} cores)")
    try:
        wait_listening(upstream_port, upstream)
        for process, port in gateways.values():
            wait_listening(port, process)
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/messages"
        direct_headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        gateway_headers = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
        small = json.dumps({"model": "claude-bench", "stream": True, "max_tokens": 10, "messages": []}).encode()
        big = json.dumps({"model": "claude-bench-big", "stream": True, "max_tokens": 10, "messages": []}).encode()
        paced = json.dumps({"model": "claude-bench-paced", "stream": True, "max_tokens": 10, "messages": []}).encode()
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        transport = httpx.HTTPTransport(socket_options=nodelay)
        paths = {"direct A": (direct_url, direct_headers), "direct B": (direct_url, direct_headers)}
        for name, (_, port) in gateways.items():
            paths[name] = (f"http://127.0.0.1:{port}/anthropic/v1/messages", gateway_headers)
        with httpx.Client(timeout=120, transport=transport) as client:
            for _ in range(30):  # warm up every path (connections, imports, genai-prices, tables)
                for url, headers in paths.values():
                    ttfb(client, url, headers, small)
            samples: dict[str, list[float]] = {name: [] for name in paths}
            shuffle = random.Random(12)
            cpu_before = {name: cpu_seconds(process.pid) for name, (process, _) in gateways.items()}
            upstream_before = cpu_seconds(upstream.pid)
            for _ in range(args.requests):
                order = list(paths)
                shuffle.shuffle(order)
                for name in order:
                    samples[name].append(ttfb(client, *paths[name], small))
            cpu_per_call = {
                name: (cpu_seconds(process.pid) - cpu_before[name]) / args.requests
                for name, (process, _) in gateways.items()
            }
            upstream_cpu = (cpu_seconds(upstream.pid) - upstream_before) / (args.requests * len(paths))
            print(f"(a) time to first byte, {args.requests} streamed calls per path, in shuffled order")
            for name, values in samples.items():
                print(f"    {name:12} {summary(values)}")
            a = samples["direct A"]
            for label, plus in [("noise B−A", samples["direct B"])] + [(f"added {n}", samples[n]) for n in gateways]:
                print(
                    f"    {label:18} p50 {(percentile(plus, 0.5) - percentile(a, 0.5)) * 1000:7.2f} ms"
                    f"   p99 {(percentile(plus, 0.99) - percentile(a, 0.99)) * 1000:7.2f} ms"
                )
            print(f"    {load()}")
            shown = ", ".join(f"{name} {cpu * 1000:.2f} ms" for name, cpu in cpu_per_call.items())
            print(f"(b) CPU per call: {shown}; upstream {upstream_cpu * 1000:.2f} ms (the fake provider, for scale)")
            rates: dict[str, list[float]] = {"direct": [], **{name: [] for name in gateways}}
            cpu_per_mb: dict[str, list[float]] = {name: [] for name in gateways}
            for _ in range(args.rounds):
                rates["direct"].append(throughput(client, direct_url, direct_headers, big)[0])
                for name, (process, port) in gateways.items():
                    before = cpu_seconds(process.pid)
                    url = f"http://127.0.0.1:{port}/anthropic/v1/messages"
                    rate, size = throughput(client, url, gateway_headers, big)
                    cpu_per_mb[name].append((cpu_seconds(process.pid) - before) / (size / 1e6))
                    rates[name].append(rate)
            print(f"(c) one {args.megabytes} MB SSE stream, {args.rounds} rounds per path, alternating")
            for label, pick in (("best", max), ("median", statistics.median)):
                direct_rate = pick(rates["direct"])
                parts = [f"direct {direct_rate:6.1f} MB/s"]
                for name in gateways:
                    rate = pick(rates[name])
                    parts.append(f"{name} {rate:6.1f} MB/s (loss {(1 - rate / direct_rate) * 100:5.1f} %)")
                print(f"    {label:6}  " + "   ".join(parts))
            shown = ", ".join(f"{name} {statistics.median(v) * 1000:.2f} ms" for name, v in cpu_per_mb.items())
            print(f"    CPU per streamed MB: {shown} (a model streaming 100 tokens/s sends ~0.02 MB/s)")
            paced_rates: dict[str, list[float]] = {"direct": [], **{name: [] for name in gateways}}
            paced_lags: dict[str, list[float]] = {"direct": [], **{name: [] for name in gateways}}
            for _ in range(args.rounds):
                for name in paced_rates:
                    if name == "direct":
                        url, headers = direct_url, direct_headers
                    else:
                        url, headers = f"http://127.0.0.1:{gateways[name][1]}/anthropic/v1/messages", gateway_headers
                    rate, lags = paced_stream(client, url, headers, paced)
                    paced_rates[name].append(rate)
                    paced_lags[name].extend(lags)
            print(
                f"(d) paced stream: {args.paced_rate:g} text deltas/s for {args.paced_seconds:g} s, "
                f"{args.rounds} rounds per path, alternating"
            )
            direct_rate = statistics.median(paced_rates["direct"])
            direct_lags = paced_lags["direct"]
            for name in paced_rates:
                rate, lags = statistics.median(paced_rates[name]), paced_lags[name]
                line = (
                    f"    {name:12} {rate:8.1f} deltas/s   lag p50 {percentile(lags, 0.5) * 1000:6.2f} ms"
                    f"   p99 {percentile(lags, 0.99) * 1000:6.2f} ms"
                )
                if name != "direct":
                    line += (
                        f"   (loss {(1 - rate / direct_rate) * 100:5.2f} %, added lag p50 "
                        f"{(percentile(lags, 0.5) - percentile(direct_lags, 0.5)) * 1000:5.2f} ms, p99 "
                        f"{(percentile(lags, 0.99) - percentile(direct_lags, 0.99)) * 1000:5.2f} ms)"
                    )
                print(line)
            print(f"end: {load()}")
    finally:
        for process, _ in gateways.values():
            process.terminate()
        upstream.terminate()
        for process in [upstream, *(process for process, _ in gateways.values())]:
            process.wait(30)
        if redis is not None:
            redis.terminate()
            redis.wait(30)


if __name__ == "__main__":
    main()
