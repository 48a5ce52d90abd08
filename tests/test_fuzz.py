"""Fuzzing (issue 4): thousands of mutated captured requests against a real server.

Hypothesis draws a mutation of a real capture — bit flips, truncation, splicing,
inserted or repeated bytes, random bytes; a wrong, odd or missing Content-Type; a
Content-Encoding applied, claimed but not applied, applied twice or corrupted; another
signal's path or table, a missing or absent table; another method; chunked or not —
and sends it. Whatever comes in:

- the answer is never a 5xx, and the server keeps answering;
- a request refused as a whole (any non-200) adds nothing to any table's Delta log;
- every table still reads cleanly with polars at the end.

Requests run on four threads, each with its own table set, so that "nothing added"
is judged exactly on the tables a thread's request could have reached. The run is
derandomized (the same requests on every CI run); FUZZ_EXAMPLES=500 FUZZ_RANDOM=1
explores further.
"""

from __future__ import annotations

import gzip
import os
import random
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from support import Capture, Server, load_captures, table_path

THREADS = 4
REQUESTS_PER_THREAD = 12  # per hypothesis example
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
SIGNALS = ("metrics", "logs", "traces")
SUFFIXES = {"metrics": "_otel_metrics", "logs": "_otel_logs", "traces": "_otel_spans"}
CAPTURES = load_captures()
CONTENT_TYPES = [
    "application/x-protobuf",
    "application/json",
    "application/protobuf",
    "application/json; charset=utf-8",
    "APPLICATION/X-PROTOBUF",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-protobuf; charset=\x7f",
    "",
]
COMPRESSORS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": lambda body: zstandard.ZstdCompressor().compress(body),
}


def prefix(thread: int) -> str:
    return f"main.fuzz.t{thread}"


@dataclass
class Mutant:
    """One request to send, and how it was made (shown when an assertion fails)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    chunked: bool
    recipe: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Mutant({self.method} {self.path} {self.headers} {len(self.body)} B: {', '.join(self.recipe)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis would print every field, body included


def _payload(capture: Capture) -> bytes:
    """The capture's body with its own Content-Encoding undone."""
    return gzip.decompress(capture.body) if capture.header("content-encoding") == "gzip" else capture.body


def _mutate_body(body: bytes, other: bytes, rng: random.Random, recipe: list[str]) -> bytes:
    operation = rng.choice(["keep", "flip", "flip", "truncate", "splice", "insert", "repeat", "random", "empty"])
    recipe.append(operation)
    if operation == "flip" and body:
        mutable = bytearray(body)
        for _ in range(rng.choice([1, 1, 2, 8, 64])):
            mutable[rng.randrange(len(mutable))] ^= 1 << rng.randrange(8)
        return bytes(mutable)
    if operation == "truncate":
        return body[: rng.randrange(len(body) + 1)]
    if operation == "splice":
        return body[: rng.randrange(len(body) + 1)] + other[rng.randrange(len(other) + 1) :]
    if operation == "insert":
        at = rng.randrange(len(body) + 1)
        return body[:at] + rng.randbytes(rng.choice([1, 4, 100])) + body[at:]
    if operation == "repeat" and body:
        start = rng.randrange(len(body))
        piece = body[start : start + rng.choice([1, 16, 1000])]
        return body[:start] + piece * rng.choice([2, 10]) + body[start:]
    if operation == "random":
        return rng.randbytes(rng.choice([1, 10, 1000, 20_000]))
    if operation == "empty":
        return b""
    return body


def _encode(body: bytes, rng: random.Random, recipe: list[str]) -> tuple[bytes, str | None]:
    """(body as sent, Content-Encoding header or None)."""
    operation = rng.choice(["none", "none", "apply", "apply", "claim-only", "hide", "unknown", "corrupt", "twice"])
    coding = rng.choice(list(COMPRESSORS))
    recipe.append(f"encoding:{operation}:{coding}")
    if operation == "apply":
        return COMPRESSORS[coding](body), coding
    if operation == "claim-only":
        return body, coding
    if operation == "hide":
        return COMPRESSORS[coding](body), None
    if operation == "unknown":
        return body, rng.choice(["br", "compress", "gzip;q=1", "identity, lz4"])
    if operation == "corrupt":
        compressed = bytearray(COMPRESSORS[coding](body))
        compressed[rng.randrange(len(compressed))] ^= 0xFF
        return bytes(compressed), coding
    if operation == "twice":
        second = rng.choice(list(COMPRESSORS))
        return COMPRESSORS[second](COMPRESSORS[coding](body)), f"{coding}, {second}"
    return body, None


@st.composite
def mutants(draw: st.DrawFn, thread: int) -> Mutant:
    # Indices, not captures: hypothesis shows what it drew when a test fails.
    capture = CAPTURES[draw(st.integers(0, len(CAPTURES) - 1))]
    other = CAPTURES[draw(st.integers(0, len(CAPTURES) - 1))]
    rng = draw(st.randoms(use_true_random=True))
    recipe = [capture.id]

    body = _mutate_body(_payload(capture), _payload(other), rng, recipe)
    body, coding = _encode(body, rng, recipe)

    signal, path = capture.signal, capture.path
    choice = rng.random()
    if choice < 0.1:
        signal = rng.choice(SIGNALS)
        path = f"/v1/{signal}"
        recipe.append(f"path:{signal}")
    elif choice < 0.15:
        path = rng.choice(["/v1/profiles", "/api/2.0/otel/v1/", "/api/2.0/otel/v2/logs", "/%00"])
        recipe.append("path:junk")

    headers = {"content-type": capture.header("content-type") or ""}
    choice = rng.random()
    if choice < 0.2:
        headers["content-type"] = rng.choice(CONTENT_TYPES)
        recipe.append("content-type")
    elif choice < 0.25:
        del headers["content-type"]
        recipe.append("no content-type")
    if coding is not None:
        headers["content-encoding"] = coding

    table: str | None = f"{prefix(thread)}{SUFFIXES[signal]}"
    choice = rng.random()
    if choice < 0.1:
        table = f"{prefix(thread)}{SUFFIXES[rng.choice(SIGNALS)]}"
        recipe.append("table:other-signal")
    elif choice < 0.15:
        table = f"{prefix(thread)}_missing"
        recipe.append("table:missing")
    elif choice < 0.2:
        table = rng.choice(["", "a.b", "main.fuzz.t0..x", "main.fuzz./x", "main.fuzz.t9_otel_logs", ".."])
        recipe.append("table:junk")
    elif choice < 0.25:
        table = None
        recipe.append("table:none")
    if table is not None:
        headers["x-databricks-uc-table-name"] = table

    method = "POST" if rng.random() < 0.95 else rng.choice(["GET", "PUT", "DELETE", "PATCH"])
    return Mutant(method, path, headers, body, chunked=rng.random() < 0.5, recipe=recipe)


def delta_log_entries(warehouse: Path, thread: int) -> dict[str, int]:
    """Commit files in each table of a thread's set (and any folder its requests could create)."""
    counts = {}
    for suffix in [*SUFFIXES.values(), "_missing"]:
        log = table_path(warehouse, f"{prefix(thread)}{suffix}") / "_delta_log"
        counts[suffix] = len(list(log.glob("*.json"))) if log.is_dir() else -1
    return counts


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fuzz")
    tables = ",".join(prefix(thread) for thread in range(THREADS))
    server = Server(root / "warehouse", "--create-tables", tables)
    yield server
    server.stop()


def test_mutated_captures_never_5xx_and_refusals_write_nothing(server: Server) -> None:
    statuses: Counter[int] = Counter()
    clients = [httpx.Client(base_url=server.url, timeout=60) for _ in range(THREADS)]

    def send(thread: int, batch: list[Mutant]) -> None:
        for mutant in batch:
            before = delta_log_entries(server.warehouse, thread)
            response = clients[thread].request(
                mutant.method,
                mutant.path,
                headers=mutant.headers,
                content=_chunks(mutant.body) if mutant.chunked else mutant.body,
            )
            statuses[response.status_code] += 1
            assert response.status_code < 500, (mutant, response.status_code, response.text[:500])
            if response.status_code != 200:
                assert delta_log_entries(server.warehouse, thread) == before, (mutant, response.status_code)
                assert response.content, (mutant, "an error must say what is wrong")

    batches = st.tuples(
        *(
            st.lists(mutants(thread), min_size=REQUESTS_PER_THREAD, max_size=REQUESTS_PER_THREAD)
            for thread in range(THREADS)
        )
    )

    @settings(
        max_examples=EXAMPLES,
        derandomize=not os.environ.get("FUZZ_RANDOM"),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batches)
    def run(batch: tuple[list[Mutant], ...]) -> None:
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(send, thread, batch[thread]) for thread in range(THREADS)]:
                future.result()
        assert server.client.get("/healthz").status_code == 200

    try:
        run()
    finally:
        for client in clients:
            client.close()

    print(f"fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 2_000
    # Both outcomes are exercised: mutants that still hold data and mutants refused.
    assert statuses[200] >= 200
    assert sum(count for status, count in statuses.items() if 400 <= status < 500) >= 500
    # What the server counted as committed is exactly what polars reads back from every file.
    written = {
        sample.labels["table"]: sample.value
        for family in text_string_to_metric_families(server.ops.get("/metrics").text)
        if family.name == "otel_ingest_rows_written"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    stored = {}
    for thread in range(THREADS):
        assert not table_path(server.warehouse, f"{prefix(thread)}_missing").exists()
        for suffix in SUFFIXES.values():
            name = f"{prefix(thread)}{suffix}"
            stored[name] = pl.read_delta(str(table_path(server.warehouse, name))).height
    assert {name: rows for name, rows in stored.items() if rows} == written
    assert sum(stored.values()) > 0
    assert "Traceback" not in server.log()  # no request reached an unexpected error
