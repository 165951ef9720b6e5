"""Waiting in tests for something another process or task does, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.1
) -> None:
    """Poll ``check`` until it is true; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - another process cannot set an Event
            await asyncio.sleep(interval)
