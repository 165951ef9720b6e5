"""Removing a test's own arq queue from the shared Redis, with everything arq kept for it."""

from __future__ import annotations

from redis.asyncio import Redis


async def drop_queue(redis_url: str, queue_name: str) -> None:
    """Delete ``queue_name``, its health-check key and its jobs' keys and results."""
    redis: Redis = Redis.from_url(redis_url)
    try:
        keys = [queue_name, f"{queue_name}:health-check"]
        keys += [key async for key in redis.scan_iter(match=f"arq:*:{queue_name}:*")]
        await redis.delete(*keys)
    finally:
        await redis.aclose()
