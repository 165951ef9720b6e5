"""From a verified upstream login to a broker user: find or create the user and the profile link,
store the upstream tokens encrypted, and audit it, inside the caller's transaction.

Identity is ``(provider id, subject)`` (SECURITY.md 21); email never selects an account here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from shared.audit import record_audit_core
from shared.crypto.keyring import Keyring
from shared.crypto.sealed_columns import UPSTREAM_TOKEN_COLUMNS
from shared.db.base import table
from shared.models import OAuth2Profile, OAuth2Token, User
from shared.providers.base import UpstreamLogin, UpstreamProfile, UpstreamTokens
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

USERS = table(User)
PROFILES = table(OAuth2Profile)
UPSTREAM_TOKENS = table(OAuth2Token)


class UserDisabled(Exception):
    """The upstream identity belongs to a disabled broker user."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__("user disabled")
        self.user_id = user_id


class UnusableIdentity(Exception):
    """The upstream asserted an identity the broker cannot key on (e.g. an over-long subject)."""


MAX_SUBJECT = 255
# Display facts are clipped to their columns; the identity key never is (it is refused).
_CLIP = {
    "email": 320,
    "name": 200,
    "given_name": 200,
    "family_name": 200,
    "preferred_username": 200,
    "picture": 2048,
}


def fit_columns(profile: UpstreamProfile) -> UpstreamProfile:
    """The profile with display fields clipped to the column sizes; raises ``UnusableIdentity``."""
    if not profile.subject or len(profile.subject) > MAX_SUBJECT:
        raise UnusableIdentity("the upstream subject is empty or longer than 255 characters")
    clipped: dict[str, Any] = {}
    for name, limit in _CLIP.items():
        value = getattr(profile, name)
        if value is not None and len(value) > limit:
            # An over-long email or avatar URL is unusable, not shortened into another one.
            clipped[name] = None if name in ("email", "picture") else value[:limit]
    if "email" in clipped:
        clipped["email_verified"] = False
    return dataclasses.replace(profile, **clipped) if clipped else profile


async def record_refused_login(
    connection: AsyncConnection,
    *,
    provider_id: str,
    subject: str,
    user_id: uuid.UUID,
    client_id: str,
    ip: str | None,
    now: dt.datetime,
) -> None:
    await record_audit_core(
        connection,
        action="login.refused",
        actor=f"{provider_id}:{subject}",
        subject=str(user_id),
        client_id=client_id,
        ip=ip,
        data={"provider": provider_id, "reason": "user_disabled"},
        now=now,
    )


@dataclass(frozen=True)
class SignedIn:
    user_id: uuid.UUID
    profile_id: uuid.UUID
    created: bool


def _profile_values(login: UpstreamLogin) -> dict[str, object]:
    profile = login.profile
    return {
        "issuer": profile.issuer,
        "email": profile.email,
        "email_verified": profile.email_verified,
        "name": profile.name,
        "given_name": profile.given_name,
        "family_name": profile.family_name,
        "preferred_username": profile.preferred_username,
        "avatar_url": profile.picture,
        "profile_data": dict(profile.claims),
    }


async def sign_in(
    connection: AsyncConnection,
    *,
    provider_id: str,
    provider_type: str,
    login: UpstreamLogin,
    keyring: Keyring,
    now: dt.datetime,
    client_id: str,
    ip: str | None,
) -> SignedIn:
    """Resolve the login to a broker user; raises ``UserDisabled`` or ``UnusableIdentity``."""
    login = UpstreamLogin(profile=fit_columns(login.profile), tokens=login.tokens)
    subject = login.profile.subject
    existing = (
        await connection.execute(
            select(PROFILES.c.id, PROFILES.c.user_id, USERS.c.status)
            .join(USERS, USERS.c.id == PROFILES.c.user_id)
            .where(PROFILES.c.provider == provider_id, PROFILES.c.subject == subject)
        )
    ).first()
    values = _profile_values(login)

    async def audit(action: str, data: dict[str, Any]) -> None:
        await record_audit_core(
            connection,
            action=action,
            actor=f"{provider_id}:{subject}",
            subject=str(user_id),
            client_id=client_id,
            ip=ip,
            data=data,
            now=now,
        )

    if existing is not None:
        if existing.status != "active":
            raise UserDisabled(existing.user_id)  # the caller audits it outside this transaction
        user_id, profile_id, created = existing.user_id, existing.id, False
        await connection.execute(
            update(PROFILES)
            .where(PROFILES.c.id == profile_id)
            .values(**values, updated_at=now, last_login_at=now)
        )
        await _mirror_single_profile(connection, user_id, login, now)
    else:
        user_id, profile_id, created = uuid.uuid4(), uuid.uuid4(), True
        await connection.execute(
            insert(USERS).values(
                id=user_id,
                display_name=login.profile.name,
                email=login.profile.email,
                email_verified=login.profile.email_verified,
                picture=login.profile.picture,
                preferred_username=login.profile.preferred_username,
                status="active",
                created_at=now,
                updated_at=now,
                last_login_at=now,
            )
        )
        await connection.execute(
            insert(PROFILES).values(
                id=profile_id,
                user_id=user_id,
                provider=provider_id,
                provider_type=provider_type,
                subject=subject,
                created_at=now,
                updated_at=now,
                last_login_at=now,
                last_synced_at=now,
                **values,
            )
        )
        await audit("user.created", {"provider": provider_id})
        await audit("link.created", {"provider": provider_id, "profile_id": str(profile_id)})
    if login.tokens is not None:
        await store_upstream_tokens(
            connection,
            user_id=user_id,
            profile_id=profile_id,
            provider_id=provider_id,
            tokens=login.tokens,
            keyring=keyring,
            now=now,
        )
    await audit("user.signed_in", {"provider": provider_id})
    return SignedIn(user_id=user_id, profile_id=profile_id, created=created)


async def _mirror_single_profile(
    connection: AsyncConnection, user_id: uuid.UUID, login: UpstreamLogin, now: dt.datetime
) -> None:
    """Keep the user's claims in step with the upstream while it has only this one link."""
    links = (
        await connection.execute(
            select(func.count()).select_from(PROFILES).where(PROFILES.c.user_id == user_id)
        )
    ).scalar_one()
    if links != 1:
        return
    profile = login.profile
    await connection.execute(
        update(USERS)
        .where(USERS.c.id == user_id)
        .values(
            email=profile.email,
            email_verified=profile.email_verified,
            display_name=profile.name,
            picture=profile.picture,
            preferred_username=profile.preferred_username,
            updated_at=now,
            last_login_at=now,
        )
    )


async def store_upstream_tokens(
    connection: AsyncConnection,
    *,
    user_id: uuid.UUID,
    profile_id: uuid.UUID,
    provider_id: str,
    tokens: UpstreamTokens,
    keyring: Keyring,
    now: dt.datetime,
) -> uuid.UUID:
    """Insert or replace the link's upstream tokens, encrypted with AES-GCM."""
    token_id = (
        await connection.execute(
            select(UPSTREAM_TOKENS.c.id).where(UPSTREAM_TOKENS.c.profile_id == profile_id)
        )
    ).scalar_one_or_none()
    is_new = token_id is None
    if token_id is None:
        token_id = uuid.uuid4()

    def seal(value: str | None, column: str) -> bytes | None:
        sealed = UPSTREAM_TOKEN_COLUMNS[column]
        return keyring.encrypt(value.encode(), sealed.aad(token_id)) if value else None

    values = {
        "access_token_enc": seal(tokens.access_token, "access_token"),
        "refresh_token_enc": seal(tokens.refresh_token, "refresh_token"),
        "id_token_enc": seal(tokens.id_token, "id_token"),
        "token_type": tokens.token_type,
        "scope": tokens.scope,
        "expires_at": tokens.expires_at,
        "refresh_expires_at": tokens.refresh_expires_at,
        "state": "ok",
        "failure_count": 0,
        "last_error": None,
        "updated_at": now,
    }
    if is_new:
        await connection.execute(
            insert(UPSTREAM_TOKENS).values(
                id=token_id,
                profile_id=profile_id,
                user_id=user_id,
                provider=provider_id,
                created_at=now,
                **values,
            )
        )
    else:
        await connection.execute(
            update(UPSTREAM_TOKENS).where(UPSTREAM_TOKENS.c.id == token_id).values(**values)
        )
    return token_id
