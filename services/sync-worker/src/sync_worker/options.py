"""The arq worker's options, built from the typed settings: Redis, queue, the shared jobs, and
the process's lifecycle (job dependencies, the periodic-job timer, health and metrics).

Each registered job becomes an arq function that adapts arq's ``ctx`` to the job body's
``(payload, deps)`` and records the run in the worker's metrics; the bodies themselves live in
``shared.jobs`` and know nothing of arq. With tracing on, each run is a span, a child of the
span that enqueued the job (its ``trace_context`` argument), else the root of its own trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import structlog
from arq.connections import RedisSettings
from arq.jobs import Deserializer, Serializer
from arq.typing import StartupShutdown
from arq.worker import Function, func
from opentelemetry.trace import TracerProvider
from redis.asyncio import Redis
from redis.exceptions import RedisError
from shared.clock import Clock, SystemClock
from shared.config_file import ConfigError
from shared.db.migrate import SchemaRevisions, current_revision
from shared.jobs.base import JobDeps, JobName, JobResult
from shared.jobs.queue import DEFAULT_QUEUE_NAME, ArqJobQueue, dumps_job_data, loads_job_data
from shared.jobs.registry import JOBS, JobSpec
from shared.jobs.schedule import PeriodicScheduler, periodic_jobs
from shared.process_resources import ProcessResources
from shared.settings import Settings
from shared.tracing.jobs import TRACER_NAME, JobSpans, context_of
from shared.tracing.spans import tracer_of
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from sync_worker.monitoring import (
    CheckFailed,
    MonitoringServer,
    WorkerMetrics,
    build_monitoring_app,
)

__all__ = [
    "DEPS_KEY",
    "WorkerOptions",
    "WorkerProcess",
    "arq_function",
    "build_worker_options",
]

DEPS_KEY = "job_deps"
"""Where the job bodies' :class:`~shared.jobs.JobDeps` sit in arq's ``ctx``."""
PROCESS_KEY = "worker_process"

log = structlog.get_logger("sync_worker")


class WorkerOptions(TypedDict):
    """Keyword arguments for ``arq.worker.Worker`` (arq's ``WorkerSettings``, typed)."""

    functions: list[Function]
    queue_name: str
    redis_settings: RedisSettings
    burst: bool
    max_jobs: int
    job_timeout: float
    ctx: dict[Any, Any]
    on_startup: StartupShutdown
    on_shutdown: StartupShutdown
    job_serializer: Serializer
    job_deserializer: Deserializer


@dataclass
class WorkerProcess:
    """What one worker process owns besides arq: its resources and job dependencies, the
    timer, monitoring."""

    resources: ProcessResources
    deps: JobDeps
    queue: ArqJobQueue
    metrics: WorkerMetrics
    scheduler: PeriodicScheduler | None
    http_host: str
    http_port: int | None  # None: no health/metrics server; 0: any free port
    # Where to write the port the server listens on (replicas in one network namespace).
    http_port_file: Path | None = None
    monitoring: MonitoringServer | None = None
    running: bool = False
    schema_revisions: SchemaRevisions | None = None  # loaded when the server starts

    @property
    def redis(self) -> Redis:
        assert self.resources.redis is not None  # a worker always has Redis
        return self.resources.redis

    async def start(self) -> None:
        self.running = True
        if self.http_port is not None:
            self.schema_revisions = SchemaRevisions.load()
            app = build_monitoring_app(
                self.metrics,
                checks={
                    "database": self._check_database,
                    "schema": self._check_schema,
                    "redis": self._check_redis,
                },
                queue_depth=self._queue_depth,
                alive=lambda: self.running,
            )
            self.monitoring = MonitoringServer(app, host=self.http_host, port=self.http_port)
            await self.monitoring.start()
            log.info("worker.http", host=self.http_host, port=self.monitoring.port)
            if self.http_port_file is not None:
                write_port_file(self.http_port_file, self.monitoring.port)
        if self.scheduler is not None:
            self.scheduler.start()

    async def stop(self) -> None:
        self.running = False
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.monitoring is not None:
            await self.monitoring.stop()
        await self.queue.aclose()
        await self.resources.aclose()

    async def _check_database(self) -> None:
        try:
            async with self.deps.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise CheckFailed("database") from exc

    async def _check_schema(self) -> None:
        """This release's migrations have run (a newer release's may have too: still fine)."""
        assert self.schema_revisions is not None
        try:
            state = self.schema_revisions.state(await current_revision(self.deps.engine))
        except SQLAlchemyError as exc:
            raise CheckFailed("schema") from exc
        if state == "behind":
            raise CheckFailed("schema: the database is not migrated to this release")

    async def _check_redis(self) -> None:
        try:
            await self.redis.ping()
        except RedisError as exc:
            raise CheckFailed("redis") from exc

    async def _queue_depth(self) -> int:
        try:
            return int(await self.redis.zcard(self.queue.queue_name))
        except RedisError as exc:
            raise CheckFailed("queue depth") from exc


def write_port_file(path: Path, port: int) -> None:
    """Replace ``path`` with the port, atomically: a health check never reads half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{port}\n", encoding="ascii")
    partial.replace(path)


def arq_function(spec: JobSpec[Any], spans: JobSpans | None = None) -> Function:
    """Wrap a shared job body as an arq function registered under the job's name; with
    ``spans`` (tracing on) each run is a span."""

    async def run(
        ctx: dict[Any, Any], payload: dict[str, Any], trace_context: object = None
    ) -> JobResult:
        if spans is None:
            return await run_body(ctx, payload)
        parent = context_of(trace_context)
        with spans.processing(spec.name.value, ctx.get("job_id"), parent):
            return await run_body(ctx, payload)

    async def run_body(ctx: dict[Any, Any], payload: dict[str, Any]) -> JobResult:
        deps: JobDeps = ctx[DEPS_KEY]
        process: WorkerProcess | None = ctx.get(PROCESS_KEY)
        started = time.perf_counter()
        finished = False
        try:
            result = await spec.run(payload, deps)
            finished = True
        finally:
            if process is not None and not finished:  # arq logs and stores the error itself
                process.metrics.job_finished(spec.name.value, "failed", _since(started))
        if process is not None:
            record_result(process.metrics, spec.name.value, result, _since(started))
        return result

    return func(run, name=spec.name.value, keep_result=spec.keep_result)


def _since(started: float) -> float:
    return time.perf_counter() - started


UPSTREAM_OUTCOMES = {
    "refreshed": "ok",
    "retry": "unavailable",
    "revoked": "rejected",
    "reauth_required": "rejected",
}


def record_result(metrics: WorkerMetrics, job: str, result: JobResult, seconds: float) -> None:
    """Count a finished job from what its body reported (outcome, upstream call, relay,
    back-channel logouts)."""
    outcome = result.get("outcome", "ok")
    metrics.job_finished(job, outcome if outcome in ("ok", "retried") else "failed", seconds)
    provider, upstream = result.get("provider"), result.get("upstream_seconds")
    if isinstance(provider, str) and isinstance(upstream, int | float):
        status = UPSTREAM_OUTCOMES.get(str(result.get("status")), "invalid_response")
        metrics.upstream_refresh(provider, status, float(upstream))
    published = result.get("published")
    if isinstance(published, int) and published > 0:
        metrics.audit_published(published)
    pending = result.get("pending")
    if job == JobName.DELIVER_BACKCHANNEL_LOGOUTS.value and isinstance(pending, int):
        metrics.backchannel_logouts(
            delivered=int(result.get("delivered", 0)),
            retried=int(result.get("retried", 0)),
            failed=int(result.get("failed", 0)),
            pending=pending,
        )


def redis_settings_from_url(url: str) -> RedisSettings:
    """arq's connection settings for a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    try:
        return RedisSettings.from_dsn(url)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            "BROKER_REDIS_URL: expected a redis://, rediss:// or unix:// URL"
        ) from exc


def build_worker_process(
    settings: Settings,
    *,
    queue_name: str,
    clock: Clock,
    http_host: str,
    http_port: int | None,
    http_port_file: Path | None = None,
    tracer_provider: TracerProvider | None = None,
) -> WorkerProcess:
    """Everything a worker process needs, constructed without I/O."""
    assert settings.redis_url is not None
    resources = ProcessResources.build(settings, clock, tracer_provider=tracer_provider)
    # Follow-up jobs (a scan's per-link jobs) carry the trace of the job that queued them.
    queue = ArqJobQueue(
        settings.redis_url, queue_name=queue_name, tracer=resources.tracer(TRACER_NAME)
    )
    deps = resources.job_deps(queue=queue)
    scheduler = (
        PeriodicScheduler(queue, periodic_jobs(settings), clock, namespace=queue_name)
        if settings.periodic_jobs
        else None
    )
    return WorkerProcess(
        resources=resources,
        deps=deps,
        queue=queue,
        metrics=WorkerMetrics(),
        scheduler=scheduler,
        http_host=http_host,
        http_port=http_port,
        http_port_file=http_port_file,
    )


async def _on_startup(ctx: dict[Any, Any]) -> None:
    process: WorkerProcess = ctx[PROCESS_KEY]
    await process.start()


async def _on_shutdown(ctx: dict[Any, Any]) -> None:
    process: WorkerProcess = ctx[PROCESS_KEY]
    await process.stop()


def build_worker_options(
    settings: Settings,
    *,
    queue_name: str = DEFAULT_QUEUE_NAME,
    burst: bool = False,
    max_jobs: int = 10,
    job_timeout: float = 120.0,
    clock: Clock | None = None,
    http_host: str = "127.0.0.1",
    http_port: int | None = None,
    http_port_file: Path | None = None,
    tracer_provider: TracerProvider | None = None,
) -> WorkerOptions:
    """Options for a worker consuming ``queue_name``; needs ``settings.redis_url``.

    No I/O: arq connects when the worker starts. Raises ``ConfigError`` when Redis is not
    configured or its URL is unusable. ``tracer_provider`` (tracing on): a span per job run.
    """
    if settings.redis_url is None:
        raise ConfigError("BROKER_REDIS_URL: the worker needs Redis")
    redis_settings = redis_settings_from_url(settings.redis_url)
    process = build_worker_process(
        settings,
        queue_name=queue_name,
        clock=clock or SystemClock(),
        http_host=http_host,
        http_port=http_port,
        http_port_file=http_port_file,
        tracer_provider=tracer_provider,
    )
    tracer = tracer_of(tracer_provider, TRACER_NAME)
    spans = None if tracer is None else JobSpans(tracer, queue_name)
    if burst:
        process.scheduler = None  # burst mode drains the queue; it adds no periodic work
    return WorkerOptions(
        functions=[arq_function(spec, spans) for spec in JOBS.values()],
        queue_name=queue_name,
        redis_settings=redis_settings,
        burst=burst,
        max_jobs=max_jobs,
        job_timeout=job_timeout,
        ctx={DEPS_KEY: process.deps, PROCESS_KEY: process},
        on_startup=_on_startup,
        on_shutdown=_on_shutdown,
        # JSON, never pickle: whoever can write to Redis must not run code here.
        job_serializer=dumps_job_data,
        job_deserializer=loads_job_data,
    )
