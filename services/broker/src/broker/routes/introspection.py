"""``POST /introspect`` (RFC 7662): is this token live, and what does it say?

Only confidential clients may introspect (a public client cannot authenticate: 401
``invalid_client``). A client may introspect any broker access token (a user's, or a service
token) and its own refresh tokens; anything else — unknown, malformed, expired, revoked, another
client's refresh token, signed by a revoked key — is exactly ``{"active": false}`` (§2.2), so
the answer tells nothing more.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidClient, InvalidRequest
from broker.http.forms import form_params
from broker.http.openapi import (
    CLIENT_AUTHENTICATION,
    UUID,
    Contract,
    Operation,
    Schema,
    json_answer,
    ref,
    strict_object,
    token_form,
)
from broker.oauth import abuse_limits
from broker.oauth.presented_tokens import AccessToken, PresentedToken, ServiceToken, identify

INACTIVE: dict[str, Any] = {"active": False}
ACCESS_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid")


async def introspect(request: Request) -> Response:
    runtime = runtime_of(request)
    params = await form_params(request)
    client = await abuse_limits.authenticate(runtime, request, params)
    if client.is_public:
        raise InvalidClient("introspection needs client authentication")
    token = params.get("token")
    if not token:
        raise InvalidRequest("token is required")
    presented = await identify(runtime, token)
    return JSONResponse(_answer(presented, client.id), headers=NO_STORE)


def _answer(presented: PresentedToken | None, caller: str) -> dict[str, Any]:
    if presented is None or not presented.live:
        return INACTIVE
    if isinstance(presented, AccessToken | ServiceToken):
        claims = presented.claims
        return {
            "active": True,
            "token_type": "Bearer",
            **{name: claims[name] for name in ACCESS_TOKEN_CLAIMS if name in claims},
        }
    if presented.client_id != caller:
        return INACTIVE  # another client's refresh token
    state = presented.state
    return {
        "active": True,
        "token_type": "refresh_token",
        "client_id": state.client_id,
        "sub": str(state.user_id),
        "scope": state.scope,
        "sid": str(state.session_id),
        "iat": int(state.created_at.timestamp()),
        "exp": int(state.expires_at.timestamp()),
    }


_TIME: Schema = {"type": "integer", "description": "seconds since the epoch"}
_AUDIENCE: Schema = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_ACCESS_TOKEN_REQUIRED = ("active", "token_type", "iss", "sub", "exp", "client_id")


def _access_token(sub: Schema, **more: Schema) -> dict[str, Schema]:
    """The answer's fields for a live access token: its claims (``ACCESS_TOKEN_CLAIMS``)."""
    return {
        "active": {"const": True},
        "token_type": {"const": "Bearer"},
        "iss": {"type": "string"},
        "sub": sub,
        "aud": _AUDIENCE,
        "exp": _TIME,
        "iat": _TIME,
        "nbf": _TIME,
        "jti": {"type": "string"},
        "client_id": {"type": "string"},
        "scope": {"type": "string"},
        **more,
    }


CONTRACT = Contract(
    operations=(
        Operation(
            "POST",
            "/introspect",
            "introspect",
            "Token introspection (RFC 7662), for confidential clients",
            "OAuth 2.0",
            description="Any live broker access token (a user's, or a service token from the "
            "client_credentials grant, whose sub is its client and which has no sid), and the "
            'caller\'s own live refresh tokens; anything else is exactly {"active": false}. A '
            "public client gets 401 invalid_client.",
            body=token_form(),
            answers=(json_answer(200, "what the token is", ref("Introspection")),),
            errors=(InvalidRequest,),
            security=CLIENT_AUTHENTICATION,
        ),
    ),
    schemas={
        "Introspection": {
            "oneOf": [
                strict_object({"active": {"const": False}}, required=["active"]),
                strict_object(
                    _access_token(UUID, sid=UUID), required=[*_ACCESS_TOKEN_REQUIRED, "sid"]
                ),
                strict_object(
                    _access_token({"type": "string", "description": "the client id"}),
                    required=[*_ACCESS_TOKEN_REQUIRED, "jti"],
                    description="a service token (client_credentials): no sid, no user",
                ),
                strict_object(
                    {
                        "active": {"const": True},
                        "token_type": {"const": "refresh_token"},
                        "client_id": {"type": "string"},
                        "sub": UUID,
                        "scope": {"type": "string"},
                        "sid": UUID,
                        "iat": _TIME,
                        "exp": _TIME,
                    },
                    required=["active", "token_type", "client_id", "sub", "scope", "sid"],
                ),
            ]
        }
    },
)
