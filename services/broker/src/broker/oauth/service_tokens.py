"""Service tokens after they are issued: revoked one by one, by ``jti``.

A user's access token dies with its session; a service token (``client_credentials``) has no
session, so revoking it (RFC 7009) records its ``jti`` in ``revoked_access_tokens`` until the
token would have expired anyway, and introspection answers it ``active: false`` from then on.
Resource servers that verify offline see only its ``exp``: keep service tokens short-lived
(``BROKER_ACCESS_TOKEN_TTL``), or introspect (docs/security.md "Service tokens").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from shared.audit import record_audit_core
from shared.db.tables import REVOKED_ACCESS_TOKENS
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def is_revoked(connection: AsyncConnection, jti: str) -> bool:
    statement = select(REVOKED_ACCESS_TOKENS.c.jti).where(REVOKED_ACCESS_TOKENS.c.jti == jti)
    return await connection.scalar(statement) is not None


async def revoke_service_token(
    connection: AsyncConnection, claims: Mapping[str, Any], *, now: dt.datetime, actor: str
) -> bool:
    """Record the token's ``jti`` as revoked until its ``exp`` (audited ``token.revoked``);
    False if it already was. Inside the caller's transaction."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    client_id = str(claims["client_id"])
    inserted = await connection.execute(
        dialect.insert(REVOKED_ACCESS_TOKENS)
        .values(
            jti=str(claims["jti"]),
            client_id=client_id,
            revoked_at=now,
            expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
        )
        .on_conflict_do_nothing()
        .returning(REVOKED_ACCESS_TOKENS.c.jti)
    )
    if inserted.first() is None:
        return False
    await record_audit_core(
        connection,
        action="token.revoked",
        actor=actor,
        subject=f"client:{client_id}",
        client_id=client_id,
        data={"grant_type": "client_credentials", "jti": str(claims["jti"])},
        now=now,
    )
    return True
