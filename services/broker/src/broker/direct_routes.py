"""The machine-facing hot paths, dispatched before Starlette's router.

Relying parties and resource servers call a few endpoints far more often than any other:
discovery, JWKS, and the token endpoints (the refresh grant). Starlette's per-request layers in
front of an endpoint — its error and exception middlewares (each with a ``Request`` and a send
wrapper), the router's scan of the route table, the route's own request/response cycle — cost
the refresh grant about 100 µs of broker CPU per request (measured: 890 against 790 µs on the
development machine, at one core), a tenth of what the whole grant costs.

So a request whose method and path match one of these routes exactly goes straight to that
route's ASGI app (the endpoint with its route middleware, e.g. CORS): the same object the
Starlette route calls. Everything else, including their CORS preflights and wrong methods,
goes through Starlette as before. An exception is rendered by the same handlers the Starlette
app uses, looked up the way Starlette does (the exception's class, then its bases).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def direct_endpoints(
    routes: Iterable[BaseRoute], direct: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ASGIApp]:
    """``(method, path)`` to the route's ASGI app, for each pair in ``direct``.

    Each must name a route without path parameters whose endpoint is an ASGI app (a function
    endpoint would need Starlette's exception middleware in front of it).
    """
    wanted = set(direct)
    found: dict[tuple[str, str], ASGIApp] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        for method in route.methods or ():
            key = (method, route.path)
            if key not in wanted:
                continue
            if route.param_convertors or inspect.isfunction(route.endpoint):
                raise ValueError(f"{method} {route.path} cannot be dispatched directly")
            found[key] = route.app
    missing = wanted - found.keys()
    if missing:
        raise ValueError(f"no route for {sorted(missing)}")
    return found


class DirectRoutes:
    """Exact ``(method, path)`` matches go to their endpoint; the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        endpoints: Mapping[tuple[str, str], ASGIApp],
        exception_handlers: Mapping[type[Exception], ExceptionHandler],
    ) -> None:
        self.app = app
        self.endpoints = dict(endpoints)
        self.exception_handlers = dict(exception_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http":
            endpoint = self.endpoints.get((scope["method"], scope["path"]))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["route_template"] = scope["path"]  # for the request observer, as ObservedRoute
        try:
            await endpoint(scope, receive, send)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            # If the response had already started, sending this one fails, with ``exc`` as
            # its context: the server then logs both.
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)

    def _handler(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None
