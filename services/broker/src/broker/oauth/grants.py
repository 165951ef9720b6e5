"""The sign-in grants of the token endpoint: ``authorization_code`` and ``refresh_token``.

Both produce the token *pair* (JWT access token + opaque rotating refresh token) and an ID
token. ``POST /token`` and ``POST /auth/oauth2/refresh`` share ``refresh_grant``. Database work
happens first, in one transaction; the JWTs are signed after it commits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.audit import record_audit_core
from shared.auth_sessions import SessionGrant, create_session
from shared.db.tables import USERS
from shared.refresh_rotation.hot_path import rotate_on_hot_path
from shared.refresh_rotation.outcomes import RotationError, RotationFailure
from shared.refresh_rotation.portable import rotate_in_transaction
from shared.refresh_rotation.replays import resolve_failed_rotation
from shared.runtime import Runtime
from shared.settings import ClientConfig
from shared.upstream_tokens import revoke_grants_at_providers
from sqlalchemy import select

from broker.http.context import RequestMeta
from broker.http.errors import InvalidGrant, InvalidRequest, InvalidScope
from broker.oauth.codes import CodeUnusable, attach_session, redeem_code
from broker.oauth.roles import ADMIN_SCOPE, admin_scope_for
from broker.oauth.tokens import UserClaims, mint_access_token, mint_id_token


@dataclass(frozen=True)
class IssuedTokens:
    """A grant's RFC 6749 §5.1 response, and whose session it is (for logs and metrics); a
    service token (``client_credentials``) has no user and no provider."""

    body: dict[str, Any]
    user_id: uuid.UUID | None
    provider: str


class RefreshTokenReused(InvalidGrant):
    """A rotated refresh token came back: its family is revoked (RFC 9700 §4.14.2)."""


def _issued(body: dict[str, Any], grant: SessionGrant) -> IssuedTokens:
    return IssuedTokens(body=body, user_id=grant.user_id, provider=grant.provider)


def token_response(
    runtime: Runtime,
    client: ClientConfig,
    grant: SessionGrant,
    *,
    nonce: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """Sign the JWTs of a granted session and shape the RFC 6749 §5.1 response."""
    settings = runtime.settings
    keys = runtime.keys.snapshot
    subject = str(grant.user_id)
    session_id = str(grant.session_id)
    access_token = mint_access_token(
        keys,
        settings,
        client=client,
        subject=subject,
        session_id=session_id,
        scope=grant.scope,
        auth_time=grant.auth_time,
        now=now,
    )
    id_token = mint_id_token(
        keys,
        settings,
        client=client,
        user=UserClaims.from_row(subject, grant.user),
        session_id=session_id,
        scope=grant.scope,
        auth_time=grant.auth_time,
        now=now,
        access_token=access_token,
        nonce=nonce,
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl,
        "refresh_token": grant.refresh_token,
        "id_token": id_token,
        "scope": grant.scope,
    }


async def code_grant(
    runtime: Runtime, client: ClientConfig, params: Mapping[str, str], meta: RequestMeta
) -> IssuedTokens:
    code = params.get("code")
    if not code:
        raise InvalidRequest("code is required")
    now = runtime.clock.now()
    failure: InvalidGrant | InvalidRequest | None = None
    grant: SessionGrant | None = None
    nonce: str | None = None
    async with runtime.engine.begin() as connection:
        try:
            redeemed = await redeem_code(
                connection,
                code=code,
                client_id=client.id,
                redirect_uri=params.get("redirect_uri"),
                code_verifier=params.get("code_verifier"),
                now=now,
            )
        except (InvalidGrant, InvalidRequest) as exc:
            # Commit anyway: the code stays burned and a replay's revocation persists.
            failure = exc
        else:
            user = (
                await connection.execute(select(USERS).where(USERS.c.id == redeemed.user_id))
            ).first()
            if user is None or user.status != "active":
                failure = InvalidGrant("the user is disabled")
            else:
                # docs/security.md "Admin power needs the admin scope": granted only to a user
                # who is an admin when the tokens are issued.
                scope = await admin_scope_for(
                    connection, runtime.settings, redeemed.user_id, redeemed.scope
                )
                grant = await create_session(
                    connection,
                    user_id=redeemed.user_id,
                    client_id=client.id,
                    provider=redeemed.provider,
                    profile_id=redeemed.profile_id,
                    scope=scope,
                    auth_time=redeemed.auth_time,
                    now=now,
                    refresh_ttl=runtime.settings.refresh_token_ttl,
                    user_agent=redeemed.user_agent,
                    ip=redeemed.ip,
                    browser_hash=redeemed.browser_hash,
                )
                grant = dataclasses.replace(grant, user=dict(user._mapping))
                nonce = redeemed.nonce
                await attach_session(connection, redeemed.code_hash, grant.session_id)
                await record_audit_core(
                    connection,
                    action="token.issued",
                    actor=f"client:{client.id}",
                    subject=str(redeemed.user_id),
                    client_id=client.id,
                    ip=meta.ip,
                    data={"sid": str(grant.session_id), "grant_type": "authorization_code"},
                    now=now,
                )
    if failure is not None:
        if isinstance(failure, CodeUnusable) and failure.revocation is not None:
            await runtime.revocations.publish([failure.revocation])
        raise failure
    assert grant is not None
    return _issued(token_response(runtime, client, grant, nonce=nonce, now=now), grant)


_ROTATION_MESSAGES = {
    RotationFailure.UNKNOWN: "the refresh token is invalid",
    RotationFailure.EXPIRED: "the refresh token has expired",
    RotationFailure.WRONG_CLIENT: "the refresh token is invalid",
    RotationFailure.REVOKED: "the refresh token has been revoked",
    RotationFailure.REUSED: "the refresh token was already used; the session is revoked",
    RotationFailure.LINK_REVOKED: "the sign-in with the identity provider was revoked",
    # A code the client can act on: send the user through /authorize again.
    RotationFailure.REAUTH_REQUIRED: "upstream_reauth_required",
}


async def refresh_grant(
    runtime: Runtime, client: ClientConfig, params: Mapping[str, str], meta: RequestMeta
) -> IssuedTokens:
    """The ``refresh_token`` grant; ``POST /auth/oauth2/refresh`` calls it too."""
    presented = params.get("refresh_token")
    if not presented:
        raise InvalidRequest("refresh_token is required")
    requested_scope = params.get("scope")
    now = runtime.clock.now()
    if runtime.hot_path is not None and requested_scope is None:
        # PostgreSQL, the common case: one statement, one round trip; the rotations that arrive
        # together share its commit (docs/decisions.md "Group commit of refresh rotations").
        if runtime.rotation_groups is not None:
            grant = await runtime.rotation_groups.rotate(
                presented=presented, client_id=client.id, now=now, ip=meta.ip
            )
        else:
            grant = await rotate_on_hot_path(
                runtime.hot_path,
                runtime.rotation,
                presented=presented,
                client_id=client.id,
                now=now,
                ip=meta.ip,
            )
        if grant is None:
            grant = await _resolve_failed_rotation(runtime, presented, client.id, now, meta)
    else:
        grant = await _rotate_in_transaction(
            runtime, presented, client.id, requested_scope, now, meta
        )
    if ADMIN_SCOPE in grant.scope.split():
        # docs/security.md "Admin power needs the admin scope": a session keeps the scope it
        # was granted, but a token carries it only while the user is an admin (one query, for
        # admin sessions only: ordinary refreshes do not pay for it).
        async with runtime.engine.connect() as connection:
            scope = await admin_scope_for(connection, runtime.settings, grant.user_id, grant.scope)
        grant = dataclasses.replace(grant, scope=scope)
    return _issued(token_response(runtime, client, grant, nonce=None, now=now), grant)


async def _resolve_failed_rotation(
    runtime: Runtime, presented: str, client_id: str, now: dt.datetime, meta: RequestMeta
) -> SessionGrant:
    """A rotation that matched nothing: the reuse interval's grant (a retry, audited in this
    transaction), or ``invalid_grant``."""
    async with runtime.engine.begin() as connection:
        try:
            return await resolve_failed_rotation(
                connection,
                runtime.rotation,
                presented=presented,
                client_id=client_id,
                now=now,
                ip=meta.ip,
            )
        except RotationError as exc:
            failure = exc  # commit: a replay's family revocation and audit must persist
    raise await _invalid_grant(runtime, failure)


async def _invalid_grant(runtime: Runtime, failure: RotationError) -> InvalidGrant:
    """The client's answer to a failed rotation, once what a replay revoked is published (and
    revoked at the upstreams, with ``BROKER_REUSE_RESPONSE=user_and_upstream``)."""
    await runtime.revocations.publish(failure.revocations)
    # After the commit, best effort: never an HTTP call inside the transaction.
    await revoke_grants_at_providers(
        failure.upstream_grants, runtime.providers, runtime.settings.keyring
    )
    message = _ROTATION_MESSAGES[failure.failure]
    if failure.failure is RotationFailure.REUSED:
        return RefreshTokenReused(message)
    return InvalidGrant(message)


async def _rotate_in_transaction(
    runtime: Runtime,
    presented: str,
    client_id: str,
    requested_scope: str | None,
    now: dt.datetime,
    meta: RequestMeta,
) -> SessionGrant:
    """SQLite, or a refresh that narrows the scope: rotate inside an explicit transaction."""
    failure: RotationError | None = None
    async with runtime.engine.begin() as connection:
        try:
            grant = await rotate_in_transaction(
                connection,
                runtime.rotation,
                presented=presented,
                client_id=client_id,
                now=now,
                ip=meta.ip,
            )
        except RotationError as exc:
            failure = exc  # commit: a replay's family revocation and audit must persist
        else:
            if requested_scope is not None:
                # RFC 6749 §6: a refresh may narrow the scope, never widen it. Raising here
                # rolls the rotation back, so the presented token stays usable.
                requested = requested_scope.split()
                if not requested or not set(requested) <= set(grant.scope.split()):
                    raise InvalidScope("the requested scope exceeds the granted scope")
                grant = dataclasses.replace(grant, scope=" ".join(requested))
    if failure is not None:
        raise await _invalid_grant(runtime, failure)
    return grant
