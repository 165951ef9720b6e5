"""The worker's /healthz, /readyz and /metrics, and the uvicorn server that carries them."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping

import httpx2
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sync_worker.monitoring import (
    CheckFailed,
    MonitoringServer,
    WorkerMetrics,
    build_monitoring_app,
)

SECRET_URL = "redis://worker:hunter2@redis.internal:6379/0"


async def _ok() -> None:
    return None


async def _refused() -> None:
    raise ConnectionRefusedError(f"cannot connect to {SECRET_URL}")


async def _hangs() -> None:
    await asyncio.sleep(60)


def _depth(value: int) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        return value

    return read


async def _depth_fails() -> int:
    raise ConnectionError(f"cannot read the queue at {SECRET_URL}")


def _client(
    metrics: WorkerMetrics | None = None,
    *,
    checks: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
    queue_depth: Callable[[], Awaitable[int]] | None = None,
    alive: Callable[[], bool] = lambda: True,
    check_timeout: float = 2.0,
) -> httpx2.AsyncClient:
    app = build_monitoring_app(
        metrics or WorkerMetrics(),
        checks=checks if checks is not None else {"redis": _ok},
        queue_depth=queue_depth or _depth(0),
        alive=alive,
        check_timeout=check_timeout,
    )
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://worker")


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_healthz_is_ok_while_the_worker_is_alive():
    async with _client(alive=lambda: True) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_is_503_once_the_worker_is_not_alive():
    async with _client(alive=lambda: False) as client:
        response = await client.get("/healthz")
    assert response.status_code == 503


async def test_readyz_reports_every_passing_check():
    async with _client(checks={"redis": _ok, "database": _ok}) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", "database": "ok"}}


async def test_a_check_of_our_own_says_what_is_wrong():
    async def behind() -> None:
        raise CheckFailed("schema: the database is not migrated to this release")

    async with _client(checks={"schema": behind}) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "schema": "failed: schema: the database is not migrated to this release"
    }


async def test_readyz_names_the_failing_check_without_leaking_its_message():
    async with _client(checks={"redis": _refused, "database": _ok}) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"redis": "failed: ConnectionRefusedError", "database": "ok"},
    }
    assert "hunter2" not in response.text
    assert "redis.internal" not in response.text


async def test_readyz_fails_a_check_that_overruns_its_timeout():
    async with _client(checks={"slow": _hangs, "redis": _ok}, check_timeout=0.05) as client:
        response = await asyncio.wait_for(client.get("/readyz"), timeout=5)
    assert response.status_code == 503
    assert response.json()["checks"] == {"slow": "failed: TimeoutError", "redis": "ok"}


async def test_metrics_expose_job_and_refresh_counters_with_their_labels():
    metrics = WorkerMetrics()
    metrics.job_finished("upstream_refresh", "ok", 0.2)
    metrics.job_finished("upstream_refresh", "ok", 0.3)
    metrics.job_finished("profile_sync", "failed", 1.5)
    metrics.job_finished("profile_sync", "retried", 0.1)
    metrics.upstream_refresh("google", "ok", 0.12)
    metrics.upstream_refresh("github", "rejected", 0.04)
    metrics.audit_published(3)
    async with _client(metrics, queue_depth=_depth(7)) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("sync_worker_jobs_total", job="upstream_refresh", outcome="ok") == 2
    assert value("sync_worker_jobs_total", job="profile_sync", outcome="failed") == 1
    assert value("sync_worker_jobs_total", job="profile_sync", outcome="retried") == 1
    assert value("sync_worker_job_duration_seconds_count", job="upstream_refresh") == 2
    assert value("sync_worker_upstream_refreshes_total", provider="google", outcome="ok") == 1
    assert value("sync_worker_upstream_refreshes_total", provider="github", outcome="rejected") == 1
    assert value("sync_worker_upstream_refresh_seconds_bucket", provider="github", le="0.05") == 1
    assert value("sync_worker_upstream_refresh_seconds_bucket", provider="google", le="0.1") == 0
    assert value("sync_worker_upstream_refresh_seconds_bucket", provider="google", le="30.0") == 1
    assert value("sync_worker_audit_events_published_total") == 3
    assert value("sync_worker_queue_depth") == 7
    assert value("sync_worker_queue_depth_errors_total") == 0


async def test_metrics_read_the_queue_depth_at_every_scrape():
    depth = 0

    async def read() -> int:
        return depth

    async with _client(queue_depth=read) as client:
        depth = 4
        first = _samples((await client.get("/metrics")).text)
        depth = 9
        second = _samples((await client.get("/metrics")).text)
    assert first[("sync_worker_queue_depth", frozenset())] == 4
    assert second[("sync_worker_queue_depth", frozenset())] == 9


async def test_a_failing_queue_depth_read_still_serves_the_metrics():
    metrics = WorkerMetrics()
    metrics.job_finished("housekeeping", "ok", 0.01)
    async with _client(metrics, queue_depth=_depth_fails) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)
    assert math.isnan(samples[("sync_worker_queue_depth", frozenset())])
    assert samples[("sync_worker_queue_depth_errors_total", frozenset())] == 1
    assert samples[
        ("sync_worker_jobs_total", frozenset({("job", "housekeeping"), ("outcome", "ok")}))
    ]
    assert "hunter2" not in response.text


def test_an_unknown_job_outcome_is_refused():
    with pytest.raises(ValueError, match="outcome"):
        WorkerMetrics().job_finished("housekeeping", "exploded", 0.1)


def test_metrics_stay_out_of_the_global_registry():
    # Two instances side by side would collide in a shared registry.
    WorkerMetrics()
    WorkerMetrics()
    assert REGISTRY.get_sample_value("sync_worker_queue_depth") is None


async def test_monitoring_server_serves_healthz_over_http_on_a_free_port():
    app = build_monitoring_app(
        WorkerMetrics(), checks={}, queue_depth=_depth(0), alive=lambda: True
    )
    server = MonitoringServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        assert server.port > 0
        async with httpx2.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        await asyncio.wait_for(server.stop(), timeout=10)


async def test_monitoring_server_reports_a_port_in_use_as_oserror():
    app = build_monitoring_app(
        WorkerMetrics(), checks={}, queue_depth=_depth(0), alive=lambda: True
    )
    first = MonitoringServer(app, host="127.0.0.1", port=0)
    await first.start()
    try:
        second = MonitoringServer(app, host="127.0.0.1", port=first.port)
        with pytest.raises(OSError):
            await asyncio.wait_for(second.start(), timeout=10)
        await second.stop()  # nothing left running: a no-op
    finally:
        await first.stop()
