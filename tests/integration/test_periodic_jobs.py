"""The periodic-job timer: one job per interval however many workers run it, and the embedded
default (no Redis) running the same jobs inside the broker."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import httpx2
import pytest
from redis.asyncio import Redis
from shared.clock import FrozenClock, SystemClock
from shared.crypto.keyring import Keyring
from shared.jobs.base import JobName
from shared.jobs.queue import ArqJobQueue
from shared.jobs.schedule import PeriodicScheduler, periodic_jobs
from shared.runtime import build_runtime

from tests.conftest import broker_settings
from tests.support.links import create_link, link_row, mint_grants
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def arq_queue(redis_url: str) -> AsyncIterator[ArqJobQueue]:
    name = f"broker:test-jobs:{uuid.uuid4().hex}"
    queue = ArqJobQueue(redis_url, queue_name=name)
    yield queue
    await queue.aclose()
    redis: Redis = Redis.from_url(redis_url)
    try:
        keys = [name, *[key async for key in redis.scan_iter(match=f"arq:*:periodic:{name}:*")]]
        await redis.delete(*keys)
    finally:
        await redis.aclose()


def test_the_audit_relay_is_scheduled_only_where_there_is_redis(
    upstream_idp: str, keyring: Keyring
) -> None:
    embedded = broker_settings("sqlite+aiosqlite://", upstream_idp, keyring)
    with_redis = broker_settings(
        "sqlite+aiosqlite://", upstream_idp, keyring, redis_url="redis://127.0.0.1:6379/0"
    )
    names = {job.name for job in periodic_jobs(embedded)}
    assert JobName.RELAY_AUDIT_EVENTS not in names
    assert {JobName.SCAN_UPSTREAM_TOKENS, JobName.SCAN_PROFILES, JobName.HOUSEKEEPING} <= names
    assert JobName.RELAY_AUDIT_EVENTS in {job.name for job in periodic_jobs(with_redis)}


async def test_two_workers_timers_queue_each_tick_once(
    arq_queue: ArqJobQueue, upstream_idp: str, keyring: Keyring, redis_url: str
) -> None:
    settings = broker_settings("sqlite+aiosqlite://", upstream_idp, keyring, redis_url=redis_url)
    jobs = periodic_jobs(settings)
    clock = FrozenClock(dt.datetime(2031, 5, 1, 12, 0, 0, 100_000, tzinfo=dt.UTC))
    first, second = (
        PeriodicScheduler(arq_queue, jobs, clock, namespace=arq_queue.queue_name) for _ in range(2)
    )

    queued = [*await first.tick(), *await second.tick()]
    again = [*await first.tick(), *await second.tick()]
    clock.advance(1)
    next_second = [*await first.tick(), *await second.tick()]

    assert len(queued) == len(jobs) and len(set(queued)) == len(queued)
    assert again == []
    # One second later only the relay (every second) is due again, and queued once.
    tick = int(clock.now().timestamp())
    assert next_second == [f"periodic:{arq_queue.queue_name}:relay_audit_events:{tick}"]


async def test_the_embedded_broker_refreshes_due_upstream_tokens_by_itself(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> None:
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        periodic_jobs=True,
        upstream_refresh_scan_interval=0.2,
    )
    runtime = build_runtime(settings, clock=SystemClock())
    subject = f"embedded-{uuid.uuid4().hex[:10]}"
    (grant,) = await mint_grants(idp, {"sub": subject})
    link = await create_link(
        runtime.engine,
        keyring,
        grant,
        subject=subject,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
    )
    await runtime.start()
    try:

        async def refreshed() -> bool:
            return (await link_row(runtime.engine, link)).last_refreshed_at is not None

        await eventually(refreshed, within=15)
    finally:
        await runtime.stop()
