"""The worker and a provider an admin switched off (docs/security.md "Switching a provider
off"): its links are neither refreshed nor synced until it is back, and nothing is sent to it
meanwhile. The upstream is the real stand-in; the job bodies run in the test process."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx2
import pytest
from shared.crypto.keyring import Keyring
from shared.db.tables import PROFILES
from shared.jobs.base import JobName
from shared.jobs.profile_sync import ProfileSyncPayload, sync_profile
from shared.jobs.queue import InProcessJobQueue
from shared.jobs.upstream_refresh import (
    UpstreamRefreshPayload,
    UpstreamScanPayload,
    refresh_upstream_token,
)
from shared.provider_states import delete_override, write_override
from sqlalchemy import select

from tests.conftest import broker_settings
from tests.support.job_deps import job_deps
from tests.support.links import create_link, link_row, mint_grants

pytestmark = pytest.mark.integration


async def test_a_disabled_providers_links_wait_and_are_refreshed_once_it_is_back(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> None:
    provider = f"partner-{uuid.uuid4().hex[:8]}"
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        providers=[
            {
                "id": provider,
                "type": "oidc",
                "issuer": upstream_idp,
                "client_id": "broker",
                "client_secret": "broker-secret",
                "scopes": ["openid", "email", "profile", "offline_access"],
            }
        ],
    )
    async with job_deps(settings) as deps:
        subject = f"sub-{uuid.uuid4().hex[:12]}"
        (grant,) = await mint_grants(idp, {"sub": subject, "email": f"{subject}@corp.example"})
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        link = await create_link(
            deps.engine, keyring, grant, subject=subject, provider=provider, expires_at=due
        )
        async with deps.engine.begin() as connection:
            await write_override(
                connection,
                provider,
                enabled=False,
                reason="compromised",
                actor="user:test",
                now=dt.datetime.now(dt.UTC),
                existing=None,
            )

        queue = InProcessJobQueue(deps)
        try:
            scan_id = await queue.enqueue(JobName.SCAN_UPSTREAM_TOKENS, UpstreamScanPayload())
            assert scan_id is not None
            scan = await asyncio.wait_for(queue.result(scan_id), 10)
        finally:
            await queue.aclose()
        refreshed = await refresh_upstream_token(
            UpstreamRefreshPayload(token_id=link.token_id), deps
        )
        synced = await sync_profile(ProfileSyncPayload(profile_id=link.profile_id), deps)

        assert (scan["due"], scan["enqueued"]) == (0, 0)
        assert (refreshed["status"], refreshed["reason"]) == ("skipped", "provider_disabled")
        assert (synced["status"], synced["reason"]) == ("skipped", "provider_disabled")
        assert (await idp.get("/_control/refresh_log")).json()["refreshes"] == []
        row = await link_row(deps.engine, link)
        assert row.state == "ok" and row.last_refreshed_at is None
        async with deps.engine.connect() as connection:
            attempted = await connection.scalar(
                select(PROFILES.c.sync_attempted_at).where(PROFILES.c.id == link.profile_id)
            )
        assert attempted is None  # not counted as a failing sync either

        async with deps.engine.begin() as connection:
            await delete_override(connection, provider)
        again = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)

        assert again["status"] == "refreshed"
        assert (await link_row(deps.engine, link)).last_refreshed_at is not None
