"""The arq worker's options, built from the typed settings: Redis, queue, and the shared jobs.

Each registered job becomes an arq function that adapts arq's ``ctx`` to the job body's
``(payload, deps)``; the bodies themselves live in ``shared.jobs`` and know nothing of arq.
"""

from __future__ import annotations

from typing import Any, TypedDict

from arq.connections import RedisSettings
from arq.jobs import Deserializer, Serializer
from arq.worker import Function, func
from shared.clock import Clock, SystemClock
from shared.config_file import ConfigError
from shared.jobs import (
    DEFAULT_QUEUE_NAME,
    JOBS,
    JobDeps,
    JobResult,
    JobSpec,
    dumps_job_data,
    loads_job_data,
)
from shared.settings import Settings

__all__ = ["DEPS_KEY", "WorkerOptions", "arq_function", "build_worker_options"]

DEPS_KEY = "job_deps"
"""Where the job bodies' :class:`~shared.jobs.JobDeps` sit in arq's ``ctx``."""


class WorkerOptions(TypedDict):
    """Keyword arguments for ``arq.worker.Worker`` (arq's ``WorkerSettings``, typed)."""

    functions: list[Function]
    queue_name: str
    redis_settings: RedisSettings
    burst: bool
    ctx: dict[Any, Any]
    job_serializer: Serializer
    job_deserializer: Deserializer


def arq_function(spec: JobSpec[Any]) -> Function:
    """Wrap a shared job body as an arq function registered under the job's name."""

    async def run(ctx: dict[Any, Any], payload: dict[str, Any]) -> JobResult:
        deps: JobDeps = ctx[DEPS_KEY]
        return await spec.run(payload, deps)

    return func(run, name=spec.name.value)


def redis_settings_from_url(url: str) -> RedisSettings:
    """arq's connection settings for a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    try:
        return RedisSettings.from_dsn(url)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            "BROKER_REDIS_URL: expected a redis://, rediss:// or unix:// URL"
        ) from exc


def build_worker_options(
    settings: Settings,
    *,
    queue_name: str = DEFAULT_QUEUE_NAME,
    burst: bool = False,
    clock: Clock | None = None,
) -> WorkerOptions:
    """Options for a worker consuming ``queue_name``; needs ``settings.redis_url``.

    No I/O: arq connects when the worker starts. Raises ``ConfigError`` when Redis is not
    configured or its URL is unusable.
    """
    if settings.redis_url is None:
        raise ConfigError("BROKER_REDIS_URL: the worker needs Redis")
    deps = JobDeps(clock=clock or SystemClock())
    return WorkerOptions(
        functions=[arq_function(spec) for spec in JOBS.values()],
        queue_name=queue_name,
        redis_settings=redis_settings_from_url(settings.redis_url),
        burst=burst,
        ctx={DEPS_KEY: deps},
        # JSON, never pickle: whoever can write to Redis must not run code here.
        job_serializer=dumps_job_data,
        job_deserializer=loads_job_data,
    )
