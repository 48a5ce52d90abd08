"""Whether the warehouse takes writes, for ``/readyz``: probed at most once an interval.

A probe writes and deletes a small object at the warehouse root. It used to run on
every ``/readyz`` call, on the thread pool the commits use: clients looping on /readyz
made thousands of writes a second and delayed every commit. Now one probe runs at a
time, on its own thread, at most once per ``interval``; calls in between get the
cached answer. During a storage outage a probe can hang: ``/readyz`` still answers at
once, with the last known state and how long the running probe has taken, and turns
not-ready once it has run longer than ``slow_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from otel_ingest.monitoring import Monitoring
from otel_ingest.tables import Warehouse

log = logging.getLogger("otel_ingest.readiness")

# How long /readyz waits for a probe it started before answering without it: less than
# Kubernetes' default probe timeout (1 s).
FIRST_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class ProbeResult:
    ready: bool
    reason: str
    finished_at: float  # time.monotonic()


def _reason(exc: BaseException) -> str:
    """The first line of an error, bounded: storage errors can carry whole backtraces."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class Readiness:
    """The cached outcome of warehouse write probes."""

    def __init__(
        self, warehouse: Warehouse, interval: float, monitoring: Monitoring, slow_after: float | None = None
    ) -> None:
        self.warehouse = warehouse
        self.monitoring = monitoring
        self.interval = interval
        self.slow_after = max(interval, 2.0) if slow_after is None else slow_after
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness-probe")
        self._last: ProbeResult | None = None
        self._running: asyncio.Future[None] | None = None
        self._started_at = 0.0

    def _probe(self) -> None:
        try:
            self.warehouse.probe()
        except Exception as exc:
            log.warning("Readiness probe of %s failed: %s", self.warehouse.root, exc)
            self._last = ProbeResult(False, f"warehouse not writable: {_reason(exc)}", time.monotonic())
        else:
            self._last = ProbeResult(True, "", time.monotonic())

    def _start(self) -> asyncio.Future[None]:
        self.monitoring.readiness_probes.inc()
        self._started_at = time.monotonic()
        running = asyncio.get_running_loop().run_in_executor(self._executor, self._probe)
        self._running = running
        running.add_done_callback(lambda _: setattr(self, "_running", None))
        return running

    def start(self) -> None:
        """Begin the first probe now (at start-up), so the first /readyz need not wait."""
        if self._running is None:
            self._start()

    async def check(self) -> tuple[bool, dict[str, object]]:
        """(ready, document for the response). Starts a probe when the last one is older
        than the interval and none is running; waits for it only briefly."""
        now = time.monotonic()
        running = self._running
        if running is None and (self._last is None or now - self._last.finished_at >= self.interval):
            running = self._start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(running), FIRST_WAIT_SECONDS)
            running = self._running
        last = self._last
        document: dict[str, object] = {}
        if running is not None:
            seconds = time.monotonic() - self._started_at
            document["probe"] = f"in progress for {seconds:.1f} s"
            if seconds > self.slow_after:
                return False, {
                    "status": "unavailable",
                    "reason": f"the warehouse has not answered a write probe for {seconds:.0f} s",
                    **document,
                }
        if last is None:
            return False, {"status": "unavailable", "reason": "the first warehouse probe has not finished", **document}
        document["checked_seconds_ago"] = round(time.monotonic() - last.finished_at, 1)
        if not last.ready:
            return False, {"status": "unavailable", "reason": last.reason, **document}
        return True, {"status": "ready", **document}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
