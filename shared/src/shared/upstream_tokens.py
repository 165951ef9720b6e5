"""Upstream tokens at rest: stored per link in ``oauth2_tokens``, AES-GCM sealed per row and column.

Used by the broker (a sign-in stores what the code exchange returned) and by the jobs (a refresh
stores the provider's new tokens, a rotated refresh token included, in the same transaction).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.crypto.keyring import Keyring
from shared.crypto.sealed_columns import UPSTREAM_TOKEN_COLUMNS
from shared.db.base import table
from shared.models import OAuth2Token
from shared.providers.base import UpstreamTokens

LINKS = table(OAuth2Token)


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
