"""Who calls the first-party API: a live broker access token (RFC 6750) and its user.

The broker's own APIs accept any access token it issued, whatever its ``aud`` (DESIGN §5), as long
as its signature, ``typ``, ``iss`` and ``exp`` check out and its session and user are still alive:
a revoked session's token is refused at once, not when it expires. A service token
(``client_credentials``) has no user: it is refused with ``invalid_token``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import structlog
from shared.auth_sessions import USER_CLAIM_COLUMNS
from shared.db.tables import SESSIONS, USERS
from shared.runtime import Runtime
from sqlalchemy import select
from starlette.requests import Request

from broker.http.context import runtime_of
from broker.http.errors import InvalidRequest, InvalidToken
from broker.oauth.tokens import TokenInvalid, is_service_token, verify_access_token


async def bearer_token(request: Request, *, allow_form: bool = False) -> str:
    """RFC 6750 §2.1 header, or with ``allow_form`` the §2.2 form body on POST; never both."""
    header = request.headers.get("authorization")
    from_header = None
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidToken("use the Bearer scheme")
        from_header = value.strip()
    from_body = None
    if (
        allow_form
        and request.method == "POST"
        and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
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

    @property
    def session_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.claims["sid"]))

    @property
    def user_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.user["id"]))


async def authenticated_caller(request: Request, *, allow_form: bool = False) -> Caller:
    """Signature, typ, iss and exp checked, then session and user alive, in one query.

    The caller's user and client ids join the request's log context.
    """
    runtime = runtime_of(request)
    token = await bearer_token(request, allow_form=allow_form)
    try:
        claims = verify_access_token(
            token, runtime.keys.snapshot, runtime.settings, runtime.clock.now()
        )
    except TokenInvalid:
        raise InvalidToken("the access token is invalid or expired") from None
    if is_service_token(claims):
        # docs/security.md "Service tokens": a client_credentials token has no user, so it is
        # no caller of /userinfo, the first-party API or the admin API.
        raise InvalidToken(
            "a service token (client_credentials) has no user; this needs a user's token"
        )
    try:
        session_id = uuid.UUID(str(claims["sid"]))
    except ValueError:
        raise InvalidToken("the access token is invalid or expired") from None
    user = await live_session_user(runtime, session_id)
    if user is None:
        raise InvalidToken("the access token's session has ended")
    structlog.contextvars.bind_contextvars(
        user_id=str(user["id"]), client_id=str(claims.get("client_id"))
    )
    return Caller(claims=claims, user=user)


CALLER_COLUMNS = ("id", "status", *USER_CLAIM_COLUMNS)
# /userinfo is polled by relying parties: one prepared statement on the raw hot-path
# connections (PostgreSQL) rather than a pooled ORM connection per call. Columns in the order
# of CALLER_COLUMNS.
_LIVE_USER_POSTGRES = """
    SELECT u.id, u.status, u.email, u.email_verified, u.display_name, u.picture,
           u.preferred_username, u.groups
    FROM auth_sessions AS s JOIN users AS u ON u.id = s.user_id
    WHERE s.id = $1 AND s.revoked_at IS NULL AND u.status = 'active'
"""


async def live_session_user(runtime: Runtime, session_id: uuid.UUID) -> dict[str, Any] | None:
    """The user of a live session (not revoked, user active), as ``CALLER_COLUMNS``."""
    if runtime.hot_path is not None:
        row = await runtime.hot_path.fetchone(_LIVE_USER_POSTGRES, [session_id])
        return dict(zip(CALLER_COLUMNS, row, strict=True)) if row is not None else None
    async with runtime.engine.connect() as connection:
        found = (
            await connection.execute(
                select(*(USERS.c[name] for name in CALLER_COLUMNS))
                .join(SESSIONS, SESSIONS.c.user_id == USERS.c.id)
                .where(
                    SESSIONS.c.id == session_id,
                    SESSIONS.c.revoked_at.is_(None),
                    USERS.c.status == "active",
                )
            )
        ).first()
    return dict(found._mapping) if found is not None else None
