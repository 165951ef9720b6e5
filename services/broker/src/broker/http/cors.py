"""CORS for the endpoints browsers call (token, userinfo, refresh, revoke): registered origins.

Starlette's ``CORSMiddleware`` does the work for requests that carry an ``Origin`` header. A
request without one is not a cross-origin browser request, so it goes straight to the endpoint:
Starlette would only add ``Vary: Origin``, which matters to caches, and these responses are
never cached (``Cache-Control: no-store``, or a request with ``Authorization``, which shared caches
do not store; RFC 9111 §3.5). This keeps the refresh grant's hot path one middleware shorter.
"""

from __future__ import annotations

from typing import Any

from shared.settings import Settings
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.http.pages import redirect_sources

PREFLIGHT = {b"origin", b"access-control-request-method"}  # Fetch §3.2.2: a CORS preflight


class BrowserCORS:
    """``CORSMiddleware`` for requests with an ``Origin`` header; others pass through.

    The routes list OPTIONS for CORS preflights only. Any other OPTIONS request is a 405 naming
    the route's methods: OPTIONS is safe (RFC 9110 §9.3.7), and the endpoint behind would
    otherwise run as if POSTed to (a grant at /token, a revocation at /auth/oauth2/revoke).
    """

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS" and not _is_preflight(scope):
            route = scope.get("route")
            methods = sorted(set(getattr(route, "methods", None) or ()) - {"OPTIONS"})
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(methods)})
        for name, _ in scope["headers"]:
            if name == b"origin":
                await self.cors(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_preflight(scope: Scope) -> bool:
    return PREFLIGHT.issubset(name for name, _ in scope["headers"])


def client_origins(settings: Settings) -> list[str]:
    """Web origins of the registered redirect URIs: the browsers allowed to call the APIs."""
    uris = (uri for client in settings.clients for uri in client.redirect_uris)
    return [source for source in redirect_sources(uris) if source.startswith("http")]


def browser_cors(settings: Settings) -> list[Middleware]:
    """Route middleware: single-page apps (public clients) call these endpoints from the browser;
    their origins only, no credentials (bearer tokens and client credentials, not cookies)."""
    return [
        Middleware(
            BrowserCORS,
            allow_origins=client_origins(settings),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    ]
