"""``broker admins grant|revoke|list``: bootstrap admins kept in ``admin_grants``, beside the
``admins:`` configuration.

USER is a broker user id (``6f1c…`` or ``user:6f1c…``) or the ``provider:subject`` of a linked
profile, resolved to its user; never an email, which any provider can claim (docs/security.md "Roles
by identity, never by email").
A grant is stored by user id. Each change and its audit row (``admin.granted`` /
``admin.revoked``, actor ``cli:<login name>``) share one transaction.

Exit status: 0 when the user ends up as asked — including "already an admin" and "had no grant",
which change nothing; 1 when USER is malformed or names no user (nothing written) or the database
refuses; 2 for a configuration error (``broker.cli.main``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

from shared.audit import record_audit_core
from shared.clock import SystemClock, rfc3339
from shared.db.database import create_engine
from shared.db.tables import ADMIN_GRANTS, LINKS, PROFILES, USERS
from shared.settings import Settings
from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.cli.command import CommandError, cli_actor, run_command
from broker.oauth.roles import is_admin_user

_PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_USAGE = "give a broker user id (a UUID, or user:<id>) or <provider>:<subject> of a linked profile"


class AdminCommandError(CommandError):
    """USER is malformed or names nobody: the command writes nothing and exits 1."""


@dataclass(frozen=True)
class AdminEntry:
    """One line of ``broker admins list``: where the role comes from and whom it names."""

    source: str
    user_id: uuid.UUID | None
    email: str | None


def parse_user(text: str) -> tuple[uuid.UUID | None, tuple[str, str] | None]:
    """A user id, or a ``(provider, subject)`` to look up; ``AdminCommandError`` otherwise."""
    value = text.strip()
    kind, _, rest = value.partition(":")
    if kind == "user":
        try:
            return uuid.UUID(rest), None
        except ValueError:
            raise AdminCommandError(f"{text!r}: user: takes a broker user id (a UUID)") from None
    try:
        return uuid.UUID(value), None
    except ValueError:
        pass
    if rest and _PROVIDER_ID.fullmatch(kind):
        return None, (kind, rest)
    if "@" in value:
        raise AdminCommandError(
            f"{text!r} looks like an email: admins are never named by email (any provider can "
            f"claim one); {_USAGE}"
        )
    raise AdminCommandError(f"{text!r}: {_USAGE}")


async def resolve_user(connection: AsyncConnection, settings: Settings, text: str) -> uuid.UUID:
    """The broker user USER names, checked to exist."""
    user_id, profile = parse_user(text)
    if profile is not None:
        provider_id, subject = profile
        provider = settings.provider(provider_id)
        row = (
            await connection.execute(
                select(PROFILES.c.user_id, PROFILES.c.provider_type).where(
                    PROFILES.c.provider == provider_id, PROFILES.c.subject == subject
                )
            )
        ).first()
        # The dev provider's subject is whatever address someone typed (as in admins:).
        if (provider is not None and provider.type == "dev") or (
            row is not None and row.provider_type == "dev"
        ):
            raise AdminCommandError(f"{text!r}: the dev provider cannot grant admin")
        if row is None:
            raise AdminCommandError(
                f"no linked profile {text!r} (the user must have signed in with {provider_id!r})"
            )
        return uuid.UUID(str(row.user_id))
    assert user_id is not None
    if await connection.scalar(select(USERS.c.id).where(USERS.c.id == user_id)) is None:
        raise AdminCommandError(f"no user has id {user_id}")
    return user_id


async def _locked_user(connection: AsyncConnection, user_id: uuid.UUID) -> str:
    """``<id> (<email>)`` of the user, its row locked so grants of one user run one at a time."""
    email = await connection.scalar(
        select(USERS.c.email).where(USERS.c.id == user_id).with_for_update()
    )
    return f"user {user_id} ({email or 'no email'})"


async def grant(engine: AsyncEngine, settings: Settings, text: str, now: dt.datetime) -> str:
    actor = cli_actor()
    async with engine.begin() as connection:
        user_id = await resolve_user(connection, settings, text)
        who = await _locked_user(connection, user_id)
        existing = (
            await connection.execute(
                select(ADMIN_GRANTS.c.granted_by, ADMIN_GRANTS.c.granted_at).where(
                    ADMIN_GRANTS.c.user_id == user_id
                )
            )
        ).first()
        if existing is not None:
            return (
                f"{who} is already an admin (granted {rfc3339(existing.granted_at)} by "
                f"{existing.granted_by}); nothing changed"
            )
        await connection.execute(
            insert(ADMIN_GRANTS).values(user_id=user_id, granted_by=actor, granted_at=now)
        )
        await record_audit_core(
            connection,
            action="admin.granted",
            actor=actor,
            subject=str(user_id),
            data={"named_as": text.strip()},
            now=now,
        )
    return (
        f"granted admin to {who}\n"
        "admin power comes with a new sign-in through a client allowed the admin scope (the "
        f"dashboard at {settings.issuer}/admin, or a client with `admin` in its scopes); "
        "tokens issued before carry no admin scope"
    )


async def revoke(engine: AsyncEngine, settings: Settings, text: str, now: dt.datetime) -> str:
    actor = cli_actor()
    async with engine.begin() as connection:
        user_id = await resolve_user(connection, settings, text)
        who = await _locked_user(connection, user_id)
        deleted = await connection.execute(
            delete(ADMIN_GRANTS).where(ADMIN_GRANTS.c.user_id == user_id)
        )
        if deleted.rowcount:
            await record_audit_core(
                connection,
                action="admin.revoked",
                actor=actor,
                subject=str(user_id),
                data={"named_as": text.strip()},
                now=now,
            )
            message = f"revoked the admin grant of {who}"
        else:
            message = f"{who} has no admin grant; nothing changed"
        if await is_admin_user(connection, settings, user_id):
            message += (
                "\nnote: still an admin through the admins: configuration (BROKER_CONFIG); "
                "remove the entry there"
            )
    return message


async def list_admins(connection: AsyncConnection, settings: Settings) -> list[AdminEntry]:
    """Every grant, oldest first, then every ``admins:`` entry in config order."""
    entries = [
        AdminEntry(f"granted {rfc3339(row.granted_at)} by {row.granted_by}", row.user_id, row.email)
        for row in await connection.execute(
            select(
                ADMIN_GRANTS.c.user_id,
                ADMIN_GRANTS.c.granted_at,
                ADMIN_GRANTS.c.granted_by,
                USERS.c.email,
            )
            .join(USERS, USERS.c.id == ADMIN_GRANTS.c.user_id)
            .order_by(ADMIN_GRANTS.c.granted_at, ADMIN_GRANTS.c.user_id)
        )
    ]
    by_id = [uuid.UUID(entry[5:]) for entry in settings.admins if entry.startswith("user:")]
    pairs = [
        tuple(entry.split(":", 1)) for entry in settings.admins if not entry.startswith("user:")
    ]
    users = {}
    if by_id:
        rows = await connection.execute(
            select(USERS.c.id, USERS.c.email).where(USERS.c.id.in_(by_id))
        )
        users = {row.id: row.email for row in rows}
    profiles = {}
    if pairs:
        rows = await connection.execute(
            select(
                PROFILES.c.provider,
                PROFILES.c.subject,
                PROFILES.c.user_id,
                USERS.c.email,
                LINKS.c.state,
            )
            .join(USERS, USERS.c.id == PROFILES.c.user_id)
            .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
            .where(
                or_(*(and_(PROFILES.c.provider == p, PROFILES.c.subject == s) for p, s in pairs))
            )
        )
        profiles = {f"{row.provider}:{row.subject}": row for row in rows}
    for entry in settings.admins:
        source = f"config {entry}"
        if entry.startswith("user:"):
            user_id = uuid.UUID(entry[5:])
            if user_id not in users:
                entries.append(AdminEntry(f"{source} (no such user)", None, None))
                continue
            entries.append(AdminEntry(source, user_id, users[user_id]))
            continue
        row = profiles.get(entry)
        if row is None:
            entries.append(AdminEntry(f"{source} (no linked profile yet)", None, None))
            continue
        provider = settings.provider(row.provider)
        if provider is None or provider.disabled:
            source += " (provider disabled: does not count)"
        elif row.state in ("revoked", "needs_reauth"):
            source += f" (link {row.state}: does not count until it signs in again)"
        entries.append(AdminEntry(source, row.user_id, row.email))
    return entries


def render(entries: list[AdminEntry]) -> str:
    if not entries:
        return "no admins: grant one with `broker admins grant USER`"
    width = max(len("email"), *(len(entry.email or "-") for entry in entries)) + 2
    lines = [f"{'user id':<38}{'email':<{width}}source"]
    for entry in entries:
        user_id = str(entry.user_id) if entry.user_id else "-"
        lines.append(f"{user_id:<38}{entry.email or '-':<{width}}{entry.source}")
    return "\n".join(lines)


async def _run(settings: Settings, command: str, user: str | None) -> str:
    engine = create_engine(settings.database_url, pool_size=1)
    now = SystemClock().now()
    try:
        if command == "list":
            async with engine.connect() as connection:
                return render(await list_admins(connection, settings))
        assert user is not None
        if command == "grant":
            return await grant(engine, settings, user, now)
        return await revoke(engine, settings, user, now)
    finally:
        await engine.dispose()


def run_admin_command(settings: Settings, command: str, user: str | None = None) -> int:
    """Run ``grant``, ``revoke`` or ``list``; print what it did (errors on stderr)."""
    return run_command(_run(settings, command, user))
