"""The audit relay: committed audit rows reach the Redis stream once each, in order, and a Redis
outage loses nothing (a second redis-server, killed and restarted by the test)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from shared.audit import record_audit_core
from shared.clock import SystemClock
from shared.jobs.audit_relay import AuditRelayPayload, relay_audit_events
from shared.jobs.base import JobDeps
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import broker_settings
from tests.support.job_deps import job_deps
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """A redis-server of the test's own on a free port, keeping its data in ``directory``
    (append-only file, fsync on every write) so a restart finds what it acknowledged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "yes",
            "appendfsync": "always",
            "dir": str(self.directory),
        }
        args = [REDIS_SERVER]
        for name, value in options.items():
            args += [f"--{name}", value]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        if await client.ping():
                            return
                    except (OSError, RedisError):  # not listening yet, or still loading
                        pass
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


@pytest.fixture
async def relay_deps(
    database_url: str, upstream_idp: str, keyring: object, redis_server: RedisServer
) -> AsyncIterator[JobDeps]:
    await redis_server.wait_ready()
    stream = f"broker:test-audit:{uuid.uuid4().hex}"
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,  # type: ignore[arg-type]
        redis_url=redis_server.url,
        audit_stream=stream,
    )
    async with job_deps(settings, clock=SystemClock(), redis_url=redis_server.url) as deps:
        yield deps


async def write_event(engine: AsyncEngine, marker: str, n: int) -> None:
    async with engine.begin() as connection:
        await record_audit_core(
            connection,
            action="test.event",
            actor="test",
            subject=marker,
            data={"n": n},
            now=SystemClock().now(),
        )


async def stream_events(redis_url: str, stream: str, marker: str) -> list[dict[str, str]]:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(stream)
    finally:
        await client.aclose()
    return [fields for _id, fields in entries if fields.get("subject") == marker]


async def test_committed_rows_are_published_once_in_order_with_their_fields(
    relay_deps: JobDeps, redis_server: RedisServer
) -> None:
    marker = f"relay-{uuid.uuid4().hex}"
    for n in range(5):
        await write_event(relay_deps.engine, marker, n)

    first = await relay_audit_events(AuditRelayPayload(), relay_deps)
    second = await relay_audit_events(AuditRelayPayload(), relay_deps)

    assert first["outcome"] == "ok" and first["published"] >= 5
    assert second["published"] == 0
    events = await stream_events(redis_server.url, relay_deps.settings.audit_stream, marker)
    assert [json.loads(event["data"])["n"] for event in events] == [0, 1, 2, 3, 4]
    event = events[0]
    assert event["action"] == "test.event" and event["actor"] == "test"
    uuid.UUID(event["event_id"])
    assert event["occurred_at"].endswith("Z")
    assert len({event["event_id"] for event in events}) == 5


async def test_a_row_of_a_transaction_still_open_is_not_skipped_when_a_later_one_commits_first(
    relay_deps: JobDeps, redis_server: RedisServer
) -> None:
    marker = f"relay-{uuid.uuid4().hex}"
    engine = relay_deps.engine
    async with engine.connect() as slow:
        slow_tx = await slow.begin()
        await record_audit_core(
            slow,
            action="test.event",
            actor="test",
            subject=marker,
            data={"n": "slow"},
            now=SystemClock().now(),
        )
        # A later transaction (higher row id) commits while the first is still open.
        await write_event(engine, marker, 1)
        await relay_audit_events(AuditRelayPayload(), relay_deps)
        before = await stream_events(redis_server.url, relay_deps.settings.audit_stream, marker)
        await slow_tx.commit()
    await relay_audit_events(AuditRelayPayload(), relay_deps)
    after = await stream_events(redis_server.url, relay_deps.settings.audit_stream, marker)

    # Publishing the committed row would have moved the cursor past the open one's id.
    assert before == []
    assert [json.loads(event["data"])["n"] for event in after] == ["slow", 1]


async def test_a_redis_outage_loses_nothing_and_duplicates_nothing(
    relay_deps: JobDeps, redis_server: RedisServer
) -> None:
    marker = f"relay-{uuid.uuid4().hex}"
    total = 300
    stop = asyncio.Event()
    outcomes: list[str] = []

    async def relay_loop() -> None:
        while not stop.is_set():
            result = await relay_audit_events(
                AuditRelayPayload(batch_size=20, max_seconds=0.5), relay_deps
            )
            outcomes.append(str(result.get("reason", result["outcome"])))
            await asyncio.sleep(0.01)

    relay = asyncio.create_task(relay_loop())
    try:
        for n in range(total):
            await write_event(relay_deps.engine, marker, n)
            if n == total // 3:
                redis_server.kill()  # mid-stream, while the relay is publishing
            if n == 2 * total // 3:
                redis_server.start()
                await redis_server.wait_ready()
        async with asyncio.timeout(30):
            while True:
                events = await stream_events(
                    redis_server.url, relay_deps.settings.audit_stream, marker
                )
                if len(events) >= total:
                    break
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await relay

    assert "redis_unavailable" in outcomes, "the outage should have been seen by the relay"
    numbers = [json.loads(event["data"])["n"] for event in events]
    assert numbers == list(range(total))
    assert len({event["event_id"] for event in events}) == total


async def test_without_redis_the_relay_publishes_nothing_and_moves_nothing(
    database_url: str, upstream_idp: str, keyring: object
) -> None:
    settings = broker_settings(database_url, upstream_idp, keyring)  # type: ignore[arg-type]
    async with job_deps(settings) as deps:
        result = await relay_audit_events(AuditRelayPayload(), deps)
    assert result == {"outcome": "ok", "published": 0, "reason": "no_redis"}
