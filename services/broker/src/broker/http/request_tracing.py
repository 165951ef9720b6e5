"""The server span of each HTTP request, when tracing is on.

The request observer starts it before the request runs and it stays current while the request
runs, so the statements and upstream calls the request makes are its children. When the
request ends the observer names and labels it from what it knows then: the route template
(``POST /token``, ``GET /auth/oauth2/{provider}/callback`` — never the path with its ids), the
status, and the client and user ids the handlers learned. A ``traceparent`` header continues
the caller's trace (W3C Trace Context, or the propagators ``OTEL_PROPAGATORS`` names).

Nothing else of the request is read: not its query string, body, cookies or ``Authorization``
header (docs/security.md "What traces carry").
"""

from __future__ import annotations

import re
from contextvars import Token
from dataclasses import dataclass

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue
from shared.tracing.spans import error_type, mark_failed
from starlette.types import Scope

TRACER_NAME = "broker.http"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# A Host header worth recording as server.address: a DNS name or an IP literal, nothing else.
_HOST = re.compile(r"(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>\d{1,5}))?")


@dataclass
class RequestSpan:
    """A request's span, the context token that made it current, and the method as span
    names say it (``HTTP`` for one outside the known set)."""

    span: Span
    token: Token[Context]
    method: str

    @property
    def ids(self) -> dict[str, str]:
        """``trace_id`` and ``span_id`` for the access line."""
        ids = self.span.get_span_context()
        return {
            "trace_id": trace.format_trace_id(ids.trace_id),
            "span_id": trace.format_span_id(ids.span_id),
        }


class RequestSpans:
    """Starts and finishes the server spans of the requests of one app."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._propagated = frozenset(
            name.encode("latin-1") for name in propagate.get_global_textmap().fields
        )

    def start(self, scope: Scope) -> RequestSpan:
        """The request's span, current from now until :meth:`finish`."""
        carrier: dict[str, str] = {}
        host = None
        for name, value in scope["headers"]:
            if name in self._propagated:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"host":
                host = _HOST.fullmatch(value.decode("latin-1"))
        parent = propagate.extract(carrier, context=Context())
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "_OTHER"
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.scheme": scope.get("scheme", "http"),
        }
        if host is not None:
            attributes["server.address"] = host["host"].strip("[]")
            if host["port"]:
                attributes["server.port"] = int(host["port"])
        named = "HTTP" if method == "_OTHER" else method
        span = self._tracer.start_span(
            named,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        return RequestSpan(span, token, named)

    def finish(
        self,
        request: RequestSpan,
        *,
        route: str | None,
        status: int,
        client_id: str | None,
        user_id: str | None,
        error: BaseException | None,
    ) -> None:
        """Name the span after its route (``METHOD /template``; the method alone when no
        route matched), label it, end it and make the previous context current again."""
        span = request.span
        try:
            if route is not None:
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if client_id:
                span.set_attribute("oauth.client_id", client_id)
            if user_id:
                span.set_attribute("user.id", user_id)
            if status >= 500:
                mark_failed(span, error_type(error) if error is not None else str(status))
        finally:
            span.end()
            context.detach(request.token)
