"""The Starlette application: routes, error rendering and the lifespan that starts the runtime."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import structlog
from shared.runtime import Runtime
from shared.settings import Settings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.errors import OAuthError
from broker.routes import authorize, discovery, health, token, upstream, userinfo

log = structlog.get_logger("broker.app")


async def _oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return JSONResponse(
        {"error": code, "error_description": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a stack trace to the client; the log has the exception type and route only.
    log.error("request.failed", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return JSONResponse(
        {"error": "server_error", "error_description": "an unexpected error occurred"},
        status_code=500,
    )


def client_origins(settings: Settings) -> list[str]:
    """Web origins of the registered redirect URIs: the browsers allowed to call the APIs."""
    origins = []
    for client in settings.clients:
        for uri in client.redirect_uris:
            parts = urlsplit(uri)
            if parts.scheme in ("http", "https"):
                origins.append(f"{parts.scheme}://{parts.netloc}")
    return sorted(set(origins))


def routes(settings: Settings) -> list[Route]:
    # Single-page apps (public clients) call these from the browser: CORS for their origins
    # only, no credentials (the APIs take bearer tokens and client credentials, not cookies).
    cors = [
        Middleware(
            CORSMiddleware,
            allow_origins=client_origins(settings),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    ]
    return [
        Route("/.well-known/openid-configuration", discovery.openid_configuration),
        Route("/.well-known/jwks.json", discovery.jwks),
        Route("/authorize", authorize.authorize, methods=["GET", "POST"]),
        Route("/token", token.token, methods=["POST", "OPTIONS"], middleware=cors),
        Route("/userinfo", userinfo.userinfo, methods=["GET", "POST", "OPTIONS"], middleware=cors),
        Route("/auth/oauth2/refresh", token.refresh, methods=["POST", "OPTIONS"], middleware=cors),
        Route("/auth/oauth2/{provider}/login", authorize.provider_login),
        Route("/auth/oauth2/{provider}/callback", upstream.callback),
        Route("/auth/oauth2/{provider}/dev-login", upstream.dev_login_form, methods=["GET"]),
        Route("/auth/oauth2/{provider}/dev-login", upstream.dev_login_submit, methods=["POST"]),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
    ]


def create_app(runtime: Runtime) -> Starlette:
    """The broker application over a built (not yet started) runtime."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        log.info(
            "broker.started",
            issuer=runtime.settings.issuer,
            providers=sorted(runtime.providers),
            clients=[client.id for client in runtime.settings.clients],
        )
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=routes(runtime.settings),
        lifespan=lifespan,
        exception_handlers={
            OAuthError: _oauth_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.runtime = runtime
    app.state.jwks_responses = discovery.JWKSResponses()
    algs = list(dict.fromkeys([runtime.settings.signing_alg, "ES256", "RS256"]))
    app.state.discovery_response = discovery.discovery_response(
        discovery.discovery_document(runtime.settings, algs)
    )
    return app
