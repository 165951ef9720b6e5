"""The signed-in user's profile: the document ``/auth/oauth2/profile`` returns, and its edits.

A user edits only what the broker owns (display name, which link's email and avatar are
primary); any field a provider asserts is refused by name (DESIGN §5).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from shared.audit import record_audit_core
from shared.db.tables import LINKS, PROFILES, USERS
from shared.runtime import Runtime
from shared.user_claims import refresh_user_claims
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.http.errors import InvalidRequest
from broker.http.forms import is_utf8
from broker.oauth.callers import Caller

EDITABLE = ("display_name", "primary_email_provider", "primary_avatar_provider")
# What a provider asserts about the user: read-only here, refused by name (DESIGN §5).
PROVIDER_ASSERTED = (
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "picture",
    "avatar_url",
    "sub",
    "subject",
    "id",
    "status",
    "profiles",
)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def linked_providers(connection: AsyncConnection, user_id: uuid.UUID) -> set[str]:
    """The providers the user has a profile of."""
    return set(
        (
            await connection.execute(
                select(PROFILES.c.provider).where(PROFILES.c.user_id == user_id)
            )
        ).scalars()
    )


async def profile_document(
    runtime: Runtime, connection: AsyncConnection, caller: Caller
) -> dict[str, Any]:
    """The user and each linked profile, with the state of its upstream link."""
    user = (await connection.execute(select(USERS).where(USERS.c.id == caller.user_id))).one()
    rows = (
        await connection.execute(
            select(PROFILES, LINKS.c.state.label("link_state"))
            .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
            .where(PROFILES.c.user_id == caller.user_id)
            .order_by(PROFILES.c.created_at, PROFILES.c.id)
        )
    ).all()
    return {
        "user": {
            "id": str(user.id),
            "display_name": user.display_name,
            "custom_display_name": user.custom_display_name,
            "email": user.email,
            "email_verified": bool(user.email_verified),
            "picture": user.picture,
            "preferred_username": user.preferred_username,
            "primary_email_provider": user.primary_email_provider,
            "primary_avatar_provider": user.primary_avatar_provider,
            "status": user.status,
            "created_at": _iso(user.created_at),
            "last_login_at": _iso(user.last_login_at),
        },
        "profiles": [
            {
                "provider": row.provider,
                "provider_type": row.provider_type,
                "provider_configured": row.provider in runtime.providers,
                "subject": row.subject,
                "email": row.email,
                "email_verified": bool(row.email_verified),
                "name": row.name,
                "given_name": row.given_name,
                "family_name": row.family_name,
                "preferred_username": row.preferred_username,
                "picture": row.avatar_url,
                "link_state": row.link_state,
                "email_unverified_at": _iso(row.email_unverified_at),
                "linked_at": _iso(row.created_at),
                "last_login_at": _iso(row.last_login_at),
                "last_synced_at": _iso(row.last_synced_at),
            }
            for row in rows
        ],
    }


async def edit_profile(runtime: Runtime, caller: Caller, changes: Mapping[str, Any]) -> None:
    """Apply the edits a user may make (``EDITABLE``), audited; ``InvalidRequest`` names any
    field a provider asserts, an unknown one, or a bad value."""
    for name in changes:
        if name in PROVIDER_ASSERTED:
            raise InvalidRequest(f"{name} is asserted by the identity provider and read-only")
        if name not in EDITABLE:
            raise InvalidRequest(f"unknown field: {name}")
        value = changes[name]
        if value is not None and not (
            isinstance(value, str) and is_utf8(value) and "\x00" not in value
        ):
            raise InvalidRequest(f"{name} must be a string (without NUL) or null")
    values: dict[str, Any] = {}
    if "display_name" in changes:
        display_name = (changes["display_name"] or "").strip()
        if len(display_name) > 200:
            raise InvalidRequest("display_name is longer than 200 characters")
        values["custom_display_name"] = display_name or None
    now = runtime.clock.now()
    async with runtime.engine.begin() as connection:
        linked = await linked_providers(connection, caller.user_id)
        for name in ("primary_email_provider", "primary_avatar_provider"):
            if name in changes:
                if changes[name] is not None and changes[name] not in linked:
                    raise InvalidRequest(f"{name} must name a linked provider")
                values[name] = changes[name]
        await connection.execute(
            update(USERS).where(USERS.c.id == caller.user_id).values(**values, updated_at=now)
        )
        await refresh_user_claims(connection, caller.user_id, now)
        await record_audit_core(
            connection,
            action="profile.updated",
            actor=f"user:{caller.user_id}",
            subject=str(caller.user_id),
            data={"fields": sorted(changes)},
            now=now,
        )
