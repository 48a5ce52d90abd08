"""Exactly-once when storage fails *after* a commit has landed (the ambiguous failure).

A real server writes to a real S3 server (moto) through ``faults.FaultProxy``, which
forwards the PUT of a Delta commit file (``_delta_log/<version>.json``) to moto, so the
commit really lands, and then loses the answer: the connection is reset, or a 503 comes
back. The writer cannot tell a lost answer from a failed write; it must ask the table
(its Delta ``txn`` id) before retrying, on every attempt including the last, or the
rows are stored twice: once by the landed commit and again by the retry, or by the
client resending after a 503. The rows are read back from moto directly with polars.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from faults import COMMIT_PUT, Event, FaultProxy
from load import PREFIX, TABLE, logs_body
from s3_server import BUCKET, S3Server, start_s3

from otel_ingest import writer
from support import Server

HEADERS = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": TABLE}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (moto, requests serialized so conditional PUTs are atomic)."""
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint) as running:
        yield running


@pytest.fixture
def warehouse(tmp_path: Path) -> str:
    return f"s3://{BUCKET}/exactly-once-{tmp_path.name}-{time.monotonic_ns()}"


@pytest.fixture
def server(s3: S3Server, proxy: FaultProxy, warehouse: str, tmp_path: Path) -> Iterator[Server]:
    """A server whose warehouse is on S3, reached only through the fault proxy."""
    env = {**s3.env, "AWS_ENDPOINT_URL": proxy.url}
    running = Server(tmp_path / "unused", "--create-tables", PREFIX, env=env, warehouse_uri=warehouse)
    yield running
    running.stop()


def stored(s3: S3Server, warehouse: str) -> Counter[str]:
    """How often each ``seq`` is in the table, read from moto itself (not through the proxy)."""
    frame = pl.read_delta(f"{warehouse}/{TABLE.replace('.', '/')}", storage_options=s3.storage_options())
    return Counter(frame["attributes"].map.get("seq").to_list())


def send_until_answered(server: Server, body: bytes, attempts: int = 5) -> list[int]:
    """Send like an OTLP exporter: resend the same body on 503 (retryable), stop at anything else."""
    statuses = []
    for _ in range(attempts):
        status = server.post("/v1/logs", body, HEADERS).status_code
        statuses.append(status)
        if status != 503:
            break
    return statuses


def _landed_but_lost(proxy: FaultProxy) -> list[str]:
    """The commit PUTs that reached moto and were stored (200) while the server was told otherwise."""
    return [e.path for e in proxy.events if e.faulted in ("reset", "status") and e.upstream_status == 200]


def _writes_after_the_lost_answer(events: list[Event]) -> list[str]:
    """Objects the writer PUT after the commit whose answer was lost (the object-store
    client's own resend of that very PUT aside)."""
    lost = next(i for i, e in enumerate(events) if e.faulted in ("reset", "status"))
    table = "/" + TABLE.replace(".", "/") + "/"  # (the readiness probe writes at the root)
    return [e.path for e in events[lost + 1 :] if e.method == "PUT" and table in e.path and e.path != events[lost].path]


@pytest.mark.parametrize(
    ("mode", "status"), [("reset", 0), ("status", 503), ("status", 403)], ids=["connection-reset", "503", "403"]
)
def test_commit_whose_answer_is_lost_is_stored_once(
    s3: S3Server, proxy: FaultProxy, warehouse: str, server: Server, mode: str, status: int
) -> None:
    """The first attempt's commit lands but its answer is lost (a middle attempt): the retry
    must find it through the txn id and answer 200 without writing the rows again. The
    403 variant is an answer the object-store client does not retry on its own."""
    seqs = [f"lost-answer-{k}" for k in range(7)]
    proxy.fail(COMMIT_PUT, times=1, mode=mode, status=status or 503)  # type: ignore[arg-type]
    statuses = send_until_answered(server, logs_body(seqs))
    events = proxy.events
    assert _landed_but_lost(proxy), f"the fault never fired: {events}"
    counts = stored(s3, warehouse)
    assert counts == Counter(dict.fromkeys(seqs, 1)), f"answered {statuses}; stored {counts}"
    assert statuses[-1] == 200, statuses
    # The writer asked before retrying and wrote nothing more: no second data file, no
    # second commit. (delta-rs 1.6.6 would refuse a second commit carrying the same txn
    # id, but only after the retry had uploaded its data file again: an orphan on S3.)
    if statuses == [200]:  # (a commit slower than --commit-deadline is a 503 and a resend instead)
        assert _writes_after_the_lost_answer(events) == [], events
    # The table still takes writes afterwards.
    assert send_until_answered(server, logs_body(["after"])) == [200]
    assert stored(s3, warehouse)["after"] == 1


def test_commit_landing_on_the_final_attempt_is_stored_once(
    s3: S3Server, proxy: FaultProxy, warehouse: str, server: Server
) -> None:
    """Every attempt but the last fails plainly (the store refuses the commit: nothing lands),
    and the last one lands but its answer is lost. Without a check after that final failure
    the server answers 503 for rows it has stored, and the client's resend stores them twice."""
    attempts = writer.COMMIT_ATTEMPTS
    seqs = [f"last-attempt-{k}" for k in range(5)]
    # 403 is not retried inside the object-store client, so each refusal is one writer attempt.
    proxy.fail(COMMIT_PUT, times=attempts - 1, mode="refuse", status=403)
    proxy.fail(COMMIT_PUT, times=1, mode="reset")
    statuses = send_until_answered(server, logs_body(seqs))
    refused = [e for e in proxy.events if e.faulted == "refuse"]
    assert len(refused) == attempts - 1, proxy.events
    assert len(_landed_but_lost(proxy)) == 1, f"the final attempt did not land: {proxy.events}"
    counts = stored(s3, warehouse)
    assert counts == Counter(dict.fromkeys(seqs, 1)), f"answered {statuses}; stored {counts}"
    assert statuses[-1] == 200, statuses


def test_commit_that_never_lands_is_503_and_the_resend_is_stored_once(
    s3: S3Server, proxy: FaultProxy, warehouse: str, server: Server
) -> None:
    """The unambiguous failure, for contrast: every attempt is refused, nothing lands, the
    client gets a retryable 503, and its resend is stored exactly once."""
    seqs = [f"refused-{k}" for k in range(3)]
    proxy.fail(COMMIT_PUT, times=writer.COMMIT_ATTEMPTS, mode="refuse", status=403)
    statuses = send_until_answered(server, logs_body(seqs))
    assert statuses == [503, 200], statuses
    assert stored(s3, warehouse) == Counter(dict.fromkeys(seqs, 1))


LOG_READ = re.compile(r"^GET .*(_delta_log|list-type=2)")


def test_final_attempt_lands_and_the_first_check_fails_too(
    s3: S3Server, proxy: FaultProxy, warehouse: str, server: Server
) -> None:
    """The commit lands on the final attempt, its answer is lost, and the store is briefly
    unreadable when the writer asks whether it landed. "I could not tell" is not "it did
    not land": answering 503 here makes the client's resend a second copy."""
    attempts = writer.COMMIT_ATTEMPTS
    seqs = [f"unsure-{k}" for k in range(4)]
    proxy.fail(COMMIT_PUT, times=attempts - 1, mode="refuse", status=403)
    proxy.fail(COMMIT_PUT, times=1, mode="reset")
    landed = len(proxy.events)

    def after_landing() -> None:
        proxy.wait_for(lambda events: any(e.faulted == "reset" for e in events[landed:]))
        proxy.fail(LOG_READ, times=2, mode="refuse", status=403)

    arm = threading.Thread(target=after_landing)
    arm.start()
    statuses = send_until_answered(server, logs_body(seqs))
    arm.join()
    counts = stored(s3, warehouse)
    assert counts == Counter(dict.fromkeys(seqs, 1)), f"answered {statuses}; stored {counts}"
    assert statuses[-1] == 200, statuses
