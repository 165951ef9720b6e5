"""Putting jobs on a queue: the arq (Redis) and in-process backends of ``base.JobQueue``.

The broker enqueues typed payloads only after its transaction commits. With ``BROKER_REDIS_URL``
set, :class:`ArqJobQueue` hands them to Redis for any number of ``sync-worker`` processes; without
it (the embedded default) :class:`InProcessJobQueue` runs the same job bodies as tasks of the
current event loop. Both refuse a duplicate ``job_id`` while that job is pending (arq also while
its result is kept).

Jobs and results cross Redis as JSON (:func:`dumps_job_data` / :func:`loads_job_data`), never
pickle, so whoever can write to Redis cannot run code in the worker.

With tracing on, both carry the enqueuer's trace context into the job
(``shared.tracing.jobs``): arq as the job's ``trace_context`` keyword argument, the in-process
queue as the task's own context.

Errors: :class:`UnknownJobError` (a name not in the registry), ``TypeError`` (a payload of the
wrong type), :class:`QueueUnavailableError` (Redis cannot be reached).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections import OrderedDict
from functools import partial
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.jobs import Job
from opentelemetry.trace import Tracer
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from shared.jobs.base import (
    JobDeps,
    JobName,
    JobPayload,
    JobResult,
    QueueUnavailableError,
)
from shared.jobs.registry import JobSpec, job_spec
from shared.settings import Settings
from shared.tracing.jobs import TRACE_CONTEXT_ARGUMENT, JobSpans

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "ArqJobQueue",
    "InProcessJobQueue",
    "build_job_queue",
    "dumps_job_data",
    "loads_job_data",
]

DEFAULT_QUEUE_NAME = "broker:jobs"
IN_PROCESS_QUEUE_NAME = "in-process"

log = structlog.get_logger("shared.jobs")


def _checked(name: JobName, payload: JobPayload) -> JobSpec[Any]:
    spec = job_spec(name)
    spec.parse(payload)  # TypeError when the payload belongs to another job
    return spec


def _encode_extra(value: object) -> object:
    # arq stores a failed job's exception as its result; keep its text, not the object.
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_job_data(data: dict[str, Any]) -> bytes:
    """arq ``job_serializer``: a job or result record as JSON."""
    return json.dumps(data, default=_encode_extra, separators=(",", ":")).encode()


def loads_job_data(raw: bytes) -> dict[str, Any]:
    """arq ``job_deserializer``: the inverse of :func:`dumps_job_data`."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a job record must be a JSON object")
    return data


class ArqJobQueue:
    """Enqueues onto an arq queue in Redis; the pool is created lazily (no I/O here)."""

    def __init__(
        self,
        redis_url: str,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        tracer: Tracer | None = None,
    ) -> None:
        self.queue_name = queue_name
        self._redis = ArqRedis(
            ConnectionPool.from_url(redis_url),
            job_serializer=dumps_job_data,
            job_deserializer=loads_job_data,
            default_queue_name=queue_name,
        )
        self._spans = None if tracer is None else JobSpans(tracer, queue_name)

    async def enqueue(
        self, name: JobName, payload: JobPayload, *, job_id: str | None = None
    ) -> str | None:
        """Put the job on the queue; None when a job with ``job_id`` is queued or kept."""
        spec = _checked(name, payload)
        if self._spans is None:
            return await self._put(spec, payload, job_id, {})
        with self._spans.sending(spec.name.value, job_id) as carrier:
            return await self._put(spec, payload, job_id, {TRACE_CONTEXT_ARGUMENT: carrier})

    async def _put(
        self,
        spec: JobSpec[Any],
        payload: JobPayload,
        job_id: str | None,
        arguments: dict[str, Any],
    ) -> str | None:
        try:
            job = await self._redis.enqueue_job(
                spec.name.value,
                payload.model_dump(mode="json"),
                _job_id=job_id,
                _queue_name=self.queue_name,
                **arguments,
            )
        except (RedisError, OSError) as exc:
            raise QueueUnavailableError(f"cannot enqueue {spec.name.value!r}: {exc}") from exc
        return None if job is None else job.job_id

    def job(self, job_id: str) -> Job:
        """arq's handle on an enqueued job (status, ``await job.result(timeout=...)``)."""
        return Job(job_id, self._redis, _queue_name=self.queue_name, _deserializer=loads_job_data)

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose(close_connection_pool=True)


class InProcessJobQueue:
    """Runs each job as a task of the current event loop: the embedded default, no Redis.

    No retries and nothing survives a restart. The last ``keep_results`` finished jobs stay
    available to :meth:`result`.
    """

    def __init__(
        self,
        deps: JobDeps,
        *,
        keep_results: int = 100,
        max_jobs: int = 4,
        tracer: Tracer | None = None,
    ) -> None:
        # Follow-up jobs a body enqueues (a scan's per-token jobs) run here too.
        self._deps = dataclasses.replace(deps, queue=self)
        # At most this many run at once (a scan may queue a thousand): the broker's own
        # requests keep their share of the database pool and, on SQLite, of its write lock.
        self._running = asyncio.Semaphore(max_jobs)
        self._keep_results = keep_results
        self._pending: dict[str, asyncio.Task[JobResult]] = {}
        self._finished: OrderedDict[str, asyncio.Task[JobResult]] = OrderedDict()
        self._spans = None if tracer is None else JobSpans(tracer, IN_PROCESS_QUEUE_NAME)

    async def enqueue(
        self, name: JobName, payload: JobPayload, *, job_id: str | None = None
    ) -> str | None:
        """Start the job in the background; None when a job with ``job_id`` is still running."""
        spec = _checked(name, payload)
        job_id = job_id or uuid.uuid4().hex
        if job_id in self._pending:
            return None
        task = asyncio.create_task(
            self._run(spec, payload, job_id), name=f"job:{spec.name.value}:{job_id}"
        )
        self._pending[job_id] = task
        task.add_done_callback(partial(self._done, job_id))
        return job_id

    async def _run(self, spec: JobSpec[Any], payload: JobPayload, job_id: str) -> JobResult:
        try:
            async with self._running:
                if self._spans is None:
                    return await spec.run(payload, self._deps)
                # The task was created with the enqueuer's context: its span is the parent.
                with self._spans.processing(spec.name.value, job_id, parent=None):
                    return await spec.run(payload, self._deps)
        except Exception:
            log.exception("job.failed", job=spec.name.value, job_id=job_id)
            raise

    def _done(self, job_id: str, task: asyncio.Task[JobResult]) -> None:
        self._pending.pop(job_id, None)
        if not task.cancelled():
            task.exception()  # already logged in _run; mark it retrieved
        self._finished[job_id] = task
        while len(self._finished) > self._keep_results:
            self._finished.popitem(last=False)

    async def result(self, job_id: str) -> JobResult:
        """Wait for a job's result (re-raising its exception); KeyError for an unknown id.

        Bound the wait with ``asyncio.timeout``; that cancels the wait, not the job.
        """
        task = self._pending.get(job_id) or self._finished.get(job_id)
        if task is None:
            raise KeyError(f"no job {job_id!r} (never enqueued, or its result was dropped)")
        return await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel the jobs still running and wait for them to stop."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def build_job_queue(
    settings: Settings,
    deps: JobDeps,
    *,
    queue_name: str = DEFAULT_QUEUE_NAME,
    tracer: Tracer | None = None,
) -> ArqJobQueue | InProcessJobQueue:
    """Redis-backed when ``settings.redis_url`` is set, else in-process (the embedded default)."""
    if settings.redis_url is None:
        return InProcessJobQueue(deps, tracer=tracer)
    return ArqJobQueue(settings.redis_url, queue_name=queue_name, tracer=tracer)
