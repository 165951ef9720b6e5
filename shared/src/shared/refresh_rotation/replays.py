"""A rotation that found nothing: why (``RotationError``), or the reuse interval's grant.

When the same token is presented again within the reuse interval, the broker hands out its
successor again (``policy``: same value, same expiry), as long as it is still the family's
unused token: one live token per family, never a second family, and still nothing stored but
SHA-256 hashes. Each such answer is audited ``refresh_token.retried``, in the transaction that
gives it. Outside the interval, or once the successor has itself been used, a rotated token
presented again is a replay: the whole family (the session) is revoked and
``refresh_token.reuse_detected`` is audited. ``BROKER_REUSE_RESPONSE`` widens what a replay
revokes: every live session of the user (``user``), and also the user's upstream links
(``user_and_upstream``: marked revoked here, their grants revoked at the providers by the caller
after the commit).

Every rotation path (``hot_path``, ``groups``, ``portable``) comes here for each request that
matched nothing, on its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import record_audit_core
from shared.auth_sessions import (
    USER_CLAIM_COLUMNS,
    SessionGrant,
    lookup_refresh_token,
    revoke_session,
    revoke_user_sessions,
)
from shared.crypto.opaque import token_hash
from shared.db.tables import REFRESH_TOKENS, SESSIONS
from shared.refresh_rotation.outcomes import (
    RotationError,
    RotationFailure,
    session_and_claims,
    session_grant,
)
from shared.refresh_rotation.policy import RotationPolicy
from shared.revocations import Revocation
from shared.settings import ReuseResponse
from shared.upstream_tokens import RevokedGrant, revoke_user_links

RETRIED = "refresh_token.retried"


async def resolve_failed_rotation(
    connection: AsyncConnection,
    policy: RotationPolicy,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    ip: str | None = None,
) -> SessionGrant:
    """Why a rotation found nothing (raised as ``RotationError``), or the reuse interval's grant.

    A replay revokes the family; the caller must commit even when this raises. The reuse
    interval's grant adds its ``refresh_token.retried`` row; the caller commits it with the
    answer.
    """
    row = await lookup_refresh_token(connection, token_hash(presented))
    if row is None:
        raise RotationError(RotationFailure.UNKNOWN)
    if row.client_id != client_id:
        # RFC 6749 §10.4: bound to its client; another client learns nothing about it.
        raise RotationError(RotationFailure.WRONG_CLIENT)
    if row.session_revoked_at is not None or row.user_status != "active":
        raise RotationError(RotationFailure.REVOKED, row.session_id)
    if row.link_state == "revoked":
        raise RotationError(RotationFailure.LINK_REVOKED, row.session_id)
    if row.link_state == "needs_reauth":
        raise RotationError(RotationFailure.REAUTH_REQUIRED, row.session_id)
    if row.used_at is not None:
        # `now` was read before this statement ran, so a concurrent winner's `used_at` can be
        # later than it: in strict mode (0) the window must not exist at all.
        since_rotation = now - row.used_at
        if policy.reuse_interval > 0 and since_rotation <= dt.timedelta(
            seconds=policy.reuse_interval
        ):
            # docs/security.md "Refresh-token rotation and reuse": the successor nobody has used
            # yet is what the lost response carried, so this is a retry, not a theft.
            grant = await _live_successor(connection, policy, presented, client_id, now)
            if grant is not None:
                await record_audit_core(
                    connection,
                    action=RETRIED,
                    actor=f"client:{client_id}",
                    subject=str(row.user_id),
                    client_id=client_id,
                    ip=ip,
                    data={
                        "sid": str(row.session_id),
                        # A concurrent winner's used_at can be later than this request's `now`.
                        "seconds_after_rotation": round(
                            max(since_rotation.total_seconds(), 0.0), 3
                        ),
                    },
                    now=now,
                )
                return grant
        revocations, grants = await _respond_to_replay(
            connection, policy.reuse_response, row.session_id, row.user_id, client_id, now
        )
        raise RotationError(RotationFailure.REUSED, row.session_id, revocations, grants)
    if row.expires_at <= now:
        raise RotationError(RotationFailure.EXPIRED, row.session_id)
    raise RotationError(RotationFailure.REVOKED, row.session_id)


async def _live_successor(
    connection: AsyncConnection,
    policy: RotationPolicy,
    presented: str,
    client_id: str,
    now: dt.datetime,
) -> SessionGrant | None:
    """The presented token's successor, if it is still the family's unused, unexpired token."""
    candidates = {
        token_hash(policy.successor(presented, index)): index
        for index in range(len(policy.successor_keys))  # a keyring rotated within the interval
    }
    row = (
        await connection.execute(
            session_and_claims()
            .add_columns(REFRESH_TOKENS.c.token_hash, REFRESH_TOKENS.c.expires_at)
            .join(REFRESH_TOKENS, REFRESH_TOKENS.c.session_id == SESSIONS.c.id)
            .where(
                REFRESH_TOKENS.c.token_hash.in_(list(candidates)),
                REFRESH_TOKENS.c.used_at.is_(None),
                REFRESH_TOKENS.c.expires_at > now,
            )
        )
    ).first()
    if row is None:
        return None
    successor = policy.successor(presented, candidates[row.token_hash])
    claims = tuple(row)[: 5 + len(USER_CLAIM_COLUMNS)]
    return session_grant(claims, client_id, successor, row.expires_at)


async def _respond_to_replay(
    connection: AsyncConnection,
    response: ReuseResponse,
    session_id: Any,
    user_id: Any,
    client_id: str,
    now: dt.datetime,
) -> tuple[list[Revocation], list[RevokedGrant]]:
    """Revoke what ``response`` says a replay revokes, and audit it with the list."""
    actor = f"client:{client_id}"
    reason = "refresh_token_reuse"
    grants: list[RevokedGrant] = []
    ended_with_links: list[Revocation] = []
    if response == "user_and_upstream":
        # ... and the upstream grants the broker holds for the user: the links are marked
        # revoked now (the user signs in through each provider again); the caller revokes the
        # grants at the providers after the commit. Links are locked before sessions, the order
        # the upstream refresh and the profile sync take them in, so the two cannot deadlock.
        grants, ended_with_links = await revoke_user_links(
            connection, user_id, now=now, actor=actor, reason=reason
        )
    if response == "family":
        # RFC 9700 §4.14.2: a rotated token presented again revokes the whole family.
        family = await revoke_session(connection, session_id, now=now, reason=reason, actor=actor)
        revocations = [family] if family is not None else []
    else:
        # docs/security.md "Reuse response policy": a replay means someone else holds the user's
        # tokens, maybe from more than one device or client: every session of the user goes
        # (the family among them), in one lock order (session id), so concurrent replays
        # cannot deadlock.
        revocations = ended_with_links + await revoke_user_sessions(
            connection, user_id, now=now, reason=reason, actor=actor
        )
    await record_audit_core(
        connection,
        action="refresh_token.reuse_detected",
        actor=actor,
        subject=str(user_id),
        client_id=client_id,
        data={
            "sid": str(session_id),
            "policy": response,
            "revoked_sessions": [str(revocation.session_id) for revocation in revocations],
            "revoked_links": [
                {"id": str(grant.link_id), "provider": grant.provider} for grant in grants
            ],
        },
        now=now,
    )
    return revocations, grants
