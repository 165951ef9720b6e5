"""The configured clients, and what the services among them have been issued.

Serves ``GET /admin/oauth2/clients`` (Ory Hydra's ``GET /admin/clients``, Keycloak's client
list): each client of the configuration with its id, name, grant types, how it authenticates,
scopes, audience and redirect URIs — never a secret (the ids of its public keys, for
``private_key_jwt``). A client that may use ``client_credentials`` also gets its service-token
activity: tokens issued in the last 24 hours and 30 days, and when the last one was.

The activity comes from the audit rows the grant writes (``token.issued`` with actor and
subject ``client:<id>``), read through the audit listing's ``(actor, occurred_at, id)`` index:
one statement for every service client's counts over 30 days (each client's rows in the window
are an index range), and for a client with none in that window one backward step of the same
index for its last token. A code grant's ``token.issued`` rows share the actor but name the user
as subject, so they are not counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from shared.clock import rfc3339
from shared.db.tables import AUDIT_TABLE
from shared.runtime import Runtime
from shared.settings import ClientConfig, Settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.admin.pagination import refuse_nul, refuse_unknown
from broker.http.errors import InvalidRequest
from broker.oauth.client_credentials import GRANT_TYPE, client_actor
from broker.oauth.grant_types import GRANTS

ISSUED = "token.issued"
DAY = dt.timedelta(days=1)
MONTH = dt.timedelta(days=30)
_FILTERS = {"grant_type"}


def _describe(client: ClientConfig, settings: Settings) -> dict[str, Any]:
    key_set = client.key_set
    return {
        "id": client.id,
        "name": client.name or client.id,
        "public": client.is_public,
        "grant_types": list(client.grant_types),
        "token_endpoint_auth_methods": list(client.auth_methods),
        "jwks_kids": [key.kid for key in key_set.keys if key.kid] if key_set else [],
        "scopes": list(client.scopes),
        "audience": list(client.audience or (settings.audience,)),
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "service_tokens": None,
    }


async def client_listing(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    """The ``/admin/oauth2/clients`` body: every configured client, in configuration order."""
    refuse_nul(query)
    refuse_unknown(query, _FILTERS)
    settings = runtime.settings
    grant_type = query.get("grant_type")
    if grant_type is not None and grant_type not in GRANTS:
        raise InvalidRequest(f"grant_type must be one of {', '.join(GRANTS)}")
    clients = [
        client
        for client in settings.clients
        if grant_type is None or grant_type in client.grant_types
    ]
    services = [client.id for client in clients if GRANT_TYPE in client.grant_types]
    activity: dict[str, dict[str, Any]] = {}
    if services:
        async with runtime.engine.connect() as connection:
            activity = await service_token_activity(connection, services, runtime.clock.now())
    listed = []
    for client in clients:
        described = _describe(client, settings)
        if client.id in activity:
            described["service_tokens"] = activity[client.id]
        listed.append(described)
    return {"clients": listed}


def _issued_by(actors: Sequence[str]) -> Any:
    """``token.issued`` rows of these clients acting for themselves (subject = actor)."""
    return (
        AUDIT_TABLE.c.action == ISSUED,
        AUDIT_TABLE.c.actor.in_(actors),
        AUDIT_TABLE.c.subject == AUDIT_TABLE.c.actor,
    )


async def service_token_activity(
    connection: AsyncConnection, client_ids: Sequence[str], now: dt.datetime
) -> dict[str, dict[str, Any]]:
    """Per client id: ``issued_24h``, ``issued_30d`` and ``last_issued_at`` (RFC 3339, or None
    when it never had a token the audit log still holds)."""
    actors = {client_actor(client_id): client_id for client_id in client_ids}
    occurred = AUDIT_TABLE.c.occurred_at
    rows = await connection.execute(
        select(
            AUDIT_TABLE.c.actor,
            func.count().filter(occurred >= now - DAY),
            func.count(),
            func.max(occurred),
        )
        .where(*_issued_by(list(actors)), occurred >= now - MONTH)
        .group_by(AUDIT_TABLE.c.actor)
    )
    activity: dict[str, dict[str, Any]] = {
        client_id: {"issued_24h": 0, "issued_30d": 0, "last_issued_at": None}
        for client_id in client_ids
    }
    for actor, day, month, last in rows:
        activity[actors[actor]] = {
            "issued_24h": day,
            "issued_30d": month,
            "last_issued_at": rfc3339(last),
        }
    for actor, client_id in actors.items():
        if activity[client_id]["last_issued_at"] is None:
            # Newest first along the actor index, stopping at its first service token.
            last = await connection.scalar(
                select(occurred).where(*_issued_by([actor])).order_by(occurred.desc()).limit(1)
            )
            activity[client_id]["last_issued_at"] = rfc3339(last) if last else None
    return activity
