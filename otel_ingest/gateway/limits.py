"""Rate limits and budgets, checked before a call and settled with its real usage after.

Per minute limits are token buckets (capacity = the per-minute figure, refilled
continuously), so there is no window edge where twice the limit passes:

* requests: a call takes one request from the bucket, or is refused;
* tokens: a call is admitted while the bucket is not empty, and its real tokens are taken
  afterwards (the bucket may go into debt: the next calls wait until it refills).

Budgets are USD spent per UTC day and month (fixed calendar windows), checked before a
call and increased by its cost after it.

State lives in Redis when ``redis_url`` is set, so every replica shares one bucket
(updated atomically by a Lua script; the clock is Redis's own ``TIME``). Without Redis —
or while it cannot be reached — each replica keeps its own state and enforces the limit
divided by ``replicas``: together they stay within it. A refusal is ``OverLimit`` with the
seconds until the call would pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from otel_ingest.gateway.config import Limits
from otel_ingest.gateway.errors import OverLimit
from otel_ingest.gateway.usage import Usage

log = logging.getLogger("otel_ingest.gateway.limits")

REDIS_TIMEOUT_SECONDS = 0.5
ALWAYS = -1e18  # a bucket's ``need`` that is always met: settling charges even into debt
FALLBACK_LOG_EVERY_SECONDS = 30.0

_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1])
local at = tonumber(state[2])
if level == nil then level = capacity; at = now end
level = math.min(capacity, level + math.max(0, now - at) * rate)
if level < need then
  return tostring((need - level) / rate)
end
level = level - amount
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((capacity - level) / rate) + 60)
return '0'
"""


class Store(Protocol):
    async def bucket(self, key: str, rate: float, capacity: float, need: float, amount: float) -> float:
        """Refill ``key``; if it holds at least ``need``, take ``amount`` and return 0,
        else return the seconds until it will hold ``need``."""

    async def spent(self, key: str) -> float: ...

    async def spend(self, key: str, amount: float, ttl: int) -> None: ...


class MemoryStore:
    """This replica's own state."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}
        self.totals: dict[str, float] = {}

    async def bucket(self, key: str, rate: float, capacity: float, need: float, amount: float) -> float:
        now = time.monotonic()
        level, at = self.buckets.get(key, (capacity, now))
        level = min(capacity, level + (now - at) * rate)
        if level < need:
            self.buckets[key] = (level, now)
            return (need - level) / rate
        self.buckets[key] = (level - amount, now)
        return 0.0

    async def spent(self, key: str) -> float:
        return self.totals.get(key, 0.0)

    async def spend(self, key: str, amount: float, ttl: int) -> None:
        # One key per subject and window: a few thousand per year, never cleaned.
        self.totals[key] = self.totals.get(key, 0.0) + amount


class RedisStore:
    """State shared by every replica through Redis."""

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self.client: Any = redis.asyncio.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self.script: Any = self.client.register_script(_BUCKET_SCRIPT)

    async def bucket(self, key: str, rate: float, capacity: float, need: float, amount: float) -> float:
        wait = await self.script(keys=[key], args=[repr(rate), repr(capacity), repr(need), repr(amount)])
        return float(wait)

    async def spent(self, key: str) -> float:
        value = await self.client.get(key)
        return float(value) if value is not None else 0.0

    async def spend(self, key: str, amount: float, ttl: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.incrbyfloat(key, amount)
        pipe.expire(key, ttl)
        await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class Subject:
    """Whose limits: ``principal:alice`` or ``endpoint:claude-opus``."""

    key: str
    limits: Limits


def _windows(now: dt.datetime) -> dict[str, tuple[str, float, int]]:
    """Budget windows: name → (key suffix, seconds until it ends, key lifetime)."""
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    month_end = (now.replace(day=28) + dt.timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "usd_per_day": (f"day:{now:%Y-%m-%d}", (tomorrow - now).total_seconds(), 2 * 86400),
        "usd_per_month": (f"month:{now:%Y-%m}", (month_end - now).total_seconds(), 32 * 86400),
    }


TOKEN_LIMITS = ("tokens_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")


def _tokens(kind: str, usage: Usage) -> int:
    if kind == "input_tokens_per_minute":
        return usage.input_tokens
    if kind == "output_tokens_per_minute":
        return usage.output_tokens
    return usage.total_tokens


class Limiter:
    def __init__(self, redis_url: str | None, replicas: int = 1, on_fallback: Any = None) -> None:
        self.shared: RedisStore | None = RedisStore(redis_url) if redis_url else None
        self.local = MemoryStore()
        self.replicas = max(1, replicas)
        self.on_fallback = on_fallback  # called once per operation served by the local fallback
        self._last_fallback_log = -math.inf

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    def _fallback(self, error: Exception) -> None:
        if self.on_fallback is not None:
            self.on_fallback()
        now = time.monotonic()
        if now - self._last_fallback_log > FALLBACK_LOG_EVERY_SECONDS:
            self._last_fallback_log = now
            log.warning(
                "Redis is unreachable (%s); limits are enforced per replica, each at 1/%d of the limit.",
                error,
                self.replicas,
            )

    async def _run(self, operation: str, *args: Any) -> Any:
        """Run a store operation on Redis, or on this replica's state with the limit divided."""
        if self.shared is not None:
            try:
                return await asyncio.wait_for(getattr(self.shared, operation)(*args), REDIS_TIMEOUT_SECONDS * 2)
            except (OSError, TimeoutError, ConnectionError, Exception) as error:  # redis errors vary by version
                self._fallback(error)
        if operation == "bucket":
            key, rate, capacity, need, amount = args
            return await self.local.bucket(key, rate / self.replicas, capacity / self.replicas, need, amount)
        if operation == "spent":
            return await self.local.spent(args[0]) * self.replicas
        return await getattr(self.local, operation)(*args)

    async def admit(self, subjects: list[Subject]) -> None:
        """Raise OverLimit unless every subject may make one more call now.

        The checks of all subjects go to the store at once (concurrent Redis round trips,
        not one after another): first every token bucket and budget, then the request
        buckets, each of which takes one request; if any refuses, those taken are given back."""
        now = dt.datetime.now(dt.UTC)
        windows = _windows(now)
        checks: list[tuple[str, float, Any]] = []  # (kind, limit, awaitable) in a fixed order
        owners: list[Subject] = []
        for subject in subjects:
            limits = subject.limits
            for kind in TOKEN_LIMITS:
                limit = getattr(limits, kind)
                if limit is not None:
                    key = f"gw:{kind}:{subject.key}"
                    checks.append((kind, limit, self._run("bucket", key, limit / 60, limit, 1.0, 0.0)))
                    owners.append(subject)
            for kind, (suffix, _, _) in windows.items():
                limit = getattr(limits, kind)
                if limit is not None:
                    checks.append((kind, limit, self._run("spent", f"gw:usd:{subject.key}:{suffix}")))
                    owners.append(subject)
        if checks:
            results = await asyncio.gather(*(awaitable for _, _, awaitable in checks))
            for (kind, limit, _), subject, result in zip(checks, owners, results, strict=True):
                if kind in TOKEN_LIMITS and result > 0:
                    raise OverLimit(
                        f"{subject.key} is over its {kind.replace('_', ' ')} limit of {limit:g}; "
                        f"retry in {result:.0f} s.",
                        retry_after=result,
                    )
                if kind in windows and result >= limit:
                    period = "day" if kind == "usd_per_day" else "month"
                    remaining = windows[kind][1]
                    raise OverLimit(
                        f"{subject.key} has spent its budget of {limit:g} USD for this {period} "
                        f"({result:.2f} USD); it resets in {remaining / 3600:.1f} h.",
                        retry_after=remaining,
                    )
        counted = [s for s in subjects if s.limits.requests_per_minute is not None]
        if not counted:
            return
        waits = await asyncio.gather(
            *(
                self._run("bucket", f"gw:requests_per_minute:{s.key}", rpm / 60, rpm, 1.0, 1.0)
                for s in counted
                if (rpm := s.limits.requests_per_minute) is not None
            )
        )
        refused = [(s, wait) for s, wait in zip(counted, waits, strict=True) if wait > 0]
        if refused:
            taken = [s for s, wait in zip(counted, waits, strict=True) if wait <= 0]
            await asyncio.gather(  # give back what this refused call took
                *(
                    self._run("bucket", f"gw:requests_per_minute:{s.key}", rpm / 60, rpm, ALWAYS, -1.0)
                    for s in taken
                    if (rpm := s.limits.requests_per_minute) is not None
                )
            )
            subject, wait = refused[0]
            raise OverLimit(
                f"{subject.key} is over its limit of {subject.limits.requests_per_minute:g} requests per minute; "
                f"retry in {wait:.0f} s.",
                retry_after=wait,
            )

    async def settle(self, subjects: list[Subject], usage: Usage | None, cost: float | None) -> None:
        """Charge a finished call's real tokens and cost."""
        windows = _windows(dt.datetime.now(dt.UTC))
        for subject in subjects:
            limits = subject.limits
            if usage is not None:
                for kind in TOKEN_LIMITS:
                    limit = getattr(limits, kind)
                    amount = _tokens(kind, usage)
                    if limit is not None and amount:
                        await self._run("bucket", f"gw:{kind}:{subject.key}", limit / 60, limit, ALWAYS, amount)
            if cost:
                for kind, (suffix, _, ttl) in windows.items():
                    if getattr(limits, kind) is not None:
                        await self._run("spend", f"gw:usd:{subject.key}:{suffix}", cost, ttl)
