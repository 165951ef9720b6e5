"""The runtime is built from settings without I/O and picks the job queue by configuration."""

from __future__ import annotations

from shared.jobs.queue import ArqJobQueue, InProcessJobQueue
from shared.runtime import build_runtime
from shared.settings import make_settings


async def test_embedded_default_runs_jobs_in_process():
    runtime = build_runtime(make_settings())
    try:
        assert isinstance(runtime.jobs, InProcessJobQueue)
        assert set(runtime.providers) == {"dev"}
        assert not runtime.keys.loaded  # nothing was read at construction
    finally:
        await runtime.stop()


async def test_redis_url_selects_the_arq_queue_without_connecting():
    # Port 1 answers nothing: construction must not try to connect.
    runtime = build_runtime(make_settings(redis_url="redis://127.0.0.1:1/0"))
    try:
        assert isinstance(runtime.jobs, ArqJobQueue)
    finally:
        await runtime.stop()
