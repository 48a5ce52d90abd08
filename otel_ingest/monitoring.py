"""What an operator sees: Prometheus metrics and the access log (SPEC §5).

One ``Monitoring`` object per app holds its own registry, so several apps in one
process (tests) do not collide. With ``--workers N`` each process reports its own
figures; scrape every replica.
"""

from __future__ import annotations

import logging
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

access_log = logging.getLogger("otel_ingest.access")

# Characters an access-log field may hold as they are: no space (fields are separated by
# spaces), no quote or backslash, nothing outside printable ASCII (no line breaks of any kind).
_UNSAFE = re.compile(r"[^\x21-\x7e]|[\\\"]")


def log_field(value: str) -> str:
    """``value`` for a space-separated log line: unsafe characters as \\xNN or \\uNNNN."""
    return _UNSAFE.sub(lambda m: _escape(m.group()), value) or "-"


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Monitoring:
    """Counters and histograms of requests, rows, commits and buffered bytes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "otel_ingest_requests", "Export requests answered.", ["signal", "path", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "otel_ingest_request_seconds",
            "Time from receiving a request to answering it.",
            ["signal"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows_written = Counter("otel_ingest_rows_written", "Rows committed.", ["table"], registry=r)
        self.rows_rejected = Counter(
            "otel_ingest_rows_rejected", "Records rejected alone (partial success).", ["table"], registry=r
        )
        self.commits = Counter("otel_ingest_commits", "Delta commits made.", ["table"], registry=r)
        self.commit_retries = Counter(
            "otel_ingest_commit_retries", "Commit attempts that failed and were retried.", ["table"], registry=r
        )
        self.commit_failures = Counter(
            "otel_ingest_commit_failures", "Commits given up after every retry (answered 503).", ["table"], registry=r
        )
        self.resends = Counter(
            "otel_ingest_resends",
            "Resends of requests answered 503 at the commit deadline, recognised and not written again.",
            ["table"],
            registry=r,
        )
        self.resends_across_workers = Counter(
            "otel_ingest_resends_across_workers",
            "Resends recognised by a table's committing worker (--workers N) although another worker "
            "received the first copy or the resend.",
            ["table"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "otel_ingest_commit_seconds",
            "Time to commit one group of requests to a table.",
            ["table"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "otel_ingest_requests_in_flight", "Export requests received and not yet answered.", registry=r
        )
        self.readiness_probes = Counter(
            "otel_ingest_readiness_probes", "Warehouse write probes made for /readyz.", registry=r
        )
        self.buffered_bytes = Gauge(
            "otel_ingest_buffered_bytes", "Bytes held for requests not yet answered.", registry=r
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        data: bytes = generate_latest(self.registry)
        return data
