"""``GET/POST /userinfo`` (OIDC Core §5.3): claims of the access token's user, per its scope."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Caller:
    """A live broker access token: its claims and the current ``users`` row of its subject."""

    claims: Mapping[str, Any]
    user: Mapping[str, Any]


async def authenticated_caller(request: Request) -> Caller:
    """Signature, typ, iss and exp checked, then session and user alive, in one query."""
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
        user = (
            await connection.execute(
                select(USERS)
                .join(SESSIONS, SESSIONS.c.user_id == USERS.c.id)
                .where(
                    SESSIONS.c.id == session_id,
                    SESSIONS.c.revoked_at.is_(None),
                    USERS.c.status == "active",
                )
            )
        ).first()
    if user is None:
        raise InvalidToken("the access token's session has ended")
    return Caller(claims=claims, user=dict(user._mapping))


async def userinfo(request: Request) -> Response:
    caller = await authenticated_caller(request)
    user_claims = UserClaims.from_row(str(caller.user["id"]), caller.user)
    scopes = set(str(caller.claims.get("scope", "")).split())
    return JSONResponse(user_claims.for_scopes(scopes), headers=NO_STORE)
