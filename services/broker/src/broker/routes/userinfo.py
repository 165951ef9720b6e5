"""``GET/POST /userinfo`` (OIDC Core §5.3): claims of the access token's user, per its scope."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from shared.db.base import table
from shared.models import AuthSession, User
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.errors import NO_STORE, InvalidRequest, InvalidToken
from broker.routes.context import runtime_of
from broker.tokens import TokenInvalid, UserClaims, verify_access_token

SESSIONS = table(AuthSession)
USERS = table(User)


async def bearer_token(request: Request) -> str:
    """RFC 6750 §2.1 header, or §2.2 form body on POST; never both."""
    header = request.headers.get("authorization")
    from_header = None
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidToken("use the Bearer scheme")
        from_header = value.strip()
    from_body = None
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        from_body = form.get("access_token")
    if from_header and from_body:
        raise InvalidRequest("send the access token once")
    token = from_header or from_body
    if not token:
        raise InvalidToken("an access token is required")
    return token


async def authenticated_claims(request: Request) -> Mapping[str, Any]:
    """A live broker access token's claims: signature, typ, iss, exp, and its session alive."""
    runtime = runtime_of(request)
    token = await bearer_token(request)
    try:
        claims = verify_access_token(
            token, runtime.keys.snapshot, runtime.settings, runtime.clock.now()
        )
        session_id = uuid.UUID(str(claims["sid"]))
    except (TokenInvalid, ValueError):
        raise InvalidToken("the access token is invalid or expired") from None
    async with runtime.engine.connect() as connection:
        alive = (
            await connection.execute(
                select(SESSIONS.c.id)
                .join(USERS, USERS.c.id == SESSIONS.c.user_id)
                .where(
                    SESSIONS.c.id == session_id,
                    SESSIONS.c.revoked_at.is_(None),
                    USERS.c.status == "active",
                )
            )
        ).first()
    if alive is None:
        raise InvalidToken("the access token's session has ended")
    return claims


async def userinfo(request: Request) -> Response:
    runtime = runtime_of(request)
    claims = await authenticated_claims(request)
    async with runtime.engine.connect() as connection:
        user = (
            await connection.execute(
                select(USERS).where(USERS.c.id == uuid.UUID(str(claims["sub"])))
            )
        ).first()
    if user is None:
        raise InvalidToken("the access token's user no longer exists")
    user_claims = UserClaims(
        sub=str(user.id),
        email=user.email,
        email_verified=user.email_verified,
        name=user.display_name,
        picture=user.picture,
        preferred_username=user.preferred_username,
    )
    scopes = set(str(claims.get("scope", "")).split())
    return JSONResponse(user_claims.for_scopes(scopes), headers=NO_STORE)
