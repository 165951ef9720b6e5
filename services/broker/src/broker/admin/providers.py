"""The providers listing: each configured provider as the YAML describes it (never a secret),
whether it signs people in now and why, its upstream's health, its links and its sign-ins.

Serves ``/admin/oauth2/providers`` and the dashboard's providers pages. What each part is read
from, with the cost at the admin benchmark's scale in mind:

- the description: the settings; only public values (client id, scopes, issuer or base URL,
  linking and sign-in rules) — the client secret is never read here;
- the state: ``shared.provider_states`` (the YAML, then an admin's override);
- health: this replica's cached probes (``shared.providers.health``: at most one probe per
  provider a minute, none waited on longer than its timeout); none for a provider the YAML
  disables, which is not loaded;
- links: identities linked through the provider, and their upstream grants by state, from the
  stats snapshot (``shared.jobs.stats_snapshot``, taken every ``audit_rollup_interval``; counted
  now before its first run): counting 130,000 links per request took ~0.1 s;
- the last upstream error: the newest error recorded on one of its links — a refresh the
  upstream refused or could not answer, or why a link died — through the partial index
  ``ix_oauth2_tokens_provider_error``; revocations the broker made itself (an admin, a
  refresh-token replay) are not the upstream's errors and are left out;
- sign-ins in the last 24 hours: ``user.signed_in`` audit rows through the audit listing's
  ``(action, occurred_at, id)`` index, a range on ``occurred_at`` (which also prunes a
  time-partitioned table).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from shared.clock import rfc3339
from shared.db.tables import AUDIT_TABLE, LINKS
from shared.jobs.stats_snapshot import IDENTITIES, LINK_COUNTS, link_counts, read_snapshot
from shared.provider_states import ProviderOverride, effective_state, read_overrides
from shared.providers.health import ProbeResult
from shared.runtime import Runtime
from shared.settings import (
    GitHubProviderConfig,
    GoogleProviderConfig,
    MicrosoftProviderConfig,
    OIDCProviderConfig,
    ProviderConfig,
)
from shared.settings.base import ID_PATTERN
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.http.errors import NotFound

SIGN_IN = "user.signed_in"
SIGN_IN_WINDOW = dt.timedelta(hours=24)
# Reasons the broker writes on a link it revoked itself (broker.admin.tokens, the reuse
# response of shared.refresh_rotation): not errors of the upstream.
BROKER_REVOCATIONS = ("revoked_by_admin", "refresh_token_reuse")


async def providers_listing(runtime: Runtime) -> dict[str, Any]:
    """Every configured provider, in the YAML's order (the JSON body; the dashboard's too)."""
    configs = list(runtime.settings.providers)
    health = await runtime.provider_health.statuses()
    async with runtime.engine.connect() as connection:
        overrides = await read_overrides(connection)
        described = await _described(runtime, connection, configs, overrides, health)
    return {"providers": described}


async def provider_entry(runtime: Runtime, provider_id: str) -> dict[str, Any]:
    """One configured provider; ``NotFound`` for any other id."""
    config = configured(runtime, provider_id)
    health = {}
    if provider_id in runtime.providers:
        health[provider_id] = await runtime.provider_health.status(provider_id)
    async with runtime.engine.connect() as connection:
        overrides = await read_overrides(connection)
        (entry,) = await _described(runtime, connection, [config], overrides, health)
    return entry


def configured(runtime: Runtime, provider_id: str) -> ProviderConfig:
    """The provider's configuration; ``NotFound`` unless the YAML names it."""
    config = (
        runtime.settings.provider(provider_id)
        if re.fullmatch(ID_PATTERN, provider_id)
        else None  # never a provider id (and PostgreSQL could not even compare a NUL)
    )
    if config is None:
        raise NotFound(f"no provider {provider_id!r} is configured")
    return config


async def _described(
    runtime: Runtime,
    connection: AsyncConnection,
    configs: list[ProviderConfig],
    overrides: dict[str, ProviderOverride],
    health: dict[str, ProbeResult],
) -> list[dict[str, Any]]:
    ids = [config.id for config in configs]
    now = runtime.clock.now()
    counts, taken = await read_snapshot(connection)
    if taken is None:  # before the snapshot job's first run (a new install): count now
        counts, taken = await link_counts(connection), now
    sign_ins = await _sign_ins(connection, ids, now - SIGN_IN_WINDOW)
    entries = []
    for config in configs:
        override = overrides.get(config.id)
        state = effective_state(config_disabled=config.disabled, override=override)
        entries.append(
            {
                **describe(config),
                "enabled": state.enabled,
                "source": state.source,
                "configured_enabled": not config.disabled,
                "override": _override(override),
                "health": _health(health.get(config.id)),
                "last_error": await _last_error(connection, config.id),
                "links": {
                    "total": counts.get((IDENTITIES, config.id), 0),
                    "states": {
                        state: counts.get((name, config.id), 0)
                        for state, name in LINK_COUNTS.items()
                    },
                    "as_of": _iso(taken),
                },
                "sign_ins_24h": sign_ins.get(config.id, 0),
            }
        )
    return entries


def describe(config: ProviderConfig) -> dict[str, Any]:
    """What the YAML says about a provider that is not a secret: never the client secret."""
    scopes: tuple[str, ...] = ()
    upstream: str | None = None
    restrictions: dict[str, list[str]] = {}
    if isinstance(config, OIDCProviderConfig | GoogleProviderConfig):
        upstream, scopes = config.issuer, config.scopes
    if isinstance(config, GoogleProviderConfig):
        restrictions["allowed_domains"] = list(config.allowed_domains)
    if isinstance(config, MicrosoftProviderConfig):
        upstream, scopes = f"{config.authority}/{config.tenant}/v2.0", config.scopes
        restrictions["allowed_tenants"] = list(config.allowed_tenants)
    if isinstance(config, GitHubProviderConfig):
        upstream, scopes = config.base_url, config.requested_scopes
        restrictions["allowed_organizations"] = list(config.allowed_organizations)
        restrictions["allowed_teams"] = list(config.allowed_teams)
    return {
        "id": config.id,
        "type": config.type,
        "display_name": config.title,
        "upstream": upstream,
        "client_id": getattr(config, "client_id", None),
        "scopes": list(scopes),
        "linking": {
            "link_by_email": config.link_by_email,
            "on_upstream_revoked": getattr(config, "on_upstream_revoked", None),
        },
        "restrictions": restrictions,
    }


def _iso(value: dt.datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _override(override: ProviderOverride | None) -> dict[str, Any] | None:
    if override is None:
        return None
    return {
        "enabled": override.enabled,
        "reason": override.reason,
        "changed_by": override.changed_by,
        "changed_at": _iso(override.changed_at),
    }


def _health(probe: ProbeResult | None) -> dict[str, Any] | None:
    if probe is None:
        return None
    return {
        "reachable": probe.reachable,
        "checked_at": _iso(probe.checked_at),
        "error": probe.reason,
        "checks": [
            {"name": check.name, "reachable": check.reachable, "error": check.error}
            for check in probe.checks
        ],
    }


async def _sign_ins(
    connection: AsyncConnection, ids: list[str], since: dt.datetime
) -> dict[str, int]:
    provider = AUDIT_TABLE.c.data["provider"].as_string()
    statement = (
        select(provider, func.count())
        .where(AUDIT_TABLE.c.action == SIGN_IN, AUDIT_TABLE.c.occurred_at >= since)
        .group_by(provider)
    )
    if len(ids) == 1:
        statement = statement.where(provider == ids[0])
    return {row[0]: int(row[1]) for row in await connection.execute(statement) if row[0] in ids}


async def _last_error(connection: AsyncConnection, provider_id: str) -> dict[str, Any] | None:
    row = (
        await connection.execute(
            select(LINKS.c.last_error, LINKS.c.updated_at, LINKS.c.state)
            .where(
                LINKS.c.provider == provider_id,
                LINKS.c.last_error.is_not(None),
                LINKS.c.last_error.not_in(BROKER_REVOCATIONS),
            )
            .order_by(LINKS.c.updated_at.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return {"error": row.last_error, "at": _iso(row.updated_at), "link_state": row.state}
