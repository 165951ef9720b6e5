"""Every HTTP request: a request id, one access-log line and the request metrics.

The request id is the caller's ``X-Request-ID`` when it is a plausible id (a load balancer's or
a frontend's), else a new UUID; it is bound to the log context, so every line logged while the
request runs carries it, and it is echoed in the response. The access line names the method,
the route *template* (never the URL: query strings carry codes and states), status, latency and
the client and user ids where the handlers learned them.

With tracing on, every request that gets an access line also gets a server span
(``broker.http.request_tracing``), named and labelled from the same route template, status and
ids, and its access line carries the span's ``trace_id`` and ``span_id``; with tracing off the
observer holds no tracer and does nothing more per request than before.

Quiet paths are counted in the metrics but get no access line, no span, no log context and no
latency histogram: the probes and the scrape (called every few seconds by the kubelet and
Prometheus), and JWKS and discovery — static documents that every resource server and relying
party polls, answered from memory in about 10 µs, which a log line (about 9 µs) and a
histogram sample (about 2 µs) would more than double.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import structlog
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.http.metrics import BrokerMetrics
from broker.http.request_tracing import RequestSpan, RequestSpans

REQUEST_ID_HEADER = b"x-request-id"
UNMATCHED_ROUTE = "unmatched"  # one label for every 404, whatever was asked for
QUIET_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    }
)
_PLAUSIBLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_JSON_IN_BASE64 = "eyJ"  # '{"' base64url-encoded: the start of every JWT and JWS


class ObservedRoute(Route):
    """A ``Route`` that records its path template in the scope for the observer."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route_template"] = self.path
        return match, child_scope


def request_id_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            given: str = value.decode("latin-1")
            if _PLAUSIBLE_ID.fullmatch(given) and not given.startswith(_JSON_IN_BASE64):
                return given
            break
    return os.urandom(16).hex()  # 128 random bits, as nginx's $request_id


class RequestObserver:
    """Pure ASGI middleware (no per-request objects beyond the send wrapper)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: BrokerMetrics,
        access_log: Any,
        spans: RequestSpans | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.spans = spans  # None: tracing is off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        echoed = (REQUEST_ID_HEADER, request_id.encode("latin-1"))
        quiet = scope["path"] in QUIET_PATHS
        traced: RequestSpan | None = None
        if not quiet:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=request_id)
            if self.spans is not None:
                traced = self.spans.start(scope)
        status = 500  # unless a response starts: an exception escaped the handlers
        error: BaseException | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route_template", UNMATCHED_ROUTE)
            method = scope["method"]
            self.metrics.request_finished(method, route, status, None if quiet else elapsed)
            if not quiet:
                known = structlog.contextvars.get_contextvars()
                client_id, user_id = known.get("client_id"), known.get("user_id")
                log = self.access_log if traced is None else self.access_log.bind(**traced.ids)
                log.info(
                    "http.request",
                    request_id=request_id,
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    client_id=client_id,
                    user_id=user_id,
                )
                structlog.contextvars.clear_contextvars()
                if traced is not None:
                    assert self.spans is not None
                    self.spans.finish(
                        traced,
                        route=scope.get("route_template"),
                        status=status,
                        client_id=client_id,
                        user_id=user_id,
                        error=error,
                    )
