"""Fuzz the native decoder and its OTLP/JSON front end with libFuzzer, AddressSanitizer and
UndefinedBehaviorSanitizer.

    python fuzz/run.py [--seconds 60] [--corpus DIR] [--jobs N] [--signals logs,traces,metrics]

Builds ``otel_ingest/decode/_native.c`` without Python (``-DOTEL_NATIVE_FUZZ``) into a
libFuzzer binary with clang (Debian: ``apt-get install clang libclang-rt-14-dev``). For each
signal (the binary reads ``OTEL_FUZZ_SIGNAL``: logs, traces or metrics) it runs that signal's
fixed malformed cases of tests/test_decoder.py once each, then fuzzes for its share of two
thirds of ``--seconds`` from a corpus seeded with every captured request of the signal
(tests/captures, decompressed, JSON ones re-encoded as protobuf), the synthetic ones of
tests/test_decoder.py and those cases. Any sanitizer report, crash, leak or timeout fails the
run (exit status 1) and leaves the input in ``--artifacts``. The last third of the time goes to
``_jsonpb.c`` (OTLP/JSON → protobuf bytes, all three signals), built the same way with the
message table of the installed protos, from every JSON capture, every capture re-encoded as
JSON and the fixed cases of tests/test_jsonpb.py, with a dictionary of the OTLP keys. Fuzzing
longer: pass a persistent ``--corpus`` folder (one sub-folder per signal) and ``--seconds 3600``
(or more, with ``--jobs`` on more cores); the corpus grows with every run.
tests/test_decoder_fuzz.py runs it for 120 s in CI (.ci/run, after the suite).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "otel_ingest" / "decode" / "_native.c"
JSON_SOURCE = ROOT / "otel_ingest" / "decode" / "_jsonpb.c"
JSON_MAX_LEN = 65536
SIGNALS = ("logs", "traces", "metrics")
FLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-DOTEL_NATIVE_FUZZ"]


def find_clang() -> str | None:
    for name in ("clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14"):
        path = shutil.which(name)
        if path:
            return path
    return None


def seeds(signal: str) -> dict[str, bytes]:
    """Name → body: the captured requests of ``signal`` as protobuf, the synthetic ones and the
    fixed malformed cases."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    from test_decoder import MALFORMED_BY_SIGNAL, SYNTHETIC

    from otel_ingest import wire
    from otel_ingest.errors import DecodeError
    from support import load_captures

    out = {f"malformed-{i}": body for i, body in enumerate(MALFORMED_BY_SIGNAL[signal].values())}
    out.update({f"synthetic-{i}": body for i, body in enumerate(SYNTHETIC.get(signal, []))})
    for capture in load_captures():
        if capture.signal != signal:
            continue
        body = wire.decompress(capture.body, capture.header("content-encoding"), 64 << 20)
        try:
            message, _ = wire.decode_request(signal, body, wire.media_type(capture.header("content-type")))
        except DecodeError:
            continue
        out[f"capture-{capture.run}-{capture.n}"] = message.SerializeToString()
    return out


def json_seeds() -> dict[str, bytes]:
    """Name → body: JSON captures as sent, every capture as JSON, the fixed cases of test_jsonpb."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    from test_jsonpb import CAPTURED, FIXED

    out = {
        f"fixed-{i}": body if isinstance(body, bytes) else body.encode() for i, (_, body) in enumerate(FIXED.values())
    }
    for name, _, bodies in CAPTURED:
        for i, (body, _) in enumerate(bodies):
            if len(body) <= JSON_MAX_LEN:  # small inputs: many more runs in the time
                out[f"capture-{name.replace('/', '-')}-{i}"] = body
    return out


def build_json(clang: str, work: Path) -> tuple[Path, Path]:
    """The JSON transcoder's fuzzing binary, with the message table compiled in, and its dictionary."""
    sys.path[:0] = [str(ROOT)]
    from otel_ingest.decode import jsonpb

    table, _ = jsonpb.table()
    header = work / "jsonpb_schema.h"
    header.write_text(f"static const uint8_t SCHEMA_BLOB[] = {{{','.join(map(str, table))}}};\n")
    binary = work / "fuzz_json"
    defines = ["-DOTEL_JSONPB_FUZZ", f'-DOTEL_JSONPB_SCHEMA="{header}"']
    flags = [flag for flag in FLAGS if flag != "-DOTEL_NATIVE_FUZZ"]
    subprocess.run([clang, *flags, *defines, str(JSON_SOURCE), "-o", str(binary)], check=True)
    names = {name for message in jsonpb.messages()[0] for f in message.fields for name in (f.name, f.json_name)}
    tokens = sorted(f'"\\"{name}\\":"' for name in names)
    tokens += ['"null"', '"true"', '"false"', '"\\\\u"', '"\\"NaN\\""', '"1e999"', '"-0"', '"[{"', '"}]"']
    dictionary = work / "json.dict"
    dictionary.write_text("\n".join(tokens) + "\n")
    return binary, dictionary


def fuzz(
    binary: Path,
    seeds: dict[str, bytes],
    corpus: Path,
    seconds: int,
    args: argparse.Namespace,
    *extra: str,
    signal: str = "",
) -> bool:
    """Every seed once (the fixed cases), then fuzzing for ``seconds``; False on any finding.
    ``signal``: the decoder the native binary runs (OTEL_FUZZ_SIGNAL)."""
    environment = {**os.environ, "OTEL_FUZZ_SIGNAL": signal}
    print(f"fuzz: {binary.name} {signal}, {seconds} s", file=sys.stderr, flush=True)
    seed_dir = binary.parent / f"{binary.name}-{signal}-seeds"
    seed_dir.mkdir()
    for name, body in seeds.items():
        (seed_dir / f"{name}-{hashlib.sha256(body).hexdigest()[:8]}").write_bytes(body)
    corpus.mkdir(parents=True, exist_ok=True)
    common = [f"-artifact_prefix={args.artifacts}/", "-timeout=10", "-rss_limit_mb=2048", "-max_len=1048576", *extra]
    once = subprocess.run([str(binary), *common, *sorted(map(str, seed_dir.iterdir()))], env=environment)
    if once.returncode != 0:
        return False
    run = subprocess.run(
        [
            str(binary),
            *common,
            f"-max_total_time={seconds}",
            *([f"-jobs={args.jobs}", f"-workers={args.jobs}"] if args.jobs > 1 else []),
            "-print_final_stats=1",
            str(corpus),
            str(seed_dir),
        ],
        env=environment,
    )
    return run.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--corpus", type=Path, help="a folder kept between runs (default: a temporary one)")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--signals", default=",".join(SIGNALS), help="comma-separated: logs,traces,metrics")
    args = parser.parse_args()
    signals = [name for name in args.signals.split(",") if name]
    if not signals or set(signals) - set(SIGNALS):
        parser.error(f"--signals takes some of {', '.join(SIGNALS)}")
    clang = find_clang()
    if clang is None:
        print("fuzz: clang not found (Debian: apt-get install clang libclang-rt-14-dev)", file=sys.stderr)
        return 2
    json_seconds = max(1, args.seconds // 3)
    with tempfile.TemporaryDirectory(prefix="otel-ingest-fuzz-") as tmp:
        work = Path(tmp)
        binary = work / "fuzz_native"
        subprocess.run([clang, *FLAGS, str(SOURCE), "-o", str(binary), "-lm"], check=True)
        json_binary, dictionary = build_json(clang, work)
        args.artifacts.mkdir(parents=True, exist_ok=True)
        corpus = args.corpus or work / "corpus"
        share = max(1, (args.seconds - json_seconds) // len(signals))
        for signal in signals:
            if not fuzz(binary, seeds(signal), corpus / signal, share, args, signal=signal):
                return 1
        json_corpus = corpus.with_name(corpus.name + "-json")
        if not fuzz(
            json_binary,
            json_seeds(),
            json_corpus,
            json_seconds,
            args,
            f"-dict={dictionary}",
            f"-max_len={JSON_MAX_LEN}",
        ):
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
