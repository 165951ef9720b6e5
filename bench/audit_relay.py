"""Audit relay throughput: M ``audit_actions`` rows, then the relay job body
(``shared.jobs.audit_relay.relay_audit_events``, default batches of 500) run in this process
until every row is in a Redis stream of this run's, which is deleted afterwards.

The rows are what the refresh grant writes most (``refresh_token.rotated``), inserted in
transactions of 5,000; the table is emptied first so the relay publishes exactly these.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass

from shared.audit import audit_values
from shared.db.tables import AUDIT_TABLE
from shared.jobs.audit_relay import AuditRelayPayload, relay_audit_events
from shared.process_resources import ProcessResources
from shared.settings import make_settings
from sqlalchemy import delete, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

INSERT_BATCH = 5000
STALL_SLEEP = 0.1


@dataclass(frozen=True)
class RelayRun:
    events: int  # rows inserted
    published: int  # what the relay reported
    in_stream: int  # XLEN of the stream afterwards
    seconds: float  # wall time of the relay loop
    cpu_seconds: float  # this process's CPU time in that loop
    runs: int  # relay job runs it took

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds else float("nan")

    @property
    def complete(self) -> bool:
        return self.published == self.events == self.in_stream


async def _insert_rows(engine: AsyncEngine, count: int) -> None:
    now = dt.datetime.now(dt.UTC)
    async with engine.begin() as connection:
        await connection.execute(delete(AUDIT_TABLE))
    for start in range(0, count, INSERT_BATCH):
        rows = [
            audit_values(
                action="refresh_token.rotated",
                actor="client:bench",
                subject=str(uuid.uuid4()),
                client_id="bench",
                ip="127.0.0.1",
                data={"sid": str(uuid.uuid4())},
                now=now,
            )
            for _ in range(min(INSERT_BATCH, count - start))
        ]
        async with engine.begin() as connection:
            await connection.execute(insert(AUDIT_TABLE), rows)
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE audit_actions"))


async def measure_audit_relay(
    database_url: str, redis_url: str, count: int, *, stream: str, time_limit: float
) -> RelayRun:
    """Insert ``count`` rows, relay them all to ``stream`` (or for ``time_limit`` seconds),
    delete the stream."""
    settings = make_settings(database_url=database_url, redis_url=redis_url, audit_stream=stream)
    async with ProcessResources.opened(settings, pool_size=2) as resources:
        assert resources.redis is not None
        return await _relay_all(resources, count, stream, time_limit)


async def _relay_all(
    resources: ProcessResources, count: int, stream: str, time_limit: float
) -> RelayRun:
    redis, deps = resources.redis, resources.job_deps()
    assert redis is not None
    try:
        await _insert_rows(resources.engine, count)
        payload = AuditRelayPayload()
        published = runs = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = time.monotonic() + time_limit
        while published < count and time.monotonic() < deadline:
            result = await relay_audit_events(payload, deps)
            runs += 1
            if not result.get("published"):
                # Nothing visible yet: a transaction older than the rows (anywhere on the
                # server) holds pg_snapshot_xmin back, or Redis is unavailable.
                await asyncio.sleep(STALL_SLEEP)
            published += int(result.get("published") or 0)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        in_stream = int(await redis.xlen(stream))
        return RelayRun(count, published, in_stream, seconds, cpu_seconds, runs)
    finally:
        await redis.delete(stream)
