"""Upstream links for the sync-worker benchmark: N users, each with an ``oauth2_profiles`` row and
its sealed upstream tokens, inserted in bulk; made due for refresh on demand.

The rows are the ones a sign-in writes (``store_upstream_tokens``): tokens sealed per row and
column with the keyring the workers get. The grants come from one ``POST /_control/grants`` of
the upstream stand-in, so they all belong to one upstream user; each profile still gets a subject
of its own (``(provider, subject)`` is unique), which a refresh never compares.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from shared.crypto.keyring import Keyring
from shared.db.database import create_engine
from shared.db.tables import LINKS, PROFILES, USERS
from shared.upstream_tokens import seal_upstream_token, unseal_upstream_token
from sqlalchemy import insert, text

from bench.database import libpq_url

PROVIDER = "corp"
DUE_IN = dt.timedelta(seconds=30)  # well inside the scan's margin (300 s)
# Stored this long ago: a token near its expiry has lived most of its life (an ``ok`` link is
# not refreshed before half its lifetime has passed).
STORED_AGO = dt.timedelta(hours=1)
NOT_DUE = dt.timedelta(days=1)


def _rows(
    keyring: Keyring, grants: Sequence[dict[str, Any]], now: dt.datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    users, profiles, links = [], [], []
    for index, grant in enumerate(grants):
        user_id, profile_id, token_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        users.append(
            {
                "id": user_id,
                "email": None,
                "email_verified": False,
                "display_name": f"Bench Link {index}",
                "status": "active",
                "created_at": now,
                "updated_at": now,
            }
        )
        profiles.append(
            {
                "id": profile_id,
                "user_id": user_id,
                "provider": PROVIDER,
                "provider_type": "oidc",
                "subject": f"bench-link-{index}",
                "email": None,
                "email_verified": False,
                "name": None,
                "profile_data": {},
                "created_at": now,
                "updated_at": now,
                "last_synced_at": now,  # no profile sync falls due during the benchmark
            }
        )
        sealed = {
            column: seal_upstream_token(keyring, token_id, column, grant.get(column))
            for column in ("access_token", "refresh_token", "id_token")
        }
        links.append(
            {
                "id": token_id,
                "profile_id": profile_id,
                "user_id": user_id,
                "provider": PROVIDER,
                "access_token_enc": sealed["access_token"],
                "refresh_token_enc": sealed["refresh_token"],
                "id_token_enc": sealed["id_token"],
                "token_type": "Bearer",
                "scope": None,
                "expires_at": now + NOT_DUE,
                "refresh_expires_at": None,
                "state": "ok",
                "failure_count": 0,
                "last_error": None,
                "next_attempt_at": None,
                "last_refreshed_at": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    return users, profiles, links


async def seed_links(
    database_url: str, keyring: Keyring, grants: Sequence[dict[str, Any]], *, batch: int = 2000
) -> None:
    """One link per grant, not yet due (:func:`arm_links` makes them due)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        users, profiles, links = _rows(keyring, grants, dt.datetime.now(dt.UTC))
        for start in range(0, len(grants), batch):
            async with engine.begin() as connection:
                for statement, rows in ((USERS, users), (PROFILES, profiles), (LINKS, links)):
                    await connection.execute(insert(statement), rows[start : start + batch])
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE users, oauth2_profiles, oauth2_tokens"))
    finally:
        await engine.dispose()


def arm_links(database_url: str) -> None:
    """Make every link due at once (stored an hour ago, expiring in 30 s) and not refreshed
    yet, in one statement."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        connection.execute(
            "UPDATE oauth2_tokens SET expires_at = now() + %s, updated_at = now() - %s, "
            "last_refreshed_at = NULL, state = 'ok', failure_count = 0, last_error = NULL, "
            "next_attempt_at = NULL",
            (DUE_IN, STORED_AGO),
        )


def refresh_tokens(database_url: str, keyring: Keyring) -> dict[str, str]:
    """Each link's current upstream refresh token (unsealed), by link id."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        rows = connection.execute("SELECT id, refresh_token_enc FROM oauth2_tokens").fetchall()
    tokens = {}
    for token_id, sealed in rows:
        token = unseal_upstream_token(keyring, token_id, "refresh_token", sealed)
        if token is not None:
            tokens[str(token_id)] = token
    return tokens
