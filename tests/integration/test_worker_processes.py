"""Real ``sync-worker`` processes on one Redis queue and the run's PostgreSQL: 200 expiring links
refreshed exactly once by two workers; a worker killed in the middle of a refresh leaves nothing
half-written and the job is done by the next worker; health and metrics over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

import httpx2
import pytest
from redis.asyncio import Redis
from shared.crypto.keyring import Keyring
from shared.db.database import create_engine
from shared.db.tables import AUDIT_TABLE, LINKS
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.links import Link, create_link, link_row, mint_grants, stored_tokens
from tests.support.processes import free_port
from tests.support.waiting import eventually
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def queue_name(redis_url: str) -> AsyncIterator[str]:
    name = f"broker:test-jobs:{uuid.uuid4().hex}"
    yield name
    redis: Redis = Redis.from_url(redis_url)
    try:
        # This queue's own keys only (its periodic ticks carry its name; refresh jobs keep
        # no result): other runs may share this Redis.
        keys = [name, *[key async for key in redis.scan_iter(match=f"arq:*{name}*")]]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def worker_env(
    tmp_path: Path, database_url: str, redis_url: str, upstream_idp: str, keyring: Keyring
) -> AsyncIterator[dict[str, str]]:
    config = tmp_path / "broker.yaml"
    config.write_text(
        "providers:\n"
        "  - id: corp\n"
        "    type: oidc\n"
        f"    issuer: {upstream_idp}\n"
        "    client_id: broker\n"
        "    client_secret: broker-secret\n"
        "    scopes: [openid, email, profile, offline_access]\n"
        "    refresh_concurrency: 8\n"
        "clients:\n"
        "  - id: web\n"
        "    redirect_uris: [http://127.0.0.1:3000/callback]\n",
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("BROKER_")}
    env.update(
        BROKER_CONFIG=str(config),
        BROKER_DATABASE_URL=database_url,
        BROKER_REDIS_URL=redis_url,
        BROKER_ENCRYPTION_KEYS=keyring.serialize(),
        BROKER_VAR_DIR=str(tmp_path / "var"),
        BROKER_DB_POOL_SIZE="4",
        BROKER_UPSTREAM_REFRESH_SCAN_INTERVAL="0.5",
        BROKER_LOG_FORMAT="json",
        # The workers' audit relay publishes this run's audit rows: to a stream of this test's.
        BROKER_AUDIT_STREAM=f"broker:test-audit:{uuid.uuid4().hex}",
    )
    yield env
    redis: Redis = Redis.from_url(redis_url)
    try:
        await redis.delete(env["BROKER_AUDIT_STREAM"])
    finally:
        await redis.aclose()


def worker(
    env: dict[str, str], queue: str, log_path: Path, *args: str
) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    return running_worker(["--queue", queue, *args], env, log_path)


async def refreshed_count(engine: AsyncEngine, links: list[Link]) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    select(func.count())
                    .select_from(LINKS)
                    .where(
                        LINKS.c.id.in_([link.token_id for link in links]),
                        LINKS.c.last_refreshed_at.is_not(None),
                    )
                )
            ).scalar_one()
        )


def all_refreshed(engine: AsyncEngine, links: list[Link]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await refreshed_count(engine, links) == len(links)

    return check


async def seed_links(
    idp: httpx2.AsyncClient, engine: AsyncEngine, keyring: Keyring, count: int
) -> list[Link]:
    run = uuid.uuid4().hex[:8]
    subjects = [f"bulk-{run}-{n}" for n in range(count)]
    links = []
    for subject in subjects:
        (grant,) = await mint_grants(idp, {"sub": subject})
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
        links.append(
            await create_link(engine, keyring, grant, subject=subject, expires_at=expires_at)
        )
    return links


async def test_two_workers_refresh_200_expiring_tokens_exactly_once(
    idp: httpx2.AsyncClient,
    engine: AsyncEngine,
    keyring: Keyring,
    worker_env: dict[str, str],
    queue_name: str,
    tmp_path: Path,
) -> None:
    links = await seed_links(idp, engine, keyring, 200)
    # A little upstream latency, so the two workers' jobs overlap in time.
    await idp.post("/_control/refresh_faults", json={"mode": "slow", "seconds": 0.02, "count": -1})

    async with AsyncExitStack() as stack:
        debug_env = {**worker_env, "BROKER_LOG_LEVEL": "DEBUG"}
        for n in (1, 2):
            await stack.enter_async_context(
                worker(debug_env, queue_name, tmp_path / f"worker{n}.log", "--http-port", "-1")
            )
        await eventually(all_refreshed(engine, links), within=90)
        await asyncio.sleep(1.0)  # any duplicate refresh would land now

    log = (await idp.get("/_control/refresh_log")).json()
    counts = log["counts"]
    assert all(counts.get(link.refresh_token) == 1 for link in links), [
        counts.get(link.refresh_token) for link in links if counts.get(link.refresh_token) != 1
    ]
    async with engine.connect() as connection:
        audits = (
            await connection.execute(
                select(func.count())
                .select_from(AUDIT_TABLE)
                .where(
                    AUDIT_TABLE.c.action == "upstream_token.refreshed",
                    AUDIT_TABLE.c.subject.in_([str(link.user_id) for link in links]),
                )
            )
        ).scalar_one()
    assert audits == len(links)
    logs = [(tmp_path / f"worker{n}.log").read_text() for n in (1, 2)]
    assert all("refresh_upstream_token" in text for text in logs), "both workers took jobs"
    # docs/security.md "No secrets in logs": no upstream token, old or new, appears in the workers'
    # logs.
    secrets = {link.refresh_token for link in links} | {link.access_token for link in links}
    for link in links[:20]:
        secrets.update(t for t in stored_tokens(await link_row(engine, link), keyring) if t)
    assert not [secret for secret in secrets for text in logs if secret in text]


async def test_a_worker_killed_mid_refresh_leaves_the_link_untouched_and_the_next_one_does_it(
    idp: httpx2.AsyncClient,
    engine: AsyncEngine,
    keyring: Keyring,
    worker_env: dict[str, str],
    queue_name: str,
    tmp_path: Path,
) -> None:
    (link,) = await seed_links(idp, engine, keyring, 1)
    before = await link_row(engine, link)
    await idp.post("/_control/refresh_faults", json={"mode": "hang", "seconds": 60})

    async with worker(
        worker_env, queue_name, tmp_path / "first.log", "--http-port", "-1", "--job-timeout", "5"
    ) as first:

        async def upstream_was_asked() -> bool:
            counts = (await idp.get("/_control/refresh_log")).json()["counts"]
            return bool(counts.get(link.refresh_token))

        await eventually(upstream_was_asked, within=30)
        first.send_signal(signal.SIGKILL)  # in the middle of the upstream call
        await first.wait()

    after_kill = await link_row(engine, link)
    assert after_kill._mapping == before._mapping, "a killed refresh changes nothing"
    await idp.post("/_control/refresh_faults", json={"mode": "none"})

    async with worker(
        worker_env, queue_name, tmp_path / "second.log", "--http-port", "-1", "--job-timeout", "5"
    ):
        # arq runs the dead worker's job again once its in-progress mark expires (5 + 10 s).
        await eventually(all_refreshed(engine, [link]), within=45)
    row = await link_row(engine, link)
    assert row.state == "ok" and row.refresh_token_enc != before.refresh_token_enc
    counts = (await idp.get("/_control/refresh_log")).json()["counts"]
    assert counts[link.refresh_token] == 2  # the killed attempt and the one that worked


async def test_worker_serves_health_readiness_and_metrics(
    idp: httpx2.AsyncClient,
    engine: AsyncEngine,
    keyring: Keyring,
    worker_env: dict[str, str],
    queue_name: str,
    tmp_path: Path,
) -> None:
    links = await seed_links(idp, engine, keyring, 3)
    port = free_port()
    async with (
        worker(worker_env, queue_name, tmp_path / "w.log", "--http-port", str(port)),
        httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):

        async def alive() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx2.TransportError:
                return False

        await eventually(alive, within=30)
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "redis": "ok"}
        await eventually(all_refreshed(engine, links), within=30)
        metrics = (await http.get("/metrics")).text
    assert 'sync_worker_jobs_total{job="refresh_upstream_token",outcome="ok"}' in metrics
    assert 'sync_worker_upstream_refresh_seconds_count{provider="corp"}' in metrics
    assert "sync_worker_queue_depth " in metrics


async def test_workers_in_one_network_namespace_each_take_a_free_port_and_say_which(
    idp: httpx2.AsyncClient,
    engine: AsyncEngine,
    worker_env: dict[str, str],
    queue_name: str,
    tmp_path: Path,
) -> None:
    """What ``docker compose up --scale sync-worker=3`` runs: no two collide on a port."""
    files = [tmp_path / f"port{n}" for n in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        for n, port_file in enumerate(files):
            await stack.enter_async_context(
                worker(
                    worker_env,
                    queue_name,
                    tmp_path / f"w{n}.log",
                    "--http-port",
                    "0",
                    "--http-port-file",
                    str(port_file),
                )
            )

        async def both_listening() -> bool:
            return all(port_file.exists() for port_file in files)

        await eventually(both_listening, within=30)
        ports = [int(port_file.read_text()) for port_file in files]
        assert len(set(ports)) == 2 and all(port > 0 for port in ports)
        async with httpx2.AsyncClient() as http:
            for port in ports:
                ready = await http.get(f"http://127.0.0.1:{port}/readyz")
                assert ready.status_code == 200, ready.text


async def test_a_worker_outlives_a_redis_outage_and_works_again_when_redis_is_back(
    worker_env: dict[str, str], queue_name: str, tmp_path: Path
) -> None:
    """Redis stopped under a running worker (make soak found every worker exiting): the
    process waits and starts again instead of exiting into the orchestrator's back-off."""
    port = free_port()
    redis_command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    redis_command += ["--save", "", "--appendonly", "no"]
    own_redis = await asyncio.create_subprocess_exec(
        *redis_command, stdout=asyncio.subprocess.DEVNULL
    )
    env = {**worker_env, "BROKER_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    port_file = tmp_path / "port"
    # A fixed port, as in Kubernetes: the next attempt must find it released.
    http_port = str(free_port())
    try:
        async with worker(
            env,
            queue_name,
            tmp_path / "w.log",
            "--http-port",
            http_port,
            "--http-port-file",
            str(port_file),
        ) as process:
            await eventually(lambda: _ready(port_file), within=30)
            own_redis.terminate()
            await own_redis.wait()
            port_file.unlink()
            await asyncio.sleep(4)  # longer than arq's own reconnection attempts at startup
            assert process.returncode is None, (tmp_path / "w.log").read_text()[-2000:]
            own_redis = await asyncio.create_subprocess_exec(
                *redis_command, stdout=asyncio.subprocess.DEVNULL
            )
            await eventually(lambda: _ready(port_file), within=40)
            assert process.returncode is None
        assert "worker.redis_unavailable" in (tmp_path / "w.log").read_text()
    finally:
        if own_redis.returncode is None:
            own_redis.terminate()
            await own_redis.wait()


def _written_port(port_file: Path) -> str | None:
    return port_file.read_text().strip() if port_file.exists() else None


async def _ready(port_file: Path) -> bool:
    """The worker wrote its port and answers ready there (Redis reachable)."""
    port = _written_port(port_file)
    if not port:
        return False
    try:
        async with httpx2.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx2.TransportError:
        return False
