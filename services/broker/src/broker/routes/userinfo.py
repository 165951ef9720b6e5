"""``GET/POST /userinfo`` (OIDC Core §5.3): claims of the access token's user, per its scope."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.errors import NO_STORE, InvalidRequest
from broker.http.openapi import (
    BEARER,
    OPTIONAL_BEARER,
    UUID,
    Body,
    Contract,
    Operation,
    Schema,
    json_answer,
    ref,
    strict_object,
)
from broker.oauth.callers import authenticated_caller
from broker.oauth.tokens import UserClaims


async def userinfo(request: Request) -> Response:
    caller = await authenticated_caller(request, allow_form=True)
    user_claims = UserClaims.from_row(str(caller.user_id), caller.user)
    scopes = set(str(caller.claims.get("scope", "")).split())
    return JSONResponse(user_claims.for_scopes(scopes), headers=NO_STORE)


def _userinfo_operation(method: str) -> Operation:
    return Operation(
        method,
        "/userinfo",
        f"userinfo_{method.lower()}",
        "Claims about the token's user, by its scope (OpenID Connect Core §5.3)",
        "OpenID Connect",
        description="The token in the Authorization header, or on POST in the form body "
        "(RFC 6750 §2.2), never both. Refused as soon as its session ends.",
        body=(
            Body(
                "application/x-www-form-urlencoded",
                strict_object({"access_token": {"type": "string"}}),
                required=False,
            )
            if method == "POST"
            else None
        ),
        answers=(json_answer(200, "the user's claims", ref("UserInfo")),),
        errors=(InvalidRequest,),
        security=BEARER if method == "GET" else OPTIONAL_BEARER,
    )


_OPTIONAL_TEXT: Schema = {"type": "string", "minLength": 1}

CONTRACT = Contract(
    operations=(_userinfo_operation("GET"), _userinfo_operation("POST")),
    schemas={
        "UserInfo": strict_object(
            {
                "sub": {**UUID, "description": "the broker user id"},
                "email": _OPTIONAL_TEXT,
                "email_verified": {"type": "boolean"},
                "name": _OPTIONAL_TEXT,
                "picture": _OPTIONAL_TEXT,
                "preferred_username": _OPTIONAL_TEXT,
                "groups": {"type": "array", "items": {"type": "string"}},
            },
            required=["sub"],
        )
    },
)
