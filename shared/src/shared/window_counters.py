"""Fixed-window counters for the abuse limits: in Redis when configured, else in this process.

A counter is named by a key that carries its window's number (``Window.number``: the clock's
time divided by the window length), so a new window starts from zero without anyone deleting
anything, and a test clock that moves to the next window sees fresh counters. Redis also
expires each key (``SET NX EX`` + ``INCR`` in one ``MULTI``) so old windows leave nothing behind;
the in-process store (the embedded default, one broker process) forgets expired keys and holds
at most ``max_keys`` of them, dropping the oldest first, so it cannot grow without bound.

Redis holds only what can be rebuilt (counters that restart at zero lose nothing but a few
minutes of memory). So the counters **fail open**: when Redis does not answer, a read counts
zero and an increment counts nothing, ``abuse_limits.store_unavailable`` is logged, and Redis is
left alone for ``OUTAGE_PAUSE`` seconds before it is asked again (short socket timeouts keep a
hanging Redis from holding requests). An outage of the counter store must not take sign-in down.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.clock import Clock

# Seconds without asking Redis after it failed; and its socket timeouts (a limiter sits in
# front of the token endpoint: it may cost a round trip, never a stall).
OUTAGE_PAUSE = 5.0
SOCKET_TIMEOUT = 0.5
LOCAL_MAX_KEYS = 100_000

log = structlog.get_logger("shared.window_counters")


@dataclass(frozen=True)
class Window:
    """The fixed window ``now`` falls in: its number and the whole seconds until it ends."""

    seconds: int
    number: int
    retry_after: int

    @classmethod
    def at(cls, now: dt.datetime, seconds: int) -> Window:
        timestamp = now.timestamp()
        number = math.floor(timestamp / seconds)
        remaining = (number + 1) * seconds - timestamp
        return cls(seconds=seconds, number=number, retry_after=max(1, math.ceil(remaining)))


class WindowCounters(Protocol):
    """Counters that live ``ttl`` seconds after their first increment."""

    async def read(self, keys: Sequence[str]) -> list[int]:
        """The current counts (0 for a key never incremented, or when the store is down)."""
        ...

    async def add(self, keys: Sequence[str], ttl: int) -> list[int]:
        """Add one to each key and return the new counts (0 each when the store is down)."""
        ...

    async def aclose(self) -> None: ...


class RedisWindowCounters:
    """``SET NX EX`` + ``INCR`` per key in one transaction; the client connects lazily."""

    def __init__(self, redis_url: str, clock: Clock) -> None:
        self._redis: Redis = Redis.from_url(
            redis_url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        self._clock = clock
        self._paused_until: dt.datetime | None = None

    def _paused(self) -> bool:
        return self._paused_until is not None and self._clock.now() < self._paused_until

    def _failed(self, exc: BaseException) -> None:
        self._paused_until = self._clock.now() + dt.timedelta(seconds=OUTAGE_PAUSE)
        # Fail open (see the module docstring): once per pause, not once per request.
        log.warning(
            "abuse_limits.store_unavailable",
            error=type(exc).__name__,
            paused_seconds=OUTAGE_PAUSE,
        )

    async def read(self, keys: Sequence[str]) -> list[int]:
        if self._paused():
            return [0] * len(keys)
        try:
            values = await self._redis.mget(list(keys))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [0] * len(keys)
        return [int(value) if value is not None else 0 for value in values]

    async def add(self, keys: Sequence[str], ttl: int) -> list[int]:
        if self._paused():
            return [0] * len(keys)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    # SET NX EX creates the key with its expiry once; INCR keeps the expiry.
                    # (EXPIRE's NX option would need Redis 7; this works from Redis 2.6.12.)
                    pipe.set(key, 0, ex=ttl, nx=True)
                    pipe.incr(key)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [0] * len(keys)
        return [int(count) for count in results[1::2]]

    async def aclose(self) -> None:
        await self._redis.aclose()


class LocalWindowCounters:
    """A dict of key -> (expiry, count) in this process, at most ``max_keys`` long."""

    def __init__(self, clock: Clock, max_keys: int = LOCAL_MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._counts: dict[str, tuple[float, int]] = {}

    async def read(self, keys: Sequence[str]) -> list[int]:
        now = self._clock.now().timestamp()
        counts = []
        for key in keys:
            expires, count = self._counts.get(key, (0.0, 0))
            counts.append(count if expires > now else 0)
        return counts

    async def add(self, keys: Sequence[str], ttl: int) -> list[int]:
        now = self._clock.now().timestamp()
        counts = []
        for key in keys:
            expires, count = self._counts.get(key, (0.0, 0))
            if expires <= now:
                self._counts.pop(key, None)  # re-inserted last: the newest in the eviction order
                expires, count = now + ttl, 0
            self._counts[key] = (expires, count + 1)
            counts.append(count + 1)
        if len(self._counts) > self._max_keys:
            self._prune(now)
        return counts

    def _prune(self, now: float) -> None:
        """Drop expired keys; if that is not enough, the oldest tenth (insertion order)."""
        self._counts = {key: entry for key, entry in self._counts.items() if entry[0] > now}
        excess = len(self._counts) - self._max_keys
        if excess > 0:
            for key in list(self._counts)[: excess + self._max_keys // 10]:
                del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)

    async def aclose(self) -> None:
        self._counts.clear()


def build_window_counters(
    redis_url: str | None, clock: Clock
) -> RedisWindowCounters | LocalWindowCounters:
    """Shared by every replica through Redis when there is one, else this process's own."""
    return RedisWindowCounters(redis_url, clock) if redis_url else LocalWindowCounters(clock)
