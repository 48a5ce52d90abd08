"""Rate limits and budgets, checked before a call and settled with its real usage after.

Per minute limits are token buckets (capacity = the per-minute figure, refilled
continuously), so there is no window edge where twice the limit passes:

* requests: a call takes one request from the bucket, or is refused;
* tokens: a call is admitted while the bucket is not empty, and its real tokens are taken
  afterwards (the bucket may go into debt: the next calls wait until it refills).

Budgets are USD spent per UTC day and month (fixed calendar windows), checked before a
call and increased by its cost after it.

State lives in Redis when ``redis_url`` is set, so every replica shares one bucket:
admission is one Lua script (every check, then the request takes, atomically: one round
trip per call) and so is settlement; the clock is Redis's own ``TIME``. Without Redis —
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
from typing import Any

from otel_ingest.gateway.config import Limits
from otel_ingest.gateway.errors import OverLimit
from otel_ingest.gateway.usage import Usage

log = logging.getLogger("otel_ingest.gateway.limits")

REDIS_TIMEOUT_SECONDS = 0.5
ALWAYS = -1e18  # a bucket's ``need`` that is always met: settling charges even into debt
FALLBACK_LOG_EVERY_SECONDS = 30.0

# Admission in one round trip: every check of every subject, then — only if all pass —
# one request taken from each request bucket. KEYS[i] pairs with ARGV[3i-2..3i]:
# kind ('t' token bucket not empty, 'b' budget not spent, 'r' take one request), a, b
# (rate and capacity for buckets, the limit for budgets). Returns {i, value} for the first
# refusal (seconds to wait, or USD spent) or {0, '0'}.
_ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
for i = 1, #KEYS do
  local kind = ARGV[3 * i - 2]
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  if kind == 'b' then
    local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
    if spent >= a then return {i, tostring(spent)} end
  else
    local state = redis.call('HMGET', KEYS[i], 'level', 'at')
    local level = tonumber(state[1])
    local at = tonumber(state[2])
    if level == nil then level = b; at = now end
    level = math.min(b, level + math.max(0, now - at) * a)
    if level < 1 then return {i, tostring((1 - level) / a)} end
    levels[i] = level
  end
end
for i = 1, #KEYS do
  if ARGV[3 * i - 2] == 'r' then
    local a = tonumber(ARGV[3 * i - 1])
    local b = tonumber(ARGV[3 * i])
    local level = levels[i] - 1
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[i], math.ceil((b - level) / a) + 60)
  end
end
return {0, '0'}
"""

# Settlement in one round trip: KEYS[i] pairs with ARGV[4i-3..4i]: 'k' (take amount from a
# token bucket: rate, capacity, amount) or 's' (add amount USD to a budget: amount, ttl).
_SETTLE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local kind = ARGV[4 * i - 3]
  if kind == 's' then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[4 * i - 2])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 * i - 1]))
  else
    local rate = tonumber(ARGV[4 * i - 2])
    local capacity = tonumber(ARGV[4 * i - 1])
    local amount = tonumber(ARGV[4 * i])
    local state = redis.call('HMGET', KEYS[i], 'level', 'at')
    local level = tonumber(state[1])
    local at = tonumber(state[2])
    if level == nil then level = capacity; at = now end
    level = math.min(capacity, level + math.max(0, now - at) * rate) - amount
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[i], math.ceil((capacity - level) / rate) + 60)
  end
end
return 0
"""


@dataclass(frozen=True)
class Check:
    """One admission check: ``t`` a token bucket must not be empty, ``b`` a budget must not
    be spent (``a`` = the limit), ``r`` take one request (``a``, ``b`` = rate, capacity)."""

    kind: str
    key: str
    a: float
    b: float = 0.0
    subject: Subject | None = None
    limit_name: str = ""


@dataclass(frozen=True)
class Charge:
    """``k``: take ``amount`` tokens from a bucket (rate, capacity); ``s``: add ``amount`` USD
    to a budget kept ``ttl`` seconds."""

    kind: str
    key: str
    amount: float
    rate: float = 0.0
    capacity: float = 0.0
    ttl: int = 0


class MemoryStore:
    """This replica's own state (and each replica's fallback while Redis is unreachable)."""

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
        self.admit_script: Any = self.client.register_script(_ADMIT_SCRIPT)
        self.settle_script: Any = self.client.register_script(_SETTLE_SCRIPT)

    async def admit(self, checks: list[Check]) -> tuple[int, float]:
        """(index of the first refusing check, its value) or (-1, 0), in one round trip."""
        args: list[str] = []
        for check in checks:
            args += [check.kind, repr(check.a), repr(check.b)]
        index, value = await self.admit_script(keys=[c.key for c in checks], args=args)
        return int(index) - 1, float(value)

    async def settle(self, charges: list[Charge]) -> None:
        args: list[str] = []
        for charge in charges:
            if charge.kind == "s":
                args += ["s", repr(charge.amount), str(charge.ttl), "0"]
            else:
                args += ["k", repr(charge.rate), repr(charge.capacity), repr(charge.amount)]
        await self.settle_script(keys=[c.key for c in charges], args=args)

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

    async def admit(self, subjects: list[Subject]) -> None:
        """Raise OverLimit unless every subject may make one more call now.

        Every token bucket and budget of every subject is checked, then one request is taken
        from each request bucket — only if all checks pass. With Redis this is one script:
        one round trip, atomic across replicas."""
        windows = _windows(dt.datetime.now(dt.UTC))
        checks: list[Check] = []
        for subject in subjects:
            limits = subject.limits
            for kind in TOKEN_LIMITS:
                limit = getattr(limits, kind)
                if limit is not None:
                    checks.append(Check("t", f"gw:{kind}:{subject.key}", limit / 60, limit, subject, kind))
            for kind, (suffix, _, _) in windows.items():
                limit = getattr(limits, kind)
                if limit is not None:
                    checks.append(Check("b", f"gw:usd:{subject.key}:{suffix}", limit, 0.0, subject, kind))
        for subject in subjects:
            rpm = subject.limits.requests_per_minute
            if rpm is not None:
                key = f"gw:requests_per_minute:{subject.key}"
                checks.append(Check("r", key, rpm / 60, rpm, subject, "requests_per_minute"))
        if not checks:
            return
        index, value = -1, 0.0
        done = False
        if self.shared is not None:
            try:
                index, value = await asyncio.wait_for(self.shared.admit(checks), REDIS_TIMEOUT_SECONDS * 2)
                done = True
            except (OSError, TimeoutError, ConnectionError, Exception) as error:  # redis errors vary by version
                self._fallback(error)
        if not done:
            index, value = await self._admit_locally(checks)
        if index >= 0:
            raise self._refusal(checks[index], value, windows)

    async def _admit_locally(self, checks: list[Check]) -> tuple[int, float]:
        """The admission script's logic on this replica's state, each limit divided by ``replicas``."""
        n = self.replicas
        for index, check in enumerate(checks):
            if check.kind == "b":
                spent = await self.local.spent(check.key) * n
                if spent >= check.a:
                    return index, spent
            else:
                wait = await self.local.bucket(check.key, check.a / n, check.b / n, 1.0, 0.0)
                if wait > 0:
                    return index, wait
        for check in checks:
            if check.kind == "r":
                await self.local.bucket(check.key, check.a / n, check.b / n, ALWAYS, 1.0)
        return -1, 0.0

    @staticmethod
    def _refusal(check: Check, value: float, windows: dict[str, tuple[str, float, int]]) -> OverLimit:
        subject = check.subject
        assert subject is not None
        limit = getattr(subject.limits, check.limit_name)
        if check.kind == "b":
            period = "day" if check.limit_name == "usd_per_day" else "month"
            remaining = windows[check.limit_name][1]
            return OverLimit(
                f"{subject.key} has spent its budget of {limit:g} USD for this {period} "
                f"({value:.2f} USD); it resets in {remaining / 3600:.1f} h.",
                retry_after=remaining,
            )
        if check.kind == "r":
            return OverLimit(
                f"{subject.key} is over its limit of {limit:g} requests per minute; retry in {value:.0f} s.",
                retry_after=value,
            )
        return OverLimit(
            f"{subject.key} is over its {check.limit_name.replace('_', ' ')} limit of {limit:g}; "
            f"retry in {value:.0f} s.",
            retry_after=value,
        )

    async def settle(self, subjects: list[Subject], usage: Usage | None, cost: float | None) -> None:
        """Charge a finished call's real tokens and cost (one script with Redis)."""
        windows = _windows(dt.datetime.now(dt.UTC))
        charges: list[Charge] = []
        for subject in subjects:
            limits = subject.limits
            if usage is not None:
                for kind in TOKEN_LIMITS:
                    limit = getattr(limits, kind)
                    amount = _tokens(kind, usage)
                    if limit is not None and amount:
                        charges.append(Charge("k", f"gw:{kind}:{subject.key}", amount, limit / 60, limit))
            if cost:
                for kind, (suffix, _, ttl) in windows.items():
                    if getattr(limits, kind) is not None:
                        charges.append(Charge("s", f"gw:usd:{subject.key}:{suffix}", cost, ttl=ttl))
        if not charges:
            return
        if self.shared is not None:
            try:
                await asyncio.wait_for(self.shared.settle(charges), REDIS_TIMEOUT_SECONDS * 2)
                return
            except (OSError, TimeoutError, ConnectionError, Exception) as error:  # redis errors vary by version
                self._fallback(error)
        n = self.replicas
        for charge in charges:
            if charge.kind == "s":
                await self.local.spend(charge.key, charge.amount, charge.ttl)
            else:
                await self.local.bucket(charge.key, charge.rate / n, charge.capacity / n, ALWAYS, charge.amount)
