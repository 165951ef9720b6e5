"""The abuse limits' fixed windows and the in-process counter store (no I/O)."""

from __future__ import annotations

import datetime as dt

from shared.clock import FrozenClock
from shared.window_counters import LocalWindowCounters, Window

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_a_window_knows_its_number_and_the_seconds_left() -> None:
    first = Window.at(START, 300)
    assert first.retry_after == 300
    later = Window.at(START + dt.timedelta(seconds=299.2), 300)
    assert (later.number, later.retry_after) == (first.number, 1)
    assert Window.at(START + dt.timedelta(seconds=300), 300).number == first.number + 1


async def test_local_counters_count_and_forget_after_their_ttl() -> None:
    clock = FrozenClock(START)
    counters = LocalWindowCounters(clock)
    assert await counters.add(["a", "b"], ttl=10) == [1, 1]
    assert await counters.add(["a"], ttl=10) == [2]
    assert await counters.read(["a", "b", "c"]) == [2, 1, 0]
    clock.advance(10)
    assert await counters.read(["a", "b"]) == [0, 0]
    assert await counters.add(["a"], ttl=10) == [1]


async def test_local_counters_cannot_grow_without_bound() -> None:
    clock = FrozenClock(START)
    counters = LocalWindowCounters(clock, max_keys=100)
    for n in range(10_000):  # live keys, none expired: the oldest are dropped
        await counters.add([f"address:{n}"], ttl=300)
        assert len(counters) <= 100
    assert await counters.read(["address:9999"]) == [1]
    assert await counters.read(["address:0"]) == [0]
