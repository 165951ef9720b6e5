"""What every job shares: the job names, the payload base class, the result type, the
dependencies a body may use, and the ``JobQueue`` interface it enqueues follow-up jobs through.

The bottom of ``shared.jobs``: the job modules import these from here, ``registry`` puts their
bodies in one table, and ``queue`` implements ``JobQueue`` (arq or in-process) over that table.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import httpx2
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import Clock
from shared.jobs.provider_slots import ProviderSlots
from shared.providers.base import Provider
from shared.revocations import NoRevocationStream, RevocationPublisher
from shared.settings import Settings
from shared.signing_keys import KeyStore

__all__ = [
    "JobDeps",
    "JobName",
    "JobPayload",
    "JobQueue",
    "JobResult",
    "QueueUnavailableError",
]


class JobName(StrEnum):
    """The registered jobs; the value is the arq function name."""

    NOOP = "noop"
    SCAN_UPSTREAM_TOKENS = "scan_upstream_tokens"
    REFRESH_UPSTREAM_TOKEN = "refresh_upstream_token"
    RELAY_AUDIT_EVENTS = "relay_audit_events"
    ROLL_UP_AUDIT_EVENTS = "roll_up_audit_events"
    SNAPSHOT_STATS = "snapshot_stats"
    SCAN_PROFILES = "scan_profiles"
    SYNC_PROFILE = "sync_profile"
    HOUSEKEEPING = "housekeeping"
    DELIVER_BACKCHANNEL_LOGOUTS = "deliver_backchannel_logouts"
    MAINTAIN_AUDIT_LOG = "maintain_audit_log"


JobResult = dict[str, Any]
"""What a job body returns: a JSON-able summary (stored by arq as the job's result)."""


class JobPayload(BaseModel):
    """Base of every payload: immutable, no unknown fields, JSON round-trippable."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class QueueUnavailableError(Exception):
    """The queue's backend (Redis) could not take the job; the caller decides whether to retry."""


class JobQueue(Protocol):
    """Where the broker puts work; returns the job id, or None if that id is already pending."""

    async def enqueue(
        self, name: JobName, payload: JobPayload, *, job_id: str | None = None
    ) -> str | None: ...


@dataclass(frozen=True)
class JobDeps:
    """What a job body may use, built once per process (no I/O at construction).

    ``queue`` is where a job puts follow-up jobs (a scan enqueues one job per token); ``redis``
    is the client the audit relay publishes with (None in the embedded default); ``slots``
    limits concurrent upstream calls per provider; ``rng`` draws the retry jitter; ``keys``
    holds the broker's signing keys for the jobs that sign (None: such a job does nothing).
    """

    settings: Settings
    engine: AsyncEngine
    http: httpx2.AsyncClient
    clock: Clock
    providers: Mapping[str, Provider] = field(default_factory=dict)
    queue: JobQueue | None = None
    redis: Redis | None = None
    revocations: RevocationPublisher = field(default_factory=NoRevocationStream)
    slots: ProviderSlots = field(default_factory=ProviderSlots)
    rng: random.Random = field(default_factory=random.SystemRandom)
    keys: KeyStore | None = None
