"""Revoked sessions, published for resource servers that want to refuse tokens before they expire.

Access tokens stay verifiable offline until ``exp`` (15 minutes by default), so a revocation
reaches every resource server within that time by itself. A service that wants to drop a
revoked session's tokens sooner reads the Redis stream ``broker:revocations`` (``XREAD``; the
name is ``BROKER_REVOCATION_STREAM``): one
entry per revoked session, fields ``sid``, ``reason`` and ``revoked_at`` (RFC 3339, UTC). The
stream keeps about the last 100,000 entries.

Entries are published after the revoking transaction commits. Publishing is best effort: when
Redis cannot take an entry the broker logs ``revocation.publish_failed`` and the token simply
lives out its lifetime, as it would for a service that does not subscribe. Without
``BROKER_REDIS_URL`` (the embedded default) nothing is published.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

DEFAULT_STREAM = "broker:revocations"
STREAM_LENGTH = 100_000

log = structlog.get_logger("shared.revocations")


@dataclass(frozen=True)
class Revocation:
    session_id: uuid.UUID
    reason: str
    revoked_at: dt.datetime


class RevocationPublisher(Protocol):
    async def publish(self, revocations: Sequence[Revocation]) -> None: ...

    async def aclose(self) -> None: ...


class RedisRevocations:
    """XADDs each revocation to a capped stream; the client connects lazily (no I/O here)."""

    def __init__(self, redis_url: str, stream: str = DEFAULT_STREAM) -> None:
        self.stream = stream
        self._redis: Redis = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    async def publish(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for revocation in revocations:
                    pipe.xadd(
                        self.stream,
                        {
                            "sid": str(revocation.session_id),
                            "reason": revocation.reason,
                            "revoked_at": revocation.revoked_at.astimezone(dt.UTC).isoformat(),
                        },
                        maxlen=STREAM_LENGTH,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning(
                "revocation.publish_failed", count=len(revocations), error=type(exc).__name__
            )

    async def aclose(self) -> None:
        await self._redis.aclose()


class NoRevocationStream:
    """The embedded default: no Redis, nothing to publish to."""

    async def publish(self, revocations: Sequence[Revocation]) -> None:
        return None

    async def aclose(self) -> None:
        return None


def build_revocation_publisher(
    redis_url: str | None, stream: str = DEFAULT_STREAM
) -> RedisRevocations | NoRevocationStream:
    return RedisRevocations(redis_url, stream) if redis_url else NoRevocationStream()
