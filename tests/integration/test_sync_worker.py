"""The sync worker: a real ``sync-worker`` process runs jobs enqueued through Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.jobs.base import JobName, JobPayload
from shared.jobs.noop import NoopPayload
from shared.jobs.queue import ArqJobQueue, InProcessJobQueue
from shared.jobs.upstream_refresh import UpstreamRefreshPayload

from tests.support.arq_queues import drop_queue
from tests.support.job_deps import job_deps
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

STARTUP_AND_JOB_SECONDS = 10.0


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own: runs and tests never see each other's jobs."""
    return f"broker:test-jobs:{uuid.uuid4().hex}"


@pytest.fixture
def worker_env(tmp_path: Path) -> dict[str, str]:
    """The worker's environment: the inherited one without any BROKER_* variable, plus ours."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BROKER_")}
    env.update(
        BROKER_ENCRYPTION_KEYS=Keyring.generate().serialize(),
        BROKER_VAR_DIR=str(tmp_path / "var"),
        BROKER_LOG_FORMAT="console",
        BROKER_PERIODIC_JOBS="0",
    )
    return env


@pytest.fixture
async def arq_queue(redis_url: str, queue_name: str) -> AsyncIterator[ArqJobQueue]:
    queue = ArqJobQueue(redis_url, queue_name=queue_name)
    yield queue
    await queue.aclose()
    await drop_queue(redis_url, queue_name)


def read_log(path: Path) -> str:
    return path.read_text(errors="replace")


async def run_worker_to_exit(
    args: list[str], env: dict[str, str], log_path: Path
) -> tuple[int, str]:
    async with running_worker(args, env, log_path) as process:
        code = await asyncio.wait_for(process.wait(), STARTUP_AND_JOB_SECONDS)
    return code, read_log(log_path)


def job_id_in(queue_name: str) -> str:
    """A job id the ``arq_queue`` fixture cleans up after the test."""
    return f"{queue_name}:{uuid.uuid4().hex}"


def assert_noop_result(result: object) -> None:
    assert isinstance(result, dict)
    assert result["ok"] is True
    ran_at = dt.datetime.fromisoformat(result["at"])
    assert ran_at.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - ran_at) < dt.timedelta(minutes=1)


async def test_worker_runs_a_noop_job_enqueued_through_redis(
    redis_url: str,
    queue_name: str,
    arq_queue: ArqJobQueue,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {**worker_env, "BROKER_REDIS_URL": redis_url}
    log_path = tmp_path / "worker.log"
    async with running_worker(["--queue", queue_name], env, log_path) as process:
        job_id = await arq_queue.enqueue(JobName.NOOP, NoopPayload(), job_id=job_id_in(queue_name))
        assert job_id is not None
        try:
            result = await arq_queue.job(job_id).result(
                timeout=STARTUP_AND_JOB_SECONDS, poll_delay=0.1
            )
        except TimeoutError:
            pytest.fail(f"no result from the worker; its log:\n{read_log(log_path)}")
        assert process.returncode is None, "the worker should keep running between jobs"
    assert_noop_result(result)


async def test_burst_worker_processes_queued_jobs_then_exits(
    redis_url: str,
    queue_name: str,
    arq_queue: ArqJobQueue,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    job_ids = [
        await arq_queue.enqueue(JobName.NOOP, NoopPayload(), job_id=job_id_in(queue_name))
        for _ in range(3)
    ]
    env = {**worker_env, "BROKER_REDIS_URL": redis_url}

    code, log = await run_worker_to_exit(
        ["--queue", queue_name, "--burst"], env, tmp_path / "worker.log"
    )

    assert code == 0, log
    for job_id in job_ids:
        assert job_id is not None
        assert_noop_result(await arq_queue.job(job_id).result(timeout=1))


async def test_a_pending_job_id_is_not_enqueued_twice(
    arq_queue: ArqJobQueue, queue_name: str
) -> None:
    job_id = job_id_in(queue_name)
    assert await arq_queue.enqueue(JobName.NOOP, NoopPayload(), job_id=job_id) == job_id
    assert await arq_queue.enqueue(JobName.NOOP, NoopPayload(), job_id=job_id) is None


async def test_worker_refuses_to_start_without_redis(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    code, log = await run_worker_to_exit([], worker_env, tmp_path / "worker.log")

    assert code == 2
    assert "BROKER_REDIS_URL" in log
    assert len(log.strip().splitlines()) == 1, log


async def test_worker_reports_a_configuration_error_and_exits_2(
    redis_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "BROKER_REDIS_URL": redis_url, "BROKER_LOG_LEVEL": "LOUD"}

    code, log = await run_worker_to_exit([], env, tmp_path / "worker.log")

    assert code == 2
    assert log.startswith("sync-worker: configuration error: BROKER_LOG_LEVEL"), log


async def test_in_process_queue_runs_the_noop_body_with_the_injected_clock() -> None:
    clock = FrozenClock(dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC))
    async with job_deps(clock=clock) as deps:
        queue = InProcessJobQueue(deps)
        try:
            job_id = await queue.enqueue(JobName.NOOP, NoopPayload())
            assert job_id is not None
            async with asyncio.timeout(5):
                result = await queue.result(job_id)
        finally:
            await queue.aclose()

    assert result == {"ok": True, "at": "2030-01-01T12:00:00+00:00"}


async def test_queues_refuse_a_payload_of_another_type(arq_queue: ArqJobQueue) -> None:
    async with job_deps(clock=FrozenClock()) as deps:
        in_process = InProcessJobQueue(deps)
        for queue in (arq_queue, in_process):
            with pytest.raises(TypeError, match="NoopPayload"):
                await queue.enqueue(JobName.NOOP, JobPayload())


async def test_a_finished_refresh_job_frees_its_stable_id_for_the_next_scan(
    database_url: str,
    redis_url: str,
    queue_name: str,
    arq_queue: ArqJobQueue,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """arq keeps results for an hour by default and refuses a kept id: a refresh job's id would
    then block that link's next refresh. Refresh jobs keep no result."""
    job_id = f"upstream-refresh:{uuid.uuid4()}:0:0"
    payload = UpstreamRefreshPayload(token_id=uuid.uuid4())  # no such link: a quick skip
    assert await arq_queue.enqueue(JobName.REFRESH_UPSTREAM_TOKEN, payload, job_id=job_id)
    env = {**worker_env, "BROKER_REDIS_URL": redis_url, "BROKER_DATABASE_URL": database_url}

    code, log = await run_worker_to_exit(
        ["--queue", queue_name, "--burst"], env, tmp_path / "worker.log"
    )

    assert code == 0, log
    again = await arq_queue.enqueue(JobName.REFRESH_UPSTREAM_TOKEN, payload, job_id=job_id)
    assert again == job_id
