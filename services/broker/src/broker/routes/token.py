"""``POST /token`` (RFC 6749 §3.2) and ``POST /auth/oauth2/refresh`` (JSON; same refresh path).

Both are ASGI apps built with the runtime and the metrics they use, so the app can dispatch
them before Starlette's router (``broker.http.direct_routes``). Errors are raised, not rendered:
whichever path called the endpoint renders them with the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from shared.runtime import Runtime
from shared.settings import ClientConfig
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from broker.http.context import request_meta
from broker.http.errors import (
    NO_STORE,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from broker.http.forms import form_params, json_params
from broker.http.metrics import BrokerMetrics
from broker.http.openapi import (
    CLIENT_AUTHENTICATION,
    FORM_PARAM,
    Body,
    Contract,
    Operation,
    Schema,
    client_authentication_fields,
    json_answer,
    ref,
    strict_object,
)
from broker.oauth import abuse_limits
from broker.oauth.grant_types import GRANTS, Grant, grant_for
from broker.oauth.grants import RefreshTokenReused, refresh_grant


class _GrantEndpoint:
    """Authenticates the client, runs a grant, counts it and answers the token response."""

    def __init__(self, runtime: Runtime, metrics: BrokerMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        raise NotImplementedError

    async def client(self, request: Request, params: Mapping[str, str]) -> ClientConfig:
        return await abuse_limits.authenticate(self.runtime, request, params)

    async def grant(
        self,
        request: Request,
        handler: Grant,
        grant_type: str,
        client: ClientConfig,
        params: Mapping[str, str],
    ) -> Response:
        """Run a grant for an authenticated client; count it, and name its user in the log."""
        try:
            issued = await handler(self.runtime, client, params, request_meta(request))
        except OAuthError as exc:
            self.metrics.token_refused(grant_type, client.id, exc.error)
            if isinstance(exc, RefreshTokenReused):
                self.metrics.refresh_reuse_detected(client.id)
            raise
        self.metrics.token_granted(grant_type, client.id, issued.provider)
        if issued.user_id is not None:  # a service token has no user
            structlog.contextvars.bind_contextvars(user_id=str(issued.user_id))
        # orjson: the refresh grant is CPU-bound and this is its third JSON document per request.
        return Response(orjson.dumps(issued.body), media_type="application/json", headers=NO_STORE)


class TokenEndpoint(_GrantEndpoint):
    """``POST /token``: a form body, any supported grant."""

    async def respond(self, request: Request) -> Response:
        params = await form_params(request)
        client = await self.client(request, params)
        grant_type = params.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        handler = grant_for(client, grant_type)
        return await self.grant(request, handler, grant_type, client, params)


class RefreshEndpoint(_GrantEndpoint):
    """``POST /auth/oauth2/refresh``: the first-party JSON form of the refresh grant."""

    async def respond(self, request: Request) -> Response:
        document = await json_params(request)
        client = await self.client(request, document)
        grant_for(client, "refresh_token")  # unauthorized_client for a service
        return await self.grant(request, refresh_grant, "refresh_token", client, document)


_GRANT_ERRORS = (InvalidRequest, InvalidGrant, InvalidScope, UnauthorizedClient)
_ACCESS_TOKEN: Schema = {"type": "string", "description": "a JWT (RFC 9068)"}
_EXPIRES_IN: Schema = {"type": "integer", "minimum": 1}
_SCOPE: Schema = {"type": "string", "description": "the granted scope"}

CONTRACT = Contract(
    operations=(
        Operation(
            "POST",
            "/token",
            "token",
            "The token endpoint (RFC 6749 §3.2): authorization_code, refresh_token and "
            "client_credentials grants",
            "OAuth 2.0",
            description="A grant the client's grant_types do not list is unauthorized_client. "
            "client_credentials (RFC 6749 §4.4) answers a service token only: no refresh or "
            "ID token.",
            body=Body("application/x-www-form-urlencoded", ref("TokenRequest")),
            answers=(
                json_answer(
                    200,
                    "the token pair and an ID token, or a service token",
                    ref("TokenResponse"),
                ),
            ),
            errors=(*_GRANT_ERRORS, InvalidTarget, UnsupportedGrantType),
            security=CLIENT_AUTHENTICATION,
        ),
        Operation(
            "POST",
            "/auth/oauth2/refresh",
            "refresh",
            "The refresh grant as JSON (the same code path as the refresh_token grant)",
            "First-party API",
            body=Body("application/json", ref("RefreshRequest")),
            answers=(json_answer(200, "the rotated token pair", ref("TokenPair")),),
            errors=_GRANT_ERRORS,
            security=CLIENT_AUTHENTICATION,
        ),
    ),
    schemas={
        # RFC 6749 §3.2: parameters the server does not know are ignored.
        "TokenRequest": {
            "type": "object",
            "properties": {
                "grant_type": {"enum": list(GRANTS)},
                "code": FORM_PARAM,
                "redirect_uri": FORM_PARAM,
                "code_verifier": FORM_PARAM,
                "refresh_token": FORM_PARAM,
                "scope": {
                    **FORM_PARAM,
                    "description": "refresh: narrow the granted scope; client_credentials: "
                    "the service scopes wanted (default: all the client's)",
                },
                "audience": {
                    **FORM_PARAM,
                    "description": "client_credentials: the token's aud, space-separated, "
                    "among the client's audience",
                },
                "resource": {
                    **FORM_PARAM,
                    "description": "client_credentials: one audience (RFC 8707)",
                },
                **client_authentication_fields(FORM_PARAM),
            },
            "required": ["grant_type"],
            "additionalProperties": {"type": "string"},
        },
        "RefreshRequest": {
            "type": "object",
            "properties": {"refresh_token": {"type": "string"}, "scope": {"type": "string"}}
            | client_authentication_fields({"type": "string"}),
            "required": ["refresh_token"],
            "additionalProperties": {"type": "string"},
        },
        "TokenResponse": {"oneOf": [ref("TokenPair"), ref("ServiceTokenResponse")]},
        "TokenPair": strict_object(
            {
                "access_token": _ACCESS_TOKEN,
                "token_type": {"const": "Bearer"},
                "expires_in": _EXPIRES_IN,
                "refresh_token": {"type": "string", "description": "opaque, rotated on use"},
                "id_token": {"type": "string"},
                "scope": _SCOPE,
            },
            required=[
                "access_token",
                "token_type",
                "expires_in",
                "refresh_token",
                "id_token",
                "scope",
            ],
        ),
        "ServiceTokenResponse": strict_object(
            {
                "access_token": {**_ACCESS_TOKEN, "description": "a JWT (RFC 9068), no sid"},
                "token_type": {"const": "Bearer"},
                "expires_in": _EXPIRES_IN,
                "scope": {**_SCOPE, "description": "the granted service scopes (may be empty)"},
            },
            required=["access_token", "token_type", "expires_in", "scope"],
            description="client_credentials (RFC 6749 §4.4.3): no refresh token, no ID token",
        ),
    },
)
