"""From a verified upstream login to a broker user: find or create the user and the profile link,
store the upstream tokens encrypted, and audit it, inside the caller's transaction.

Identity is ``(provider id, subject)`` (docs/security.md "Identity is provider and subject"). Email
selects an existing account only
through ``auto_link_decision`` (docs/security.md "Auto-linking needs both sides authoritative"): an
address is compared with
other users' only when the provider verified it and is its authority, and matches only links
that are both too; a proven address that may not link is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from shared.audit import record_audit_core
from shared.avatars import avatar_url, store_avatar
from shared.crypto.keyring import Keyring
from shared.db.tables import LINKS, PROFILES, USERS
from shared.profile_columns import fit_columns
from shared.providers.base import UpstreamLogin, UpstreamProfile
from shared.upstream_tokens import store_upstream_tokens
from shared.user_claims import refresh_user_claims
from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection


class UserDisabled(Exception):
    """The upstream identity belongs to a disabled broker user."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__("user disabled")
        self.user_id = user_id


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
    # The provider's picture is not stored by the broker yet: sync the profile after commit.
    avatar_pending: bool = False


class LinkRefused(Exception):
    """The upstream identity may not be linked (or sign in) as asked; nothing was written.

    ``reason`` is one of ``auto_link_disabled``, ``ambiguous_email`` (existing users have the
    proven email), ``provider_already_linked``, ``linked_to_another_user`` (link flow),
    ``user_inactive`` (link flow). An unverified or non-authoritative email is never a reason:
    it is not compared with anyone's (docs/security.md "Auto-linking needs both sides
    authoritative").
    """

    def __init__(self, reason: str, existing_user: uuid.UUID | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.existing_user = existing_user


@dataclass(frozen=True)
class UpstreamIdentity:
    """A verified upstream login, where it came from, and the provider's linking policy."""

    provider_id: str
    provider_type: str
    login: UpstreamLogin
    link_by_email: bool = False

    @property
    def actor(self) -> str:
        return f"{self.provider_id}:{self.login.profile.subject}"


@dataclass(frozen=True)
class Context:
    """Who asked, for the audit trail; the time; and where stored avatars are served."""

    keyring: Keyring
    issuer: str
    now: dt.datetime
    client_id: str
    ip: str | None


async def _audit(
    connection: AsyncConnection,
    context: Context,
    *,
    action: str,
    actor: str,
    user_id: uuid.UUID | None,
    data: dict[str, Any],
) -> None:
    await record_audit_core(
        connection,
        action=action,
        actor=actor,
        subject=str(user_id) if user_id else None,
        client_id=context.client_id,
        ip=context.ip,
        data=data,
        now=context.now,
    )


async def record_refused_link(
    connection: AsyncConnection,
    context: Context,
    identity: UpstreamIdentity,
    refused: LinkRefused,
    *,
    user_id: uuid.UUID | None,
) -> None:
    """Audit ``link.refused`` (its own transaction: the refused attempt wrote nothing else)."""
    await _audit(
        connection,
        context,
        action="link.refused",
        actor=identity.actor if user_id is None else f"user:{user_id}",
        user_id=user_id or refused.existing_user,
        data={
            "provider": identity.provider_id,
            "reason": refused.reason,
            "upstream_subject": identity.login.profile.subject,
        },
    )


async def _profile_values(
    connection: AsyncConnection, profile: UpstreamProfile, context: Context
) -> dict[str, object]:
    # A picture the provider serves itself (a URL) is fetched by the profile sync, which then
    # serves it from here; until then the provider's URL stands in. A picture only readable
    # with the user's token (Microsoft Graph) arrives as bytes and is stored now.
    avatar = profile.picture
    if profile.avatar is not None:
        avatar = avatar_url(
            context.issuer, await store_avatar(connection, profile.avatar, context.now)
        )
    values: dict[str, object] = {
        "picture_source": None if profile.avatar is not None else profile.picture,
        "issuer": profile.issuer,
        "email": profile.email,
        "email_verified": profile.email_verified,
        # docs/security.md "Auto-linking needs both sides authoritative": whether this link may
        # match a later sign-in's email.
        "email_authoritative": profile.email_authoritative,
        "name": profile.name,
        "given_name": profile.given_name,
        "family_name": profile.family_name,
        "preferred_username": profile.preferred_username,
        "avatar_url": avatar,
        "profile_data": dict(profile.claims),
        "last_synced_at": context.now,  # a sign-in reads the upstream profile afresh
    }
    if profile.avatar_unavailable:
        # The picture could not be read just now: keep the stored one.
        del values["avatar_url"], values["picture_source"]
    return values


async def _existing_link(
    connection: AsyncConnection, provider_id: str, subject: str
) -> Row[Any, Any, Any] | None:
    return (
        await connection.execute(
            select(PROFILES.c.id, PROFILES.c.user_id, USERS.c.status)
            .join(USERS, USERS.c.id == PROFILES.c.user_id)
            .where(PROFILES.c.provider == provider_id, PROFILES.c.subject == subject)
        )
    ).first()


def email_proven(profile: UpstreamProfile) -> bool:
    """The provider verified the address and is its authority (Google: Gmail or ``hd``, ...)."""
    return bool(profile.email and profile.email_verified and profile.email_authoritative)


async def users_with_proven_email(
    connection: AsyncConnection, email: str, *, other_than_provider: str
) -> list[uuid.UUID]:
    """Users holding a link to *another* provider that verified this address (any case) and is
    its authority, as of that link's last sign-in or sync.

    docs/security.md "Auto-linking needs both sides authoritative": a link whose provider merely
    relays an address (a Google
    account made on someone else's domain, an unverified Entra ``email``) could have been
    created by anyone before the owner arrived; it never pulls the owner's sign-in into its
    account. Another subject of the same provider with the same address is another person
    (addresses get reassigned), and could not be linked to the same user anyway.
    """
    rows = await connection.execute(
        select(PROFILES.c.user_id)
        .where(
            func.lower(PROFILES.c.email) == email.lower(),
            PROFILES.c.email_verified.is_(True),
            PROFILES.c.email_authoritative.is_(True),
            PROFILES.c.provider != other_than_provider,
        )
        .distinct()
        .limit(2)
    )
    return [row.user_id for row in rows]


def auto_link_decision(
    identity: UpstreamIdentity, matching_users: list[uuid.UUID]
) -> uuid.UUID | None:
    """The user to link to, None for a new user; ``LinkRefused`` when a proven email collides.

    docs/security.md "Auto-linking needs both sides authoritative": both sides must be verified and
    authoritative (the new
    login here, the stored links in ``users_with_proven_email``), the provider must allow
    ``link_by_email``, and exactly one user may hold the address. An unproven address counts
    as matching nobody: the sign-in gets a new user exactly as for an address nobody uses, so
    neither the answer nor an "account exists" page tells the caller whose address it is.
    """
    if not matching_users or not email_proven(identity.login.profile):
        return None
    existing = matching_users[0] if len(matching_users) == 1 else None
    if not identity.link_by_email:
        raise LinkRefused("auto_link_disabled", existing)
    if existing is None:
        raise LinkRefused("ambiguous_email")
    return existing


def _fitted(identity: UpstreamIdentity) -> UpstreamIdentity:
    login = UpstreamLogin(profile=fit_columns(identity.login.profile), tokens=identity.login.tokens)
    return dataclasses.replace(identity, login=login)


async def _update_profile(
    connection: AsyncConnection,
    profile_id: uuid.UUID,
    values: dict[str, object],
    now: dt.datetime,
    issuer: str,
) -> None:
    """A returning identity: the provider's current facts, and when it was last used. An
    avatar the broker already stores for the same picture URL is kept."""
    if values.get("picture_source"):
        values = {
            **values,
            "avatar_url": case(
                (
                    and_(
                        PROFILES.c.picture_source == values["picture_source"],
                        PROFILES.c.avatar_url.like(f"{issuer}/avatars/%"),
                    ),
                    PROFILES.c.avatar_url,
                ),
                else_=values["avatar_url"],
            ),
        }
    # A verified address that comes back unverified is recorded, as a sync does.
    verified = bool(values.get("email_verified"))
    unverified_at = case(
        (PROFILES.c.email_verified.is_(True), now), else_=PROFILES.c.email_unverified_at
    )
    await connection.execute(
        update(PROFILES)
        .where(PROFILES.c.id == profile_id)
        .values(
            **values,
            email_unverified_at=None if verified else unverified_at,
            updated_at=now,
            last_login_at=now,
        )
    )


async def _has_link_to(connection: AsyncConnection, user_id: uuid.UUID, provider_id: str) -> bool:
    row = (
        await connection.execute(
            select(PROFILES.c.id).where(
                PROFILES.c.user_id == user_id, PROFILES.c.provider == provider_id
            )
        )
    ).first()
    return row is not None


async def _insert_profile(
    connection: AsyncConnection,
    context: Context,
    identity: UpstreamIdentity,
    user_id: uuid.UUID,
    values: dict[str, object],
) -> uuid.UUID:
    profile_id = uuid.uuid4()
    await connection.execute(
        insert(PROFILES).values(
            id=profile_id,
            user_id=user_id,
            provider=identity.provider_id,
            provider_type=identity.provider_type,
            subject=identity.login.profile.subject,
            created_at=context.now,
            updated_at=context.now,
            last_login_at=context.now,
            **values,
        )
    )
    return profile_id


async def sign_in(
    connection: AsyncConnection, identity: UpstreamIdentity, context: Context
) -> SignedIn:
    """Resolve a login to a broker user: the linked one, an auto-linked one, or a new one.

    Raises ``UserDisabled``, ``UnusableIdentity`` or ``LinkRefused`` (an email collision that
    may not link); the caller audits those in a transaction of their own.
    """
    identity = _fitted(identity)
    profile = identity.login.profile
    existing = await _existing_link(connection, identity.provider_id, profile.subject)
    values = await _profile_values(connection, profile, context)
    if existing is not None:
        if existing.status != "active":
            raise UserDisabled(existing.user_id)
        user_id, profile_id, created = existing.user_id, existing.id, False
        await _update_profile(connection, profile_id, values, context.now, context.issuer)
    else:
        # docs/security.md "Auto-linking needs both sides authoritative": an unproven address is not
        # even looked up (no
        # answer, and no time taken, that depends on whether someone holds it).
        matching = (
            await users_with_proven_email(
                connection, profile.email, other_than_provider=identity.provider_id
            )
            if profile.email and email_proven(profile)
            else []
        )
        linked_to = auto_link_decision(identity, matching)
        if linked_to is not None:
            status = (
                await connection.execute(select(USERS.c.status).where(USERS.c.id == linked_to))
            ).scalar_one()
            if status != "active":
                raise UserDisabled(linked_to)
            if await _has_link_to(connection, linked_to, identity.provider_id):
                # Another account of this provider is already this user's login method.
                raise LinkRefused("provider_already_linked", linked_to)
            user_id, created = linked_to, False
            profile_id = await _insert_profile(connection, context, identity, user_id, values)
            await _audit(
                connection,
                context,
                action="link.created",
                actor=identity.actor,
                user_id=user_id,
                data={
                    "provider": identity.provider_id,
                    "profile_id": str(profile_id),
                    "method": "verified_email",
                },
            )
        else:
            user_id, created = uuid.uuid4(), True
            await connection.execute(
                insert(USERS).values(
                    id=user_id,
                    status="active",
                    created_at=context.now,
                    updated_at=context.now,
                    last_login_at=context.now,
                )
            )
            profile_id = await _insert_profile(connection, context, identity, user_id, values)
            await _audit(
                connection,
                context,
                action="user.created",
                actor=identity.actor,
                user_id=user_id,
                data={"provider": identity.provider_id},
            )
            await _audit(
                connection,
                context,
                action="link.created",
                actor=identity.actor,
                user_id=user_id,
                data={"provider": identity.provider_id, "profile_id": str(profile_id)},
            )
    avatar_pending = await _after_login(connection, context, identity, user_id, profile_id)
    await _audit(
        connection,
        context,
        action="user.signed_in",
        actor=identity.actor,
        user_id=user_id,
        data={"provider": identity.provider_id},
    )
    return SignedIn(user_id, profile_id, created=created, avatar_pending=avatar_pending)


async def link_identity(
    connection: AsyncConnection,
    identity: UpstreamIdentity,
    context: Context,
    *,
    user_id: uuid.UUID,
) -> SignedIn:
    """The explicit link flow: attach the identity to the signed-in ``user_id``.

    Raises ``LinkRefused`` when the identity belongs to another user, or the user already has
    a link to this provider (unlink it first), or the user is no longer active.
    """
    identity = _fitted(identity)
    profile = identity.login.profile
    status = (
        await connection.execute(select(USERS.c.status).where(USERS.c.id == user_id))
    ).scalar_one_or_none()
    if status != "active":
        raise LinkRefused("user_inactive")
    existing = await _existing_link(connection, identity.provider_id, profile.subject)
    values = await _profile_values(connection, profile, context)
    if existing is not None and existing.user_id != user_id:
        raise LinkRefused("linked_to_another_user")
    if existing is not None:
        profile_id = existing.id
        await _update_profile(connection, profile_id, values, context.now, context.issuer)
    else:
        if await _has_link_to(connection, user_id, identity.provider_id):
            raise LinkRefused("provider_already_linked")
        profile_id = await _insert_profile(connection, context, identity, user_id, values)
        await _audit(
            connection,
            context,
            action="link.created",
            actor=f"user:{user_id}",
            user_id=user_id,
            data={
                "provider": identity.provider_id,
                "profile_id": str(profile_id),
                "method": "link_flow",
                "upstream_subject": profile.subject,
            },
        )
    avatar_pending = await _after_login(connection, context, identity, user_id, profile_id)
    return SignedIn(user_id, profile_id, created=False, avatar_pending=avatar_pending)


async def _after_login(
    connection: AsyncConnection,
    context: Context,
    identity: UpstreamIdentity,
    user_id: uuid.UUID,
    profile_id: uuid.UUID,
) -> bool:
    """Tokens, last login, the user's claims; whether the link's picture still waits to be
    fetched and stored (a profile sync does it after the commit)."""
    if identity.login.tokens is not None:
        await store_upstream_tokens(
            connection,
            user_id=user_id,
            profile_id=profile_id,
            provider_id=identity.provider_id,
            tokens=identity.login.tokens,
            keyring=context.keyring,
            now=context.now,
        )
    await connection.execute(
        update(USERS).where(USERS.c.id == user_id).values(last_login_at=context.now)
    )
    await refresh_user_claims(connection, user_id, context.now)
    picture = (
        await connection.execute(
            select(PROFILES.c.picture_source, PROFILES.c.avatar_url).where(
                PROFILES.c.id == profile_id
            )
        )
    ).one()
    ours = f"{context.issuer}/avatars/"
    return bool(picture.picture_source) and not (picture.avatar_url or "").startswith(ours)


async def holds_usable_refresh_token(
    connection: AsyncConnection, provider_id: str, subject: str, now: dt.datetime
) -> bool:
    """Whether the broker keeps an upstream refresh token for this identity that still works."""
    row = (
        await connection.execute(
            select(LINKS.c.refresh_expires_at)
            .join(PROFILES, PROFILES.c.id == LINKS.c.profile_id)
            .where(
                PROFILES.c.provider == provider_id,
                PROFILES.c.subject == subject,
                LINKS.c.refresh_token_enc.is_not(None),
                LINKS.c.state.in_(("ok", "refresh_failing")),
            )
        )
    ).first()
    return row is not None and (row.refresh_expires_at is None or row.refresh_expires_at > now)
