"""A user's claims (email, name, picture, username, groups) derived from the linked profiles.

The broker owns three things about a user: a custom display name, and which linked provider's
email and avatar are primary. Everything else is asserted by a provider and copied from the
profiles here — the one place that decides, run after every sign-in, link, unlink, profile edit
and profile sync. Defaults, when the user chose nothing (or the chosen link is gone): the email
of the oldest link with a verified email (else the oldest with any), the avatar of the oldest
link with one. Groups are every link's upstream groups, each labelled with its provider id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import PROFILES, USERS

ProfileRow = Row[Any, Any, Any, Any, Any, Any, Any]


def _chosen(profiles: Sequence[ProfileRow], provider: str | None) -> ProfileRow | None:
    for profile in profiles:
        if profile.provider == provider:
            return profile
    return None


def labelled_groups(provider: str, profile_data: Any) -> set[str]:
    """``<provider id>:<group>`` for each group a link's provider asserted.

    docs/security.md "Groups are labelled by provider": a bare group name says nothing about who
    vouches for it (anyone
    can create a GitHub organization called ``admins``), so each one carries the id of the
    provider that asserted it and two providers' groups of the same name stay apart.
    """
    groups = profile_data.get("groups") if isinstance(profile_data, dict) else None
    if not isinstance(groups, list):
        return set()
    return {f"{provider}:{group}" for group in groups if isinstance(group, str) and group}


def _first(profiles: Sequence[ProfileRow], *checks: str) -> ProfileRow | None:
    for profile in profiles:
        if all(getattr(profile, name) for name in checks):
            return profile
    return None


async def refresh_user_claims(
    connection: AsyncConnection, user_id: uuid.UUID, now: dt.datetime
) -> None:
    user = (
        await connection.execute(
            select(
                USERS.c.custom_display_name,
                USERS.c.primary_email_provider,
                USERS.c.primary_avatar_provider,
            ).where(USERS.c.id == user_id)
        )
    ).first()
    if user is None:
        return
    profiles = (
        await connection.execute(
            select(
                PROFILES.c.provider,
                PROFILES.c.email,
                PROFILES.c.email_verified,
                PROFILES.c.name,
                PROFILES.c.preferred_username,
                PROFILES.c.avatar_url,
                PROFILES.c.profile_data,
            )
            .where(PROFILES.c.user_id == user_id)
            .order_by(PROFILES.c.created_at, PROFILES.c.id)
        )
    ).all()
    if not profiles:
        return
    email_from = (
        _chosen(profiles, user.primary_email_provider)
        or _first(profiles, "email", "email_verified")
        or _first(profiles, "email")
        or profiles[0]
    )
    avatar_from = _chosen(profiles, user.primary_avatar_provider) or _first(profiles, "avatar_url")
    name_from = email_from if email_from.name else _first(profiles, "name")
    groups = sorted(
        {
            group
            for profile in profiles
            for group in labelled_groups(profile.provider, profile.profile_data)
        }
    )
    await connection.execute(
        update(USERS)
        .where(USERS.c.id == user_id)
        .values(
            email=email_from.email,
            email_verified=bool(email_from.email and email_from.email_verified),
            display_name=user.custom_display_name or (name_from.name if name_from else None),
            picture=avatar_from.avatar_url if avatar_from else None,
            preferred_username=email_from.preferred_username
            or next((p.preferred_username for p in profiles if p.preferred_username), None),
            groups=groups or None,
            updated_at=now,
        )
    )
