"""The Starlette application: the one route table, error rendering, the runtime's lifespan."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

import psycopg
import sqlalchemy.exc
import structlog
from shared.db.migrate import SchemaRevisions
from shared.logging import build_access_logger
from shared.runtime import Runtime
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from broker.admin.dashboard import audit as dashboard_audit
from broker.admin.dashboard import overview as dashboard_overview
from broker.admin.dashboard import providers as dashboard_providers
from broker.admin.dashboard import signin as dashboard_signin
from broker.admin.dashboard import tokens as dashboard_tokens
from broker.admin.dashboard import users as dashboard_users
from broker.admin.dashboard.guard import admin_form, admin_page
from broker.admin.dashboard.rendering import Pages
from broker.http.body_limit import BodyLimit
from broker.http.cors import browser_cors
from broker.http.direct_routes import DirectRoutes, ExceptionHandler, direct_endpoints
from broker.http.errors import OAuthError, TemporarilyUnavailable
from broker.http.metrics import BrokerMetrics, metrics_endpoint
from broker.http.request_observer import ObservedRoute as Route
from broker.http.request_observer import RequestObserver
from broker.http.request_tracing import TRACER_NAME, RequestSpans
from broker.oauth.dashboard_client import check_reserved_id
from broker.routes import (
    accounts,
    admin_audit,
    admin_clients,
    admin_providers,
    admin_stats,
    admin_tokens,
    admin_users,
    authorize,
    avatars,
    discovery,
    health,
    introspection,
    logout,
    openapi,
    profile_sync,
    revocation,
    token,
    upstream,
    userinfo,
)

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


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # The database dropped or refused a connection, or none was free in time: a condition of
    # ours that clears, not a bug, so 503 and a hint to retry (no stack trace, no detail).
    log.warning("database.unavailable", path=request.url.path, error=type(exc).__name__)
    return TemporarilyUnavailable("the database is not reachable; retry shortly").response(
        retry_after=1
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a stack trace to the client; the log has the exception type and route only.
    log.error("request.failed", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return JSONResponse(
        {"error": "server_error", "error_description": "an unexpected error occurred"},
        status_code=500,
    )


EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    OAuthError: _oauth_error,
    HTTPException: _http_error,
    psycopg.OperationalError: _database_unavailable,
    sqlalchemy.exc.OperationalError: _database_unavailable,
    sqlalchemy.exc.TimeoutError: _database_unavailable,
    Exception: _unexpected,
}

# What relying parties and resource servers call at high rates: dispatched before Starlette's
# router (broker.http.direct_routes). Their other methods (CORS preflights, 405s) go through it.
DIRECT = (
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/token"),
    ("POST", "/auth/oauth2/refresh"),
)


def routes(runtime: Runtime, metrics: BrokerMetrics) -> list[Route]:
    """Every route of the broker, in matching order: built once with the app.

    The dashboard's part needs its template set, and first the startup check that no configured
    client takes the built-in client's id.
    """
    settings = runtime.settings
    cors = browser_cors(settings)
    check_reserved_id(settings)
    pages = Pages(settings)
    page = functools.partial(admin_page, pages)  # GET pages
    form = functools.partial(admin_form, pages)  # POST forms: everything that changes something
    return [
        # Discovery: both built once and served as raw ASGI apps (no Request/Response cycle per
        # call): every resource server and relying party polls them.
        Route(
            "/.well-known/openid-configuration",
            discovery.discovery_response(settings, runtime.keys.algorithms),
            methods=["GET"],
        ),
        Route(
            "/.well-known/jwks.json",
            discovery.JWKSEndpoint(runtime.keys, settings.jwks_max_age),
            methods=["GET"],
        ),
        # OAuth 2.0 / OpenID Connect.
        Route("/authorize", authorize.authorize, methods=["GET", "POST"]),
        Route(
            "/token",
            token.TokenEndpoint(runtime, metrics),
            methods=["POST", "OPTIONS"],
            middleware=cors,
        ),
        Route("/userinfo", userinfo.userinfo, methods=["GET", "POST", "OPTIONS"], middleware=cors),
        Route(
            "/auth/oauth2/refresh",
            token.RefreshEndpoint(runtime, metrics),
            methods=["POST", "OPTIONS"],
            middleware=cors,
        ),
        Route("/revoke", revocation.revoke, methods=["POST", "OPTIONS"], middleware=cors),
        Route(
            "/auth/oauth2/revoke",
            revocation.revoke_own,
            methods=["DELETE", "OPTIONS"],
            middleware=cors,
        ),
        Route("/introspect", introspection.introspect, methods=["POST"]),
        Route("/logout", logout.logout, methods=["GET", "POST"]),
        # The signed-in user's account (first-party API).
        Route("/auth/oauth2/providers", accounts.providers, methods=["GET"]),
        Route("/auth/oauth2/profile", accounts.profile, methods=["GET", "PUT"]),
        Route("/auth/oauth2/profile/sync", profile_sync.sync, methods=["POST"]),
        Route("/auth/oauth2/links/{provider}", accounts.remove_link, methods=["DELETE"]),
        Route("/auth/oauth2/{provider}/link", accounts.link, methods=["GET"]),
        Route("/avatars/{digest}", avatars.avatar, methods=["GET"]),
        # The admin JSON API.
        Route("/admin/oauth2/users", admin_users.list_users, methods=["GET"]),
        Route("/admin/oauth2/users/{user_id}/sync", profile_sync.admin_sync, methods=["POST"]),
        Route("/admin/oauth2/users/{user_id}/disable", admin_users.disable_user, methods=["POST"]),
        Route("/admin/oauth2/users/{user_id}/enable", admin_users.enable_user, methods=["POST"]),
        Route("/admin/oauth2/tokens", admin_tokens.list_tokens, methods=["GET"]),
        Route("/admin/oauth2/tokens/{token_id}", admin_tokens.delete_token, methods=["DELETE"]),
        Route("/admin/oauth2/providers", admin_providers.list_providers, methods=["GET"]),
        Route(
            "/admin/oauth2/providers/{provider_id}", admin_providers.get_provider, methods=["GET"]
        ),
        Route(
            "/admin/oauth2/providers/{provider_id}",
            admin_providers.change_provider,
            methods=["PATCH"],
        ),
        Route("/admin/oauth2/stats", admin_stats.get_stats, methods=["GET"]),
        Route("/admin/oauth2/audit", admin_audit.list_audit, methods=["GET"]),
        Route("/admin/oauth2/clients", admin_clients.list_clients, methods=["GET"]),
        # Signing in through an upstream provider.
        Route("/auth/oauth2/{provider}/login", authorize.provider_login),
        Route("/auth/oauth2/{provider}/callback", upstream.callback),
        Route("/auth/oauth2/{provider}/dev-login", upstream.dev_login_form, methods=["GET"]),
        Route("/auth/oauth2/{provider}/dev-login", upstream.dev_login_submit, methods=["POST"]),
        # Operations.
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        # The OpenAPI document of the JSON endpoints above (broker.routes.openapi).
        Route("/openapi.json", openapi.openapi_response(settings), methods=["GET"]),
        # The admin dashboard, server-rendered.
        Route("/admin", page(dashboard_overview.overview), methods=["GET"]),
        Route("/admin/login", dashboard_signin.login, methods=["GET"]),
        Route("/admin/callback", dashboard_signin.make_callback(pages), methods=["GET"]),
        # Also for someone no longer an admin: ending one's own session needs no role.
        Route("/admin/logout", form(dashboard_signin.logout, admins_only=False), methods=["POST"]),
        Route("/admin/users", page(dashboard_users.users_page), methods=["GET"]),
        Route("/admin/users/{user_id}", page(dashboard_users.user_page), methods=["GET"]),
        Route("/admin/users/{user_id}/status", form(dashboard_users.set_status), methods=["POST"]),
        Route("/admin/tokens", page(dashboard_tokens.tokens_page), methods=["GET"]),
        Route("/admin/tokens/{token_id}/revoke", form(dashboard_tokens.revoke), methods=["POST"]),
        Route("/admin/providers", page(dashboard_providers.providers_page), methods=["GET"]),
        Route(
            "/admin/providers/{provider_id}",
            page(dashboard_providers.provider_page),
            methods=["GET"],
        ),
        Route(
            "/admin/providers/{provider_id}/disable",
            page(dashboard_providers.confirm_disable),
            methods=["GET"],
        ),
        Route(
            "/admin/providers/{provider_id}/state",
            form(dashboard_providers.set_state),
            methods=["POST"],
        ),
        Route("/admin/audit", page(dashboard_audit.audit_page), methods=["GET"]),
        Route("/admin/audit/export", page(dashboard_audit.export), methods=["GET"]),
    ]


def create_app(runtime: Runtime) -> ASGIApp:
    """The broker application over a built (not yet started) runtime.

    Outermost, the request observer sees every request (its id, access line, metrics and, with
    tracing on, its span; a 500 or a 413 included); then the body cap, in front of every route
    (docs/security.md "Body limits"); then the direct routes; then the Starlette app.
    """

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

    metrics = BrokerMetrics(runtime)
    access_log = build_access_logger(runtime.settings.log_level, runtime.settings.log_format)
    table = routes(runtime, metrics)
    app = Starlette(routes=table, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.schema_revisions = SchemaRevisions.load()
    direct = DirectRoutes(app, direct_endpoints(table, DIRECT), EXCEPTION_HANDLERS)
    capped = BodyLimit(direct, max_bytes=runtime.settings.max_body_bytes)
    tracer = runtime.resources.tracer(TRACER_NAME)
    return RequestObserver(
        capped,
        metrics=metrics,
        access_log=access_log,
        spans=None if tracer is None else RequestSpans(tracer),
    )
