"""``broker providers list|disable|enable|reset``: the runtime switch of a provider, from a shell.

The same change as ``PATCH /admin/oauth2/providers/{id}`` (``broker.admin.provider_switch``):
one transaction writes the ``provider_states`` row and its audit event (actor
``cli:<login name>``), and ``--revoke-sessions`` ends the sessions signed in through the
provider. It is the way back when the admin API cannot be reached: a provider every admin
signs in with, switched off with its sessions, leaves nobody to switch it on again
(docs/admin.md "Providers").

Exit status: 0 when the provider ends up as asked (also when nothing changed); 1 when the
configuration names no such provider, the YAML disables it (``disabled: true`` wins), or the
database refuses; 2 for a configuration error (``broker.cli.main``).
"""

from __future__ import annotations

from shared.clock import SystemClock, rfc3339
from shared.db.database import create_engine
from shared.provider_states import effective_state, read_overrides
from shared.revocations import build_revocation_publisher
from shared.settings import Settings

from broker.admin.provider_switch import ProviderChange, SwitchDeps, apply_switch
from broker.cli.command import CommandError, cli_actor, run_command
from broker.http.errors import InvalidRequest

_CHANGES = {"disable": False, "enable": True, "reset": None}


class ProviderCommandError(CommandError):
    """The provider cannot be switched as asked: nothing is written, exit 1."""


async def _list(settings: Settings) -> str:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            overrides = await read_overrides(connection)
    finally:
        await engine.dispose()
    lines = []
    for config in settings.providers:
        override = overrides.get(config.id)
        state = effective_state(config_disabled=config.disabled, override=override)
        line = f"{config.id}\t{'enabled' if state.enabled else 'disabled'}\t{state.source}"
        if state.source == "runtime" and override is not None:
            line += f"\t{override.changed_by} at {rfc3339(override.changed_at)}"
            if override.reason:
                line += f": {override.reason}"
        lines.append(line)
    return "\n".join(lines) if lines else "no providers are configured"


async def _switch(
    settings: Settings,
    command: str,
    provider_id: str,
    reason: str | None,
    revoke_sessions: bool,
) -> str:
    config = settings.provider(provider_id)
    if config is None:
        raise ProviderCommandError(f"no provider {provider_id!r} is configured")
    if config.disabled and command != "reset":
        raise ProviderCommandError(
            f"{provider_id!r} is disabled in the configuration (disabled: true); enable it there"
        )
    document: dict[str, object] = {"enabled": _CHANGES[command], "reason": reason}
    if revoke_sessions:
        document["revoke_sessions"] = True
    try:
        change = ProviderChange.parse(document)
    except InvalidRequest as exc:
        raise ProviderCommandError(str(exc)) from None
    engine = create_engine(settings.database_url, pool_size=1)
    revocations = build_revocation_publisher(settings.redis_url)
    try:
        result = await apply_switch(
            SwitchDeps(engine, SystemClock(), revocations),
            cli_actor(),
            provider_id,
            config.disabled,
            change,
        )
    finally:
        await revocations.aclose()
        await engine.dispose()
    state = "enabled" if result["enabled"] else "disabled"
    done = "" if result["changed"] else " (unchanged)"
    ended = f"; {result['revoked_sessions']} sessions revoked" if revoke_sessions else ""
    return f"{provider_id}: {state}, from the {result['source']}{done}{ended}"


def run_provider_command(
    settings: Settings,
    command: str,
    provider_id: str | None = None,
    *,
    reason: str | None = None,
    revoke_sessions: bool = False,
) -> int:
    """Run ``list``, ``disable``, ``enable`` or ``reset``; print the outcome (errors on stderr)."""
    if command == "list":
        return run_command(_list(settings))
    assert provider_id is not None
    return run_command(_switch(settings, command, provider_id, reason, revoke_sessions))
