"""Switching a provider off or on at runtime, or back to its YAML value: an admin's override.

Serves ``PATCH /admin/oauth2/providers/{id}``, the dashboard's provider form and
``broker providers`` (the way back when no admin can sign in any more). The change
(``{"enabled": false | true | null, "reason": …, "revoke_sessions": …}``) is one transaction:
the ``provider_states`` row, its audit event (``provider.disabled`` / ``provider.enabled``, the
admin as actor) and, when asked, the revocation of every live session signed in through the
provider (each audited ``session.revoked``, reason ``provider_disabled``), published once
committed. Disabling stops new sign-ins, callbacks in flight, links, and the worker's
refreshes and syncs through the provider; sessions it already signed in keep working unless
``revoke_sessions`` ends them (docs/security.md "Switching a provider off").

A provider the YAML disables (``disabled: true``) is not loaded at all, so it cannot be
switched on here (409); ``enabled: null`` still clears a leftover override of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.audit import record_audit_core
from shared.auth_sessions import revoke_provider_sessions
from shared.clock import Clock
from shared.models.provider_state import REASON_LENGTH
from shared.provider_states import (
    delete_override,
    effective_state,
    read_override,
    write_override,
)
from shared.revocations import Revocation, RevocationPublisher
from shared.runtime import Runtime
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.admin.providers import configured
from broker.http.errors import Conflict, InvalidRequest
from broker.http.forms import is_utf8

FIELDS = ("enabled", "reason", "revoke_sessions")
SESSION_REASON = "provider_disabled"


@dataclass(frozen=True)
class ProviderChange:
    """What an admin asked for: on, off, or back to the YAML (None); why; end its sessions."""

    enabled: bool | None
    reason: str | None = None
    revoke_sessions: bool = False

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> ProviderChange:
        """From the JSON body; ``InvalidRequest`` naming the field that is wrong."""
        unknown = sorted(set(document) - set(FIELDS))
        if unknown:
            raise InvalidRequest(f"unknown field: {unknown[0]}")
        if "enabled" not in document:
            raise InvalidRequest("enabled is required: true, false, or null (the YAML's value)")
        enabled = document["enabled"]
        if enabled is not None and not isinstance(enabled, bool):
            raise InvalidRequest("enabled must be true, false or null")
        reason = document.get("reason")
        if reason is not None:
            if not isinstance(reason, str) or not is_utf8(reason):
                raise InvalidRequest("reason must be a string")
            reason = reason.strip() or None
        if reason is not None and (
            len(reason) > REASON_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in reason)
        ):
            raise InvalidRequest(
                f"reason must be one line of at most {REASON_LENGTH} printable characters"
            )
        revoke = document.get("revoke_sessions", False)
        if not isinstance(revoke, bool):
            raise InvalidRequest("revoke_sessions must be true or false")
        if revoke and enabled is not False:
            raise InvalidRequest("revoke_sessions goes with enabled: false")
        return cls(enabled=enabled, reason=reason, revoke_sessions=revoke)


async def switch_provider(
    runtime: Runtime, admin_id: uuid.UUID, provider_id: str, change: ProviderChange
) -> dict[str, Any]:
    """Apply ``change`` (see the module docstring); what the provider is now and what changed."""
    config = configured(runtime, provider_id)
    if config.disabled and change.enabled is not None:
        raise Conflict(
            f"{provider_id!r} is disabled in the configuration (disabled: true) and not loaded; "
            "enable it there"
        )
    return await apply_switch(
        SwitchDeps(runtime.engine, runtime.clock, runtime.revocations),
        f"user:{admin_id}",
        provider_id,
        config.disabled,
        change,
    )


@dataclass(frozen=True)
class SwitchDeps:
    """What a switch writes to and publishes on: the broker's runtime, or the CLI's own."""

    engine: AsyncEngine
    clock: Clock
    revocations: RevocationPublisher


async def apply_switch(
    deps: SwitchDeps,
    actor: str,
    provider_id: str,
    config_disabled: bool,
    change: ProviderChange,
) -> dict[str, Any]:
    """Apply ``change`` by ``actor`` (``user:<id>`` from the API, ``cli:<login>`` from
    ``broker providers``) to a provider the configuration names."""
    for attempt in range(2):
        try:
            return await _switch(deps, actor, provider_id, config_disabled, change)
        except IntegrityError:
            # Two first overrides of one provider raced; the retry finds the row and locks it.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


async def _switch(
    deps: SwitchDeps,
    actor: str,
    provider_id: str,
    config_disabled: bool,
    change: ProviderChange,
) -> dict[str, Any]:
    now = deps.clock.now()
    revocations: list[Revocation] = []
    async with deps.engine.begin() as connection:
        existing = await read_override(connection, provider_id, for_update=True)
        before = effective_state(config_disabled=config_disabled, override=existing)
        override = existing
        if change.enabled is None:
            changed = existing is not None
            if changed:
                await delete_override(connection, provider_id)
                override = None
        else:
            changed = (
                existing is None
                or existing.enabled != change.enabled
                or existing.reason != change.reason
            )
            if changed:
                override = await write_override(
                    connection,
                    provider_id,
                    enabled=change.enabled,
                    reason=change.reason,
                    actor=actor,
                    now=now,
                    existing=existing,
                )
        after = effective_state(config_disabled=config_disabled, override=override)
        if change.revoke_sessions:
            # Also when it was disabled already: a session that slipped in ends all the same.
            revocations = await revoke_provider_sessions(
                connection, provider_id, now=now, reason=SESSION_REASON, actor=actor
            )
        if changed:
            await record_audit_core(
                connection,
                action="provider.enabled" if after.enabled else "provider.disabled",
                actor=actor,
                subject=None,
                data={
                    "provider": provider_id,
                    "source": after.source,
                    "was_enabled": before.enabled,
                    "reason": change.reason,
                    "revoked_sessions": len(revocations),
                },
                now=now,
            )
    await deps.revocations.publish(revocations)
    return {
        "id": provider_id,
        "enabled": after.enabled,
        "source": after.source,
        "changed": changed,
        "revoked_sessions": len(revocations),
    }
