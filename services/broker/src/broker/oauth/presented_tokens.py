"""Tokens presented for revocation or introspection: which kind, whose, and whether still alive.

Access tokens are JWTs (three dot-separated parts); refresh tokens are opaque base64url strings
without dots. So the kind follows from the token itself and ``token_type_hint`` is only a hint
(RFC 7009 §2.1, RFC 7662 §2.1: a server that finds nothing under the hinted type searches the
others). Anything malformed, forged, expired or unknown is simply "not a live token".

An access token is a user's (``sid``: alive while its session is) or a service token from the
``client_credentials`` grant (no ``sid``: alive until revoked by its ``jti``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.auth_sessions import RefreshTokenState, lookup_refresh_token
from shared.crypto.opaque import token_hash
from shared.db.tables import SESSIONS, USERS
from shared.refresh_rotation.policy import BLOCKING_LINK_STATES
from shared.runtime import Runtime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.oauth.callers import live_session_user
from broker.oauth.service_tokens import is_revoked
from broker.oauth.tokens import TokenInvalid, is_service_token, verify_access_token

MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class AccessToken:
    """A broker access token with a valid signature, ``typ``, ``iss`` and ``exp``."""

    claims: Mapping[str, Any]
    session_id: uuid.UUID
    client_id: str
    live: bool  # its session is not revoked and its user is active

    @property
    def user_id(self) -> str:
        return str(self.claims["sub"])


@dataclass(frozen=True)
class RefreshToken:
    """A refresh token the broker stored; ``live`` if it could be exchanged right now."""

    state: RefreshTokenState
    live: bool

    @property
    def session_id(self) -> uuid.UUID:
        return self.state.session_id

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def user_id(self) -> str:
        return str(self.state.user_id)


@dataclass(frozen=True)
class ServiceToken:
    """A ``client_credentials`` access token (no ``sid``: no user, no session) with a valid
    signature, ``typ``, ``iss`` and ``exp``; ``live`` unless it was revoked by its ``jti``."""

    claims: Mapping[str, Any]
    client_id: str
    live: bool

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])


PresentedToken = AccessToken | ServiceToken | RefreshToken


async def session_alive(
    runtime: Runtime, session_id: uuid.UUID, connection: AsyncConnection | None
) -> bool:
    """The session is not revoked and its user is active (inside ``connection`` if given)."""
    if connection is None:
        return await live_session_user(runtime, session_id) is not None
    alive = await connection.scalar(
        select(SESSIONS.c.id)
        .join(USERS, USERS.c.id == SESSIONS.c.user_id)
        .where(
            SESSIONS.c.id == session_id,
            SESSIONS.c.revoked_at.is_(None),
            USERS.c.status == "active",
        )
    )
    return alive is not None


async def _service_token_revoked(
    runtime: Runtime, jti: str, connection: AsyncConnection | None
) -> bool:
    if connection is None:
        async with runtime.engine.connect() as own:
            return await is_revoked(own, jti)
    return await is_revoked(connection, jti)


async def identify(
    runtime: Runtime, token: str, connection: AsyncConnection | None = None
) -> PresentedToken | None:
    """The broker token ``token`` is, or None (unknown, malformed, forged or expired JWT).

    Inside a transaction, pass its ``connection``; without one, a connection is taken only if
    the token needs it.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    now = runtime.clock.now()
    if token.count(".") == 2:
        try:
            claims = verify_access_token(token, runtime.keys.snapshot, runtime.settings, now)
            if is_service_token(claims):
                revoked = await _service_token_revoked(runtime, str(claims["jti"]), connection)
                return ServiceToken(claims, str(claims["client_id"]), live=not revoked)
            session_id = uuid.UUID(str(claims["sid"]))
        except (TokenInvalid, ValueError):
            return None
        alive = await session_alive(runtime, session_id, connection)
        return AccessToken(claims, session_id, str(claims["client_id"]), alive)
    if connection is None:
        async with runtime.engine.connect() as own:
            state = await lookup_refresh_token(own, token_hash(token))
    else:
        state = await lookup_refresh_token(connection, token_hash(token))
    if state is None:
        return None
    live = (
        state.used_at is None
        and state.expires_at > now
        and state.session_revoked_at is None
        and state.user_status == "active"
        and state.link_state not in BLOCKING_LINK_STATES
    )
    return RefreshToken(state, live)
