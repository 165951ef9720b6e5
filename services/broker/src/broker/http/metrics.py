"""The broker's Prometheus metrics (``GET /metrics``), in a registry of their own.

Requests by route template and status with latency histograms, sign-ins by provider and client,
token grants by grant type, client and provider, refresh-token reuse detections, and, read at
scrape time, the database pools and the refresh grant's group commit. Label values are bounded:
route templates (never raw paths), configured client and provider ids, RFC error codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from shared.refresh_rotation.groups import GroupCounts
from shared.runtime import Runtime
from starlette.requests import Request
from starlette.responses import Response

# From a JWKS hit (well under a millisecond) to an upstream login near its 30 s timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


M = TypeVar("M", Counter, Histogram)


class _Children(Generic[M]):
    """A labelled metric's children by label values (in the metric's label order), cached.

    ``labels()`` takes a lock and builds its key on every call; the request path calls these on
    every request. Label values are bounded (see above), so the cache is too.
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class _PoolCollector(Collector):
    """Connections of SQLAlchemy's pool and of the refresh hot path, read when scraped."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use = GaugeMetricFamily(
            "broker_db_pool_connections",
            "Open database connections by pool (orm, hot_path) and state (in_use, idle).",
            labels=["pool", "state"],
        )
        limit = GaugeMetricFamily(
            "broker_db_pool_max_connections",
            "The most connections a pool opens (SQLAlchemy's pool: size plus overflow).",
            labels=["pool"],
        )
        pool = self._runtime.engine.sync_engine.pool
        checked_out = getattr(pool, "checkedout", None)
        if checked_out is not None:  # a QueuePool (PostgreSQL); SQLite's pool keeps no counts
            in_use.add_metric(["orm", "in_use"], checked_out())
            in_use.add_metric(["orm", "idle"], pool.checkedin())  # type: ignore[attr-defined]
            limit.add_metric(
                ["orm"],
                pool.size() + pool._max_overflow,  # type: ignore[attr-defined]
            )
        hot_path = self._runtime.hot_path
        if hot_path is not None:
            in_use.add_metric(["hot_path", "in_use"], hot_path.size - hot_path.idle)
            in_use.add_metric(["hot_path", "idle"], hot_path.idle)
            limit.add_metric(["hot_path"], hot_path.max_size)
        yield in_use
        yield limit


class _RotationGroupCollector(Collector):
    """The refresh grant's group commit (shared.refresh_rotation.groups), read when scraped:
    grouped rotations over groups is the mean group size."""

    def __init__(self, counts: GroupCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "broker_refresh_rotation_groups",
            "Group-commit statements that rotated concurrent refresh tokens, one commit each.",
            value=self._counts.groups,
        )
        rotations = CounterMetricFamily(
            "broker_refresh_rotations",
            "Refresh grants on the hot path by how they reached PostgreSQL: group (rotated in a "
            "group's statement) or alone (sent to the single statement: no concurrent "
            "neighbour, or left out of a group: its row locked by another transaction, or the "
            "group's statement failed). Refreshes that narrow the scope are not counted.",
            labels=["path"],
        )
        rotations.add_metric(["group"], self._counts.grouped)
        rotations.add_metric(["alone"], self._counts.alone)
        yield rotations


class BrokerMetrics:
    """Counters and histograms of one broker process."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "broker_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "broker_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._logins = Counter(
            "broker_logins_total",
            "Upstream sign-ins that came back to the broker, by provider, client and outcome "
            "(success, or the OAuth error code the client received).",
            ["provider", "client", "outcome"],
            registry=self.registry,
        )
        self._grants = Counter(
            "broker_token_grants_total",
            "Token endpoint grants by grant type, client, provider of the session and outcome "
            "(success, or the OAuth error code).",
            ["grant_type", "client", "provider", "outcome"],
            registry=self.registry,
        )
        self._reuse = Counter(
            "broker_refresh_token_reuse_detected_total",
            "Rotated refresh tokens presented again: each revoked its session.",
            ["client"],
            registry=self.registry,
        )
        if runtime is not None:
            self.registry.register(_PoolCollector(runtime))
            if runtime.rotation_groups is not None:
                self.registry.register(_RotationGroupCollector(runtime.rotation_groups.counts))
        self._requests_by = _Children(self._requests)
        self._latency_by = _Children(self._latency)
        self._logins_by = _Children(self._logins)
        self._grants_by = _Children(self._grants)
        self._reuse_by = _Children(self._reuse)

    def request_finished(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """Count a request; ``seconds`` None: count only (the static documents, see below)."""
        self._requests_by(method, route, str(status)).inc()
        if seconds is not None:
            self._latency_by(method, route).observe(seconds)

    def login_finished(self, provider: str, client: str, outcome: str) -> None:
        self._logins_by(provider, client, outcome).inc()

    def token_granted(self, grant_type: str, client: str, provider: str) -> None:
        self._grants_by(grant_type, client, provider, "success").inc()

    def token_refused(self, grant_type: str, client: str, error: str) -> None:
        """A grant that failed after client authentication (its session's provider unknown)."""
        self._grants_by(grant_type, client, "", error).inc()

    def refresh_reuse_detected(self, client: str) -> None:
        self._reuse_by(client).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(request: Request) -> BrokerMetrics:
    metrics: BrokerMetrics = request.app.state.metrics
    return metrics


async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics_of(request).render(), media_type=CONTENT_TYPE_LATEST)
