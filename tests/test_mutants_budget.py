"""The back-pressure budget's arithmetic, in process: what a reservation holds, when it
is refused (413 for more than the whole buffer, 503 for more than is free now), and that
every byte is given back (issue 10: mutation testing of budget.py)."""

from __future__ import annotations

import pytest

from otel_ingest.budget import MemoryBudget
from otel_ingest.errors import PayloadTooLarge, Unavailable


def test_reservations_hold_resize_and_release() -> None:
    budget = MemoryBudget(1000)
    with budget.reservation() as first:
        first.resize(600)
        assert (budget.used, first.size) == (600, 600)
        first.resize(200)  # shrinking gives bytes back
        assert budget.used == 200
        with budget.reservation() as second:
            second.resize(800)  # exactly the rest
            assert budget.used == 1000
            with pytest.raises(Unavailable, match="holding 1,000 bytes for earlier requests") as refused:
                first.resize(201)
            assert refused.value.retry_after == 1.0
            assert (budget.used, first.size) == (1000, 200)  # a refused resize holds nothing more
            first.resize(200)  # the same size again is not growth
        assert budget.used == 200
    assert budget.used == 0
    assert (first.size, second.size) == (0, 0)  # released: reusing them starts from nothing
    with first:
        first.resize(1000)  # the whole buffer is free again
    assert budget.used == 0


def test_more_than_the_whole_buffer_is_413_even_when_idle() -> None:
    budget = MemoryBudget(1000)
    reservation = budget.reservation()
    reservation.resize(1000)
    reservation.resize(0)
    with pytest.raises(PayloadTooLarge, match="more than the server's whole buffer of 1,000 bytes"):
        reservation.resize(1001)
    with pytest.raises(PayloadTooLarge):
        reservation.check(1001)
    assert budget.used == 0


def test_check_holds_nothing() -> None:
    budget = MemoryBudget(1000)
    with budget.reservation() as held:
        held.check(1000)
        assert (budget.used, held.size) == (0, 0)
        held.resize(300)
        other = budget.reservation()
        other.check(700)
        with pytest.raises(Unavailable):
            other.check(701)
        held.check(1000)  # growing your own reservation counts only the growth
        with pytest.raises(Unavailable):
            other.resize(701)
        assert budget.used == 300
