"""Back-pressure: a process-wide bound on the bytes held for requests not yet answered.

A request reserves what it holds as it goes — the body as it is read, the inflated
body, the Arrow batch — and releases it once answered. A reservation that would pass
the bound fails at once with ``Unavailable`` (503 + Retry-After), so memory stays
bounded whatever the load: clients back off and retry instead of piling up.
"""

from __future__ import annotations

from types import TracebackType

from otel_ingest.errors import PayloadTooLarge, Unavailable

# A decoded protobuf message and the Python objects made while flattening take a few
# times the bytes of the body; this factor is charged while a body is decoded.
DECODE_OVERHEAD = 4


class MemoryBudget:
    """Counts reserved bytes against ``limit`` (single event loop: no locking needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """The bytes one request holds; ``with`` releases them at the end."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0

    def check(self, size: int) -> None:
        """Raise as ``resize(size)`` would, without holding anything."""
        budget = self.budget
        if size > budget.limit:
            raise PayloadTooLarge(
                f"The request needs {size:,} bytes of buffer, more than the server's whole "
                f"buffer of {budget.limit:,} bytes; send smaller batches."
            )
        if size > self.size and budget.used + size - self.size > budget.limit:
            raise Unavailable(
                f"The server is holding {budget.used:,} bytes for earlier requests (limit "
                f"{budget.limit:,}); retry after the Retry-After delay.",
                retry_after=1.0,
            )

    def resize(self, size: int) -> None:
        """Hold ``size`` bytes from now on; raises Unavailable if that passes the bound."""
        self.check(size)
        self.budget.used += size - self.size
        self.size = size

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.budget.used -= self.size
        self.size = 0
