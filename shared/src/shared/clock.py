"""Injected time: every expiry, rotation and grace window asks a Clock, never the OS directly."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


def rfc3339(value: dt.datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a ``Z``: ``2026-12-01T21:03:04.123456Z``."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Clock(Protocol):
    """Something that tells the current time as an aware UTC datetime."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FrozenClock:
    """A clock that only moves when told to; for tests of expiry without sleeping."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)
