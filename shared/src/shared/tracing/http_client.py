"""Spans for upstream HTTP requests (httpx2; the OpenTelemetry httpx instrumentation patches
``httpx``, a package the broker does not use).

A span per request: its method, ``url.full`` without the query string and credentials, the
server's address and port, the status code, and on failure the exception type. Never a header
or a body: the token endpoint's form carries codes, refresh tokens, PKCE verifiers and client
secrets, and the ``Authorization`` header bearer tokens or Basic credentials. No trace context
is sent upstream either: the providers and avatar hosts are third parties.

Two adapters over one span: :class:`TracedAsyncClient` (the process's client: its ``send``,
through which every request goes, so its proxy settings from the environment still apply) and
:class:`TracedTransport` (around the transport authlib's per-operation clients borrow).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
from opentelemetry.trace import Span, SpanKind, Tracer

from shared.tracing.spans import current_span, mark_failed

TRACER_NAME = "shared.tracing.http_client"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def url_without_query(url: httpx2.URL) -> str:
    """Scheme, host, port and path: the query string (codes, signatures) and any user info
    are left out."""
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    port = f":{url.port}" if url.port is not None else ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}{port}{path}"


@contextmanager
def upstream_span(tracer: Tracer, request: httpx2.Request) -> Iterator[Span]:
    """The client span of one request; the caller records the response with
    :func:`record_response`."""
    url = request.url
    method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.full": url_without_query(url),
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
    }
    with current_span(
        tracer,
        "HTTP" if method == "_OTHER" else method,
        kind=SpanKind.CLIENT,
        attributes=attributes,
    ) as span:
        yield span


def record_response(span: Span, response: httpx2.Response) -> None:
    span.set_attribute("http.response.status_code", response.status_code)
    if response.status_code >= 400:
        mark_failed(span, str(response.status_code))


class TracedAsyncClient(httpx2.AsyncClient):
    """An ``AsyncClient`` whose every request gets a client span."""

    def __init__(self, *, tracer: Tracer, **options: Any) -> None:
        super().__init__(**options)
        self._tracer = tracer

    async def send(self, request: httpx2.Request, **options: Any) -> httpx2.Response:
        with upstream_span(self._tracer, request) as span:
            response = await super().send(request, **options)
            record_response(span, response)
            return response


class TracedTransport(httpx2.AsyncBaseTransport):
    """A transport whose every request gets a client span, sent through ``inner``."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        with upstream_span(self._tracer, request) as span:
            response = await self._inner.handle_async_request(request)
            record_response(span, response)
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()
