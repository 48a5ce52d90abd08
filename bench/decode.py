"""Decoding speed, µs per record, per signal and encoding, both decoders side by side in one run.

    python bench/decode.py [--records 200] [--seconds 2]

Every captured request (tests/captures) is scaled to ~``--records`` records (bench/run.py's
mix). For each signal, encoding and decoder it times body → Arrow batch, the work a request
costs before its commit: the Python path is ``wire.decode_request`` + the flattener +
``.batch`` (the Arrow conversion the commit does), the native one ``decode.native.decode``
for protobuf and ``decode.from_json`` for OTLP/JSON (JSON → protobuf bytes in C, then the
native decoder, or protobuf + the flattener for the signals it does not cover yet).
It also decodes the same requests on two threads instead of one (wall time), to show the
compiled decoders release the GIL. The machine is shared and noisy: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from run import build_mix  # noqa: E402

from otel_ingest import decode, otlp_json, wire  # noqa: E402
from otel_ingest.decode import jsonpb, native  # noqa: E402
from otel_ingest.flatten import FLATTENERS  # noqa: E402
from otel_ingest.schema import SIGNALS, Signal  # noqa: E402


def timed(work: Callable[[], object], seconds: float) -> float:
    """CPU seconds per call of ``work``, repeated for about ``seconds`` of CPU time (CPU time,
    not wall time, so that other processes on a shared machine count less)."""
    work()
    calls, started = 0, time.process_time()
    while (elapsed := time.process_time() - started) < seconds:
        work()
        calls += 1
    return elapsed / calls


def python_path(signal: Signal, body: bytes, encoding: wire.Encoding) -> Callable[[], object]:
    def work() -> object:
        message, _ = wire.decode_request(signal, body, encoding)
        return FLATTENERS[signal](message).batch

    return work


def native_path(signal: Signal, body: bytes) -> Callable[[], object]:
    def work() -> object:
        result = native.decode(signal, body, -1)
        assert result is not None, "the native decoder declined a captured request"
        return result.batch

    return work


def json_path(signal: Signal, body: bytes) -> Callable[[], object]:
    def work() -> object:
        result = decode.from_json(signal, body, -1)
        assert result is not None, "the JSON transcoder declined a captured request"
        return result.batch

    return work


def on_threads(work: Callable[[], object], calls: int, threads: int) -> float:
    """Wall-clock seconds for ``calls`` calls of ``work`` shared by ``threads`` threads (the same
    total work whatever the number of threads)."""
    share = [calls // threads + (slot < calls % threads) for slot in range(threads)]

    def loop(slot: int) -> None:
        for _ in range(share[slot]):
            work()

    running = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads)]
    started = time.perf_counter()
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    mix = build_mix(args.records)
    print(f"µs per record, body → Arrow batch ({args.records}-record requests, every capture)")
    print(f"{'signal':8} {'encoding':9} {'python':>9} {'native':>9} {'python/native':>14}")
    for signal in SIGNALS:
        payloads = [p for p in mix if p.signal == signal]
        records = sum(p.records for p in payloads)
        for encoding in ("protobuf", "json"):
            python = native_time = 0.0
            for payload in payloads:
                body = payload.body
                if encoding == "json":
                    message, _ = wire.decode_request(signal, body, "protobuf")
                    body = otlp_json.dumps(message)
                python += timed(python_path(signal, body, encoding), args.seconds / len(payloads))
                if native.available() and encoding == "protobuf" and signal in native.SIGNALS:
                    native_time += timed(native_path(signal, body), args.seconds / len(payloads))
                elif jsonpb.available() and encoding == "json":
                    native_time += timed(json_path(signal, body), args.seconds / len(payloads))
            py_us = python / records * 1e6
            if native_time:
                nat_us = native_time / records * 1e6
                print(f"{signal:8} {encoding:9} {py_us:9.2f} {nat_us:9.2f} {py_us / nat_us:13.1f}×")
            else:
                print(f"{signal:8} {encoding:9} {py_us:9.2f} {'-':>9} {'-':>14}")
    if native.available():
        (logs,) = [p for p in mix if p.signal == "logs" and p.records >= args.records][:1] or [mix[0]]
        logs_json = otlp_json.dumps(wire.decode_request("logs", logs.body, "protobuf")[0])
        ratios = []
        for name, work in (
            ("native", native_path("logs", logs.body)),
            ("python", python_path("logs", logs.body, "protobuf")),
            ("json native", json_path("logs", logs_json)),
        ):
            # about --seconds of work on one thread, then the same calls on two
            calls = max(2, int(args.seconds / max(timed(work, 0.2), 1e-6)))
            one, two = on_threads(work, calls, 1), on_threads(work, calls, 2)
            ratios.append(f"{name} {one / two:.2f}× ({calls} requests: {one:.2f} s → {two:.2f} s)")
        print("two threads vs one, same requests (wall-clock speed-up), logs:", ", ".join(ratios))


if __name__ == "__main__":
    main()
