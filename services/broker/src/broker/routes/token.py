"""``POST /token`` (RFC 6749 §3.2) and ``POST /auth/oauth2/refresh`` (JSON; same refresh path)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from shared.settings import ClientConfig
from starlette.requests import Request
from starlette.responses import Response

from broker.clients import authenticate_client
from broker.errors import NO_STORE, InvalidRequest, OAuthError, UnsupportedGrantType
from broker.forms import form_params, json_params
from broker.grants import GRANTS, Grant, RefreshTokenReused, refresh_grant
from broker.metrics import metrics_of
from broker.routes.context import request_meta, runtime_of


async def token(request: Request) -> Response:
    runtime = runtime_of(request)
    params = await form_params(request)
    client = authenticate_client(runtime.settings, request.headers.get("authorization"), params)
    grant_type = params.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required")
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise UnsupportedGrantType("supported: authorization_code, refresh_token")
    return await _grant(request, handler, grant_type, client, params)


async def refresh(request: Request) -> Response:
    """The first-party JSON form of the refresh grant."""
    runtime = runtime_of(request)
    document = await json_params(request)
    client = authenticate_client(runtime.settings, request.headers.get("authorization"), document)
    return await _grant(request, refresh_grant, "refresh_token", client, document)


async def _grant(
    request: Request,
    handler: Grant,
    grant_type: str,
    client: ClientConfig,
    params: Mapping[str, str],
) -> Response:
    """Run a grant for an authenticated client; count it, and name its user in the log."""
    metrics = metrics_of(request)
    try:
        issued = await handler(runtime_of(request), client, params, request_meta(request))
    except OAuthError as exc:
        metrics.token_refused(grant_type, client.id, exc.error)
        if isinstance(exc, RefreshTokenReused):
            metrics.refresh_reuse_detected(client.id)
        raise
    metrics.token_granted(grant_type, client.id, issued.provider)
    structlog.contextvars.bind_contextvars(user_id=str(issued.user_id))
    # orjson: the refresh grant is CPU-bound and this is its third JSON document per request.
    return Response(orjson.dumps(issued.body), media_type="application/json", headers=NO_STORE)
