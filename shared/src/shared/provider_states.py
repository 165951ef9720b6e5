"""Providers switched off (or on again) at runtime: the ``provider_states`` overrides of the YAML.

A provider's effective state: ``disabled: true`` in the YAML always wins (such a provider is
never loaded, so nothing can switch it on); otherwise its override row, if an admin wrote one;
otherwise enabled. Deleting the row returns the provider to the YAML's value.

Who reads the overrides, and when: the broker at each sign-in start (``/authorize`` and the
chooser), upstream callback and link flow, and the public and admin provider listings; the
worker at each upstream-refresh and profile-sync scan and job. Each read is one query of this
small table, so a change reaches every replica and worker at its next request or job, with no
cache to expire. The refresh grant never reads them: a disabled provider stops new sign-ins,
and ending the sessions it already signed in is a separate, explicit choice of the admin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.tables import PROVIDER_STATES


@dataclass(frozen=True)
class ProviderOverride:
    """An admin's switch of one provider: on or off, why, who and when."""

    provider_id: str
    enabled: bool
    reason: str | None
    changed_by: str
    changed_at: dt.datetime


@dataclass(frozen=True)
class EffectiveState:
    """Whether a configured provider signs people in now, and what decided it."""

    enabled: bool
    source: Literal["config", "runtime"]


def effective_state(*, config_disabled: bool, override: ProviderOverride | None) -> EffectiveState:
    """The YAML's ``disabled: true`` first (never loaded), then the override, then enabled."""
    if config_disabled:
        return EffectiveState(enabled=False, source="config")
    if override is not None:
        return EffectiveState(enabled=override.enabled, source="runtime")
    return EffectiveState(enabled=True, source="config")


def _override(row: Any) -> ProviderOverride:
    return ProviderOverride(
        provider_id=row.provider_id,
        enabled=bool(row.enabled),
        reason=row.reason,
        changed_by=row.changed_by,
        changed_at=row.changed_at,
    )


async def read_overrides(connection: AsyncConnection) -> dict[str, ProviderOverride]:
    """Every override row, by provider id (rows of providers no longer configured included)."""
    rows = await connection.execute(select(PROVIDER_STATES))
    return {row.provider_id: _override(row) for row in rows}


async def read_override(
    connection: AsyncConnection, provider_id: str, *, for_update: bool = False
) -> ProviderOverride | None:
    statement = select(PROVIDER_STATES).where(PROVIDER_STATES.c.provider_id == provider_id)
    if for_update:
        statement = statement.with_for_update()
    row = (await connection.execute(statement)).first()
    return _override(row) if row is not None else None


async def switched_off(connection: AsyncConnection) -> frozenset[str]:
    """The providers an admin has disabled at runtime."""
    rows = await connection.execute(
        select(PROVIDER_STATES.c.provider_id).where(PROVIDER_STATES.c.enabled.is_(False))
    )
    return frozenset(rows.scalars())


async def switched_off_now(engine: AsyncEngine) -> frozenset[str]:
    """``switched_off`` on a connection of its own (a request's or a job's one read)."""
    async with engine.connect() as connection:
        return await switched_off(connection)


async def is_switched_off(connection: AsyncConnection, provider_id: str) -> bool:
    """Whether an admin has disabled this one provider at runtime."""
    enabled = await connection.scalar(
        select(PROVIDER_STATES.c.enabled).where(PROVIDER_STATES.c.provider_id == provider_id)
    )
    return enabled is not None and not enabled


async def write_override(
    connection: AsyncConnection,
    provider_id: str,
    *,
    enabled: bool,
    reason: str | None,
    actor: str,
    now: dt.datetime,
    existing: ProviderOverride | None,
) -> ProviderOverride:
    """Store an admin's switch (the caller read ``existing`` under a lock, or knows there is
    none: a concurrent first write then fails on the primary key, and the caller retries)."""
    values = {"enabled": enabled, "reason": reason, "changed_by": actor, "changed_at": now}
    if existing is None:
        await connection.execute(insert(PROVIDER_STATES).values(provider_id=provider_id, **values))
    else:
        await connection.execute(
            update(PROVIDER_STATES)
            .where(PROVIDER_STATES.c.provider_id == provider_id)
            .values(**values)
        )
    return ProviderOverride(provider_id, enabled, reason, actor, now)


async def delete_override(connection: AsyncConnection, provider_id: str) -> None:
    """Back to the YAML's value."""
    await connection.execute(
        delete(PROVIDER_STATES).where(PROVIDER_STATES.c.provider_id == provider_id)
    )
