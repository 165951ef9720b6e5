"""Who is an admin, and the ``admin`` scope that carries admin power in a token.

An admin is a broker user id or a linked ``provider:subject`` named in the ``admins:``
configuration, or a user granted with ``broker admins grant`` (``admin_grants``) — never an
email, which any provider can claim (docs/security.md "Roles by identity, never by email").

Admin power reaches the admin API only through an access token carrying ``ADMIN_SCOPE``: a
client may ask for it only when its configuration lists it, the code grant keeps it only for a
user who is an admin at that moment (``admin_scope_for``), and every admin call checks the
role again (docs/security.md "Admin power needs the admin scope").
"""

from __future__ import annotations

import uuid

from shared.db.tables import ADMIN_GRANTS, LINKS, PROFILES
from shared.settings import Settings
from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

ADMIN_SCOPE = "admin"


async def is_admin_user(
    connection: AsyncConnection, settings: Settings, user_id: uuid.UUID
) -> bool:
    """Whether ``user_id`` is an admin: by config ``user:<id>``, by an ``admin_grants`` row, or
    by a config ``provider:subject`` naming one of its links that still counts."""
    if f"user:{user_id}" in settings.admins:
        return True
    # A primary-key lookup; the grant follows the user id, whichever provider they signed in with.
    if await connection.scalar(select(exists().where(ADMIN_GRANTS.c.user_id == user_id))):
        return True
    if not any(not entry.startswith("user:") for entry in settings.admins):
        return False
    # Only a link that still counts: its provider configured, its upstream grant not revoked
    # nor waiting for a new sign-in (an offboarded upstream account stops being admin).
    links = await connection.execute(
        select(PROFILES.c.provider, PROFILES.c.subject)
        .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
        .where(
            PROFILES.c.user_id == user_id,
            or_(LINKS.c.state.is_(None), LINKS.c.state.not_in(("revoked", "needs_reauth"))),
        )
    )
    configured = {provider.id for provider in settings.providers if not provider.disabled}
    return any(
        row.provider in configured and f"{row.provider}:{row.subject}" in settings.admins
        for row in links
    )


async def admin_scope_for(
    connection: AsyncConnection, settings: Settings, user_id: uuid.UUID, scope: str
) -> str:
    """``scope`` as granted to ``user_id``: ``admin`` stays only while the user is an admin."""
    scopes = scope.split()
    if ADMIN_SCOPE in scopes and not await is_admin_user(connection, settings, user_id):
        scopes.remove(ADMIN_SCOPE)
    return " ".join(scopes)
