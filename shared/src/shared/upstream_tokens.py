"""Upstream tokens at rest: stored per link in ``oauth2_tokens``, AES-GCM sealed per row and column.

Used by the broker (a sign-in stores what the code exchange returned) and by the jobs (a refresh
stores the provider's new tokens, a rotated refresh token included, in the same transaction).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import record_audit_core
from shared.auth_sessions import revoke_link_sessions
from shared.crypto.keyring import DecryptionError, Keyring
from shared.crypto.sealed_columns import UPSTREAM_TOKEN_COLUMNS
from shared.db.tables import LINKS
from shared.providers.base import Provider, UpstreamTokens
from shared.providers.errors import ProviderError
from shared.revocations import Revocation

log = structlog.get_logger("shared.upstream_tokens")


def seal_upstream_token(
    keyring: Keyring, token_id: uuid.UUID, column: str, value: str | None
) -> bytes | None:
    """Encrypt one token for its row and column (access, refresh or ID token)."""
    if not value:
        return None
    return keyring.encrypt(value.encode(), UPSTREAM_TOKEN_COLUMNS[column].aad(token_id))


def unseal_upstream_token(
    keyring: Keyring, token_id: uuid.UUID, column: str, sealed: bytes | None
) -> str | None:
    """Decrypt what :func:`seal_upstream_token` stored (a ciphertext of another row fails)."""
    if not sealed:
        return None
    return keyring.decrypt(sealed, UPSTREAM_TOKEN_COLUMNS[column].aad(token_id)).decode()


async def store_upstream_tokens(
    connection: AsyncConnection,
    *,
    user_id: uuid.UUID,
    profile_id: uuid.UUID,
    provider_id: str,
    tokens: UpstreamTokens,
    keyring: Keyring,
    now: dt.datetime,
    refreshed: bool = False,
) -> uuid.UUID:
    """Insert or replace the link's upstream tokens, encrypted with AES-GCM; a response
    without a refresh token leaves the stored refresh token in place."""
    token_id = (
        await connection.execute(select(LINKS.c.id).where(LINKS.c.profile_id == profile_id))
    ).scalar_one_or_none()
    is_new = token_id is None
    if token_id is None:
        token_id = uuid.uuid4()

    def seal(value: str | None, column: str) -> bytes | None:
        return seal_upstream_token(keyring, token_id, column, value)

    values = {
        "access_token_enc": seal(tokens.access_token, "access_token"),
        "id_token_enc": seal(tokens.id_token, "id_token"),
        "token_type": tokens.token_type,
        "scope": tokens.scope,
        "expires_at": tokens.expires_at,
        "refresh_expires_at": tokens.refresh_expires_at,
        "state": "ok",
        "failure_count": 0,
        "last_error": None,
        "next_attempt_at": None,
        "updated_at": now,
    }
    if refreshed:
        values["last_refreshed_at"] = now
    if tokens.refresh_token or is_new:
        values["refresh_token_enc"] = seal(tokens.refresh_token, "refresh_token")
    else:
        # A sign-in without a refresh token (Google sends one only on consent) keeps the one
        # the broker holds, with its expiry.
        values.pop("refresh_expires_at")
    if is_new:
        await connection.execute(
            insert(LINKS).values(
                id=token_id,
                profile_id=profile_id,
                user_id=user_id,
                provider=provider_id,
                created_at=now,
                **values,
            )
        )
    else:
        await connection.execute(update(LINKS).where(LINKS.c.id == token_id).values(**values))
    return token_id


async def revoke_upstream_link(
    connection: AsyncConnection,
    token_id: uuid.UUID,
    *,
    now: dt.datetime,
    actor: str,
    reason: str,
    audit_data: dict[str, Any] | None = None,
) -> list[Revocation] | None:
    """Mark a link's upstream grant revoked, wipe its tokens and revoke the sessions signed in
    through it, audited (``upstream_token.revoked``) — None if there is no such link.

    A revoked link stays listed (an admin or the user sees why sign-ins through it stopped)
    until the user signs in through its provider again, which stores a new grant.
    """
    row = (
        await connection.execute(
            update(LINKS)
            .where(LINKS.c.id == token_id)
            .values(
                state="revoked",
                last_error=reason[:200],
                next_attempt_at=None,
                updated_at=now,
                # A dead grant's tokens are of no use to anyone: keep no secret we cannot use.
                access_token_enc=None,
                refresh_token_enc=None,
                id_token_enc=None,
            )
            .returning(LINKS.c.user_id, LINKS.c.profile_id, LINKS.c.provider)
        )
    ).first()
    if row is None:
        return None
    revocations = await revoke_link_sessions(
        connection, row.profile_id, now=now, reason="upstream_revoked", actor=actor
    )
    await record_audit_core(
        connection,
        action="upstream_token.revoked",
        actor=actor,
        subject=str(row.user_id),
        data={
            "provider": row.provider,
            "link": str(row.profile_id),
            "reason": reason,
            "sessions_revoked": len(revocations),
            **(audit_data or {}),
        },
        now=now,
    )
    return revocations


@dataclass(frozen=True)
class RevokedGrant:
    """A link's tokens, still sealed, taken as the link was marked revoked: they are revoked at
    the provider once that transaction has committed (never an HTTP call inside it)."""

    link_id: uuid.UUID
    provider: str
    access_token_enc: bytes | None = field(repr=False)
    refresh_token_enc: bytes | None = field(repr=False)


async def revoke_user_links(
    connection: AsyncConnection,
    user_id: uuid.UUID,
    *,
    now: dt.datetime,
    actor: str,
    reason: str,
) -> tuple[list[RevokedGrant], list[Revocation]]:
    """Mark every upstream link of the user that is not revoked yet revoked (as
    ``revoke_upstream_link`` does, audited, its sessions with it); return their tokens for
    ``revoke_grants_at_providers`` and the sessions that ended."""
    rows = (
        await connection.execute(
            select(
                LINKS.c.id, LINKS.c.provider, LINKS.c.access_token_enc, LINKS.c.refresh_token_enc
            )
            .where(LINKS.c.user_id == user_id, LINKS.c.state != "revoked")
            .order_by(LINKS.c.id)  # one lock order for concurrent callers
            .with_for_update()
        )
    ).all()
    ended: list[Revocation] = []
    for row in rows:
        ended += (
            await revoke_upstream_link(connection, row.id, now=now, actor=actor, reason=reason)
            or []
        )
    grants = [
        RevokedGrant(row.id, row.provider, row.access_token_enc, row.refresh_token_enc)
        for row in rows
    ]
    return grants, ended


async def revoke_grants_at_providers(
    grants: Sequence[RevokedGrant], providers: Mapping[str, Provider], keyring: Keyring
) -> None:
    """Best effort, after the commit that marked the links revoked: revoke each grant at its
    provider where the provider supports revocation. A failure is logged, never raised (the
    links are revoked here either way, and their tokens gone from the database)."""
    for grant in grants:
        provider = providers.get(grant.provider)
        if provider is None:
            continue
        try:
            access = unseal_upstream_token(
                keyring, grant.link_id, "access_token", grant.access_token_enc
            )
            refresh = unseal_upstream_token(
                keyring, grant.link_id, "refresh_token", grant.refresh_token_enc
            )
        except DecryptionError as exc:
            log.warning("upstream_token.revoke_failed", provider=grant.provider, reason=str(exc))
            continue
        if not (access or refresh):
            continue
        try:
            await provider.revoke(access_token=access, refresh_token=refresh)
        except ProviderError as exc:
            log.info("upstream_token.revoke_failed", provider=grant.provider, reason=str(exc))
