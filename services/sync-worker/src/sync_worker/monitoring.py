"""The worker's operator endpoints: Prometheus metrics, liveness and readiness over HTTP.

:class:`WorkerMetrics` owns the counters and histograms (in its own registry, never the
process-global one); :func:`build_monitoring_app` serves them with ``/healthz`` and ``/readyz``;
:class:`MonitoringServer` runs that app with uvicorn inside the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Generator, Mapping

import structlog
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "CHECK_TIMEOUT_SECONDS",
    "JOB_OUTCOMES",
    "MonitoringServer",
    "WorkerMetrics",
    "build_monitoring_app",
]

log = structlog.get_logger("sync_worker.monitoring")

CHECK_TIMEOUT_SECONDS = 2.0
"""How long one readiness check (or the queue-depth read of a scrape) may take."""

JOB_OUTCOMES = frozenset({"ok", "failed", "retried"})
"""The values ``WorkerMetrics.job_finished`` accepts for ``outcome``."""

# Upstream token endpoints: a fast answer is a few ms, a stalled IdP runs into the 30 s timeout.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Job bodies: from a no-op to a long housekeeping sweep.
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    """The sync worker's Prometheus metrics, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._jobs = Counter(
            "sync_worker_jobs_total",
            "Jobs finished, by job name and outcome (ok, failed, retried).",
            ["job", "outcome"],
            registry=self.registry,
        )
        self._job_seconds = Histogram(
            "sync_worker_job_duration_seconds",
            "Wall time of one job run, by job name.",
            ["job"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self._refreshes = Counter(
            "sync_worker_upstream_refreshes_total",
            "Upstream token refreshes, by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self._refresh_seconds = Histogram(
            "sync_worker_upstream_refresh_seconds",
            "Latency of one upstream token refresh, by provider.",
            ["provider"],
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self._audit_published = Counter(
            "sync_worker_audit_events_published_total",
            "Audit events relayed to the audit sink.",
            registry=self.registry,
        )
        self._logouts = Counter(
            "sync_worker_backchannel_logouts_total",
            "Back-channel Logout Token deliveries attempted, by outcome (delivered; retried: "
            "the relying party did not take it, tried again later; failed: given up).",
            ["outcome"],
            registry=self.registry,
        )
        self._logouts_pending = Gauge(
            "sync_worker_backchannel_logouts_pending",
            "Logout Tokens neither delivered nor given up, as of this worker's last delivery run.",
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "sync_worker_queue_depth",
            "Jobs waiting in the queue, read at scrape time (NaN when the read failed).",
            registry=self.registry,
        )
        self._queue_depth_errors = Counter(
            "sync_worker_queue_depth_errors_total",
            "Scrapes whose queue-depth read failed or timed out.",
            registry=self.registry,
        )

    def job_finished(self, job: str, outcome: str, seconds: float) -> None:
        """Count one finished job run; ``outcome`` is one of :data:`JOB_OUTCOMES`."""
        if outcome not in JOB_OUTCOMES:
            raise ValueError(f"job outcome must be one of {sorted(JOB_OUTCOMES)}, not {outcome!r}")
        self._jobs.labels(job=job, outcome=outcome).inc()
        self._job_seconds.labels(job=job).observe(seconds)

    def upstream_refresh(self, provider: str, outcome: str, seconds: float) -> None:
        """Count one upstream refresh (``ok``, ``rejected``, ``unavailable``...) and its latency."""
        self._refreshes.labels(provider=provider, outcome=outcome).inc()
        self._refresh_seconds.labels(provider=provider).observe(seconds)

    def audit_published(self, count: int) -> None:
        """Count ``count`` audit events relayed (zero is fine, negative is an error)."""
        self._audit_published.inc(count)

    def backchannel_logouts(
        self, *, delivered: int, retried: int, failed: int, pending: int
    ) -> None:
        """Count one delivery run's outcomes and record the deliveries still pending."""
        for outcome, count in (("delivered", delivered), ("retried", retried), ("failed", failed)):
            self._logouts.labels(outcome=outcome).inc(count)
        self._logouts_pending.set(pending)

    def set_queue_depth(self, depth: int) -> None:
        """Record the queue depth just read (the ``/metrics`` handler calls this)."""
        self._queue_depth.set(depth)

    def queue_depth_unavailable(self) -> None:
        """Record a failed queue-depth read: the gauge becomes NaN and the error counter grows."""
        self._queue_depth.set(math.nan)
        self._queue_depth_errors.inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class CheckFailed(Exception):
    """A readiness check or the queue-depth read failed; raised ``from`` the driver's error."""


# What a check may raise: its own translation, a network error, or the time limit.
CHECK_ERRORS = (CheckFailed, OSError, TimeoutError)


def _failure(exc: BaseException) -> str:
    # Only the type: a driver's message may carry a URL with its password. A CheckFailed of
    # our own (no driver error behind it) says what is wrong in its message.
    cause = exc.__cause__ if isinstance(exc, CheckFailed) else None
    if isinstance(exc, CheckFailed) and cause is None:
        return str(exc)
    return type(cause or exc).__name__


async def _run_check(check: Callable[[], Awaitable[None]], limit_seconds: float) -> str:
    try:
        async with asyncio.timeout(limit_seconds):
            await check()
    except CHECK_ERRORS as exc:
        return f"failed: {_failure(exc)}"
    return "ok"


def build_monitoring_app(
    metrics: WorkerMetrics,
    *,
    checks: Mapping[str, Callable[[], Awaitable[None]]],
    queue_depth: Callable[[], Awaitable[int]],
    alive: Callable[[], bool],
    check_timeout: float = CHECK_TIMEOUT_SECONDS,
) -> Starlette:
    """An ASGI app serving ``GET /healthz``, ``GET /readyz`` and ``GET /metrics``.

    ``alive`` answers liveness (is the worker loop still running?); each of ``checks`` is awaited
    concurrently for readiness and passes by returning, fails by raising or overrunning
    ``check_timeout``; ``queue_depth`` is awaited on every scrape (same timeout).
    """

    async def healthz(request: Request) -> Response:
        if alive():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "not_alive"}, status_code=503)

    async def readyz(request: Request) -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n], check_timeout) for n in names))
        report = dict(zip(names, results, strict=True))
        failed = {name: result for name, result in report.items() if result != "ok"}
        if failed:
            log.warning("worker.readiness_failed", checks=failed)
            return JSONResponse({"status": "not_ready", "checks": report}, status_code=503)
        return JSONResponse({"status": "ready", "checks": report})

    async def metrics_endpoint(request: Request) -> Response:
        # Prometheus collectors are synchronous: read the async value before rendering.
        try:
            async with asyncio.timeout(check_timeout):
                depth = await queue_depth()
        except CHECK_ERRORS as exc:
            log.warning("worker.queue_depth_failed", error=_failure(exc))
            metrics.queue_depth_unavailable()
        else:
            metrics.set_queue_depth(depth)
        return Response(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ]
    )


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to its host process (the arq worker)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MonitoringServer:
    """Runs the monitoring app with uvicorn as a task in the current event loop."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            ws="none",
            server_header=False,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._where = f"{host}:{port}"

    async def start(self) -> None:
        """Serve, returning once the socket listens; raises ``OSError`` if it cannot bind."""
        if self._task is not None:
            raise RuntimeError("the monitoring server was already started")
        self._task = asyncio.create_task(self._serve(), name="sync-worker-monitoring")
        try:
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # raises the startup failure
                    raise OSError(f"monitoring server on {self._where} stopped during startup")
                await asyncio.sleep(0.01)
        except BaseException:
            # Failed or cancelled mid-startup: close whatever was bound, leave nothing running.
            self._server.should_exit = True
            task, self._task = self._task, None
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await task  # its failure is the one being raised
            raise
        log.info("worker.monitoring_started", host=self._server.config.host, port=self.port)

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:
            # uvicorn exits the process when it cannot bind; here that must stay an error.
            raise OSError(f"monitoring server cannot listen on {self._where}") from exc

    async def stop(self) -> None:
        """Stop accepting connections, finish the open ones, and wait for the server task."""
        if self._task is None:
            return
        self._server.should_exit = True
        task, self._task = self._task, None
        await task

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port=0``); only valid once started."""
        if self._task is None or not self._server.started:
            raise RuntimeError("the monitoring server is not listening")
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port
