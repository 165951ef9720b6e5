"""Upstream links for job tests: a user, a profile and its upstream tokens, from real grants of
the upstream stand-in (``POST /_control/grants``), stored the way a sign-in stores them."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import httpx2
from shared.auth_sessions import create_session
from shared.crypto.keyring import Keyring
from shared.db.tables import LINKS, PROFILES, USERS
from shared.providers.base import UpstreamTokens
from shared.upstream_tokens import store_upstream_tokens, unseal_upstream_token
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class Link:
    user_id: uuid.UUID
    profile_id: uuid.UUID
    token_id: uuid.UUID
    subject: str
    refresh_token: str
    access_token: str


async def mint_grants(
    idp: httpx2.AsyncClient, user: dict[str, Any], count: int = 1, client_id: str = "broker"
) -> list[dict[str, Any]]:
    response = await idp.post(
        "/_control/grants", json={"client_id": client_id, "user": user, "count": count}
    )
    assert response.status_code == 200, response.text
    grants: list[dict[str, Any]] = response.json()["grants"]
    return grants


async def create_link(
    engine: AsyncEngine,
    keyring: Keyring,
    grant: dict[str, Any],
    *,
    subject: str,
    provider: str = "corp",
    expires_at: dt.datetime,
    email: str | None = None,
    email_verified: bool = False,
    name: str | None = None,
) -> Link:
    now = dt.datetime.now(dt.UTC)
    user_id, profile_id = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(USERS).values(
                id=user_id,
                email=email,
                email_verified=email_verified,
                display_name=name,
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
        await connection.execute(
            insert(PROFILES).values(
                id=profile_id,
                user_id=user_id,
                provider=provider,
                provider_type="oidc",
                subject=subject,
                email=email,
                email_verified=email_verified,
                name=name,
                profile_data={},
                created_at=now,
                updated_at=now,
                last_synced_at=now,
            )
        )
        token_id = await store_upstream_tokens(
            connection,
            user_id=user_id,
            profile_id=profile_id,
            provider_id=provider,
            tokens=UpstreamTokens(
                access_token=grant["access_token"],
                refresh_token=grant["refresh_token"],
                id_token=grant.get("id_token"),
                expires_at=expires_at,
            ),
            keyring=keyring,
            # Stored an hour ago: a token near its expiry has lived most of its life.
            now=now - dt.timedelta(hours=1),
        )
    return Link(
        user_id, profile_id, token_id, subject, grant["refresh_token"], grant["access_token"]
    )


async def start_session(engine: AsyncEngine, link: Link, *, client_id: str = "web") -> str:
    """A broker session signed in through the link; its refresh token."""
    now = dt.datetime.now(dt.UTC)
    async with engine.begin() as connection:
        grant = await create_session(
            connection,
            user_id=link.user_id,
            client_id=client_id,
            provider="corp",
            profile_id=link.profile_id,
            scope="openid email profile offline_access",
            auth_time=now,
            now=now,
            refresh_ttl=3600,
        )
    return grant.refresh_token


async def link_row(engine: AsyncEngine, link: Link) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(select(LINKS).where(LINKS.c.id == link.token_id))).one()


def stored_tokens(row: Any, keyring: Keyring) -> tuple[str | None, str | None]:
    return (
        unseal_upstream_token(keyring, row.id, "access_token", row.access_token_enc),
        unseal_upstream_token(keyring, row.id, "refresh_token", row.refresh_token_enc),
    )


async def make_due(engine: AsyncEngine, link: Link, expires_at: dt.datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(LINKS).where(LINKS.c.id == link.token_id).values(expires_at=expires_at)
        )
