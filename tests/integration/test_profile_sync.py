"""Profile sync: a change made at the upstream shows in ``GET /auth/oauth2/profile`` after a sync,
with its audit event; avatars are fetched, stored by content hash and served by the broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
from shared.crypto.keyring import Keyring
from shared.db.tables import LINKS, PROFILES
from shared.jobs.base import JobName
from shared.jobs.profile_sync import ProfileSyncPayload, ProfileSyncScanPayload, sync_profile
from shared.jobs.queue import InProcessJobQueue
from shared.runtime import Runtime
from sqlalchemy import update

from tests.conftest import broker_settings
from tests.support.accounts import audit_rows, corp_profile, sign_in
from tests.support.flows import login
from tests.support.job_deps import job_deps
from tests.support.links import create_link, mint_grants
from tests.support.pictures import PNG
from tests.support.provider_broker import running_broker
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def changed_to(
    broker: httpx2.AsyncClient, headers: dict[str, str], name: str, value: Any
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        (link,) = [p for p in (await corp_profile(broker, headers))["profiles"]]
        return bool(link[name] == value)

    return check


async def test_an_upstream_change_shows_in_the_profile_after_an_on_demand_sync(
    runtime: Runtime, broker: httpx2.AsyncClient, idp: httpx2.AsyncClient
) -> None:
    subject, headers = await sign_in(broker, idp)
    user_id = (await corp_profile(broker, headers))["user"]["id"]
    new_email = f"renamed-{subject}@corp.example"
    await idp.post(
        f"/_control/users/{subject}",
        json={"email": new_email, "email_verified": False, "name": "After Sync"},
    )

    response = await broker.post("/auth/oauth2/profile/sync", headers=headers)

    assert response.status_code == 202, response.text
    (entry,) = response.json()["links"]
    assert entry["provider"] == "corp" and entry["status"] == "queued"
    await eventually(changed_to(broker, headers, "email", new_email), within=10)
    document = await corp_profile(broker, headers)
    (link,) = document["profiles"]
    assert link["name"] == "After Sync" and link["email_verified"] is False
    assert link["email_unverified_at"] is not None  # a verified address lost its verification
    assert document["user"]["email"] == new_email
    assert document["user"]["email_verified"] is False
    assert document["user"]["display_name"] == "After Sync"
    (event,) = await audit_rows(runtime, user_id, "profile.synced")
    assert event.actor == f"user:{user_id}"
    # an address that lost its verification no longer counts for linking by email either
    assert event.data["changed"] == ["email", "email_authoritative", "email_verified", "name"]
    assert event.data["email_verification_lost"] is True
    assert new_email not in str(event.data), "the audit names fields, not their values"


async def test_sync_needs_a_bearer_token_and_skips_links_without_upstream_tokens(
    broker: httpx2.AsyncClient,
) -> None:
    assert (await broker.post("/auth/oauth2/profile/sync")).status_code == 401
    tokens = await login(broker, provider="dev")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    response = await broker.post("/auth/oauth2/profile/sync", headers=headers)

    assert response.status_code == 202
    assert response.json()["links"] == [
        {"provider": "dev", "status": "skipped", "reason": "no_upstream_profile"}
    ]
    missing = await broker.post("/auth/oauth2/profile/sync?provider=corp", headers=headers)
    assert missing.status_code == 404


async def test_the_periodic_scan_syncs_links_not_synced_within_the_interval(
    runtime: Runtime, broker: httpx2.AsyncClient, idp: httpx2.AsyncClient
) -> None:
    subject, headers = await sign_in(broker, idp)
    document = await corp_profile(broker, headers)
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(PROFILES)
            .where(PROFILES.c.user_id == uuid.UUID(document["user"]["id"]))
            .values(last_synced_at=stale)
        )
    await idp.post(f"/_control/users/{subject}", json={"name": "Renamed Upstream"})

    async with job_deps(runtime.settings) as deps:
        queue = InProcessJobQueue(deps)
        try:
            scan_id = await queue.enqueue(JobName.SCAN_PROFILES, ProfileSyncScanPayload())
            assert scan_id is not None
            scan = await asyncio.wait_for(queue.result(scan_id), 10)
            assert scan["enqueued"] >= 1
            await eventually(changed_to(broker, headers, "name", "Renamed Upstream"), within=10)
        finally:
            await queue.aclose()
    (link,) = (await corp_profile(broker, headers))["profiles"]
    assert dt.datetime.fromisoformat(link["last_synced_at"]) > stale


async def test_a_provider_picture_is_fetched_stored_by_hash_and_served_by_the_broker(
    database_url: str,
    upstream_idp: str,
    keyring: Keyring,
    idp: httpx2.AsyncClient,
    picture_server: tuple[str, list[str]],
) -> None:
    base, asked = picture_server
    # Loopback fetches are allowed only by this explicit setting (tests, local stand-ins).
    settings = broker_settings(
        database_url, upstream_idp, keyring, allow_private_network_fetch=True
    )
    async with running_broker(settings) as (_runtime, broker):
        _subject, headers = await sign_in(broker, idp, picture=f"{base}/alice.png")
        digest = hashlib.sha256(PNG).hexdigest()
        ours = f"{settings.issuer}/avatars/{digest}"
        # The sign-in queued a sync that fetches the picture.
        await eventually(changed_to(broker, headers, "picture", ours), within=10)
        assert (await corp_profile(broker, headers))["user"]["picture"] == ours
        served = await broker.get(f"/avatars/{digest}")
    assert served.status_code == 200 and served.content == PNG
    assert served.headers["content-type"] == "image/png"  # from the bytes, not the header sent
    assert "immutable" in served.headers["cache-control"]
    assert asked == ["/alice.png"]


async def test_without_the_setting_a_loopback_picture_is_not_fetched(
    runtime: Runtime,
    broker: httpx2.AsyncClient,
    idp: httpx2.AsyncClient,
    picture_server: tuple[str, list[str]],
) -> None:
    base, asked = picture_server
    _subject, headers = await sign_in(broker, idp, picture=f"{base}/alice.png")
    await broker.post("/auth/oauth2/profile/sync", headers=headers)

    async def synced() -> bool:
        (link,) = (await corp_profile(broker, headers))["profiles"]
        return link["last_synced_at"] != link["linked_at"]

    await eventually(synced, within=10)
    (link,) = (await corp_profile(broker, headers))["profiles"]
    assert link["picture"] == f"{base}/alice.png", "the provider's URL stands in"
    assert asked == [], 'docs/security.md "Guarded avatar fetches": no request reached loopback'


async def test_a_sync_that_must_refresh_honours_the_links_backoff(
    runtime: Runtime, idp: httpx2.AsyncClient
) -> None:
    subject = f"backoff-{uuid.uuid4().hex[:10]}"
    (grant,) = await mint_grants(idp, {"sub": subject})
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)  # too close to expiry to use
    link = await create_link(
        runtime.engine, runtime.settings.keyring, grant, subject=subject, expires_at=soon
    )
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(LINKS)
            .where(LINKS.c.id == link.token_id)
            .values(
                state="refresh_failing",
                failure_count=1,
                next_attempt_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30),
            )
        )

    async with job_deps(runtime.settings) as deps:
        result = await sync_profile(ProfileSyncPayload(profile_id=link.profile_id), deps)

    assert result["status"] == "retry" and result["reason"] == "backing_off"
    assert (await idp.get("/_control/refresh_log")).json()["refreshes"] == []


async def test_an_admin_can_sync_another_users_profile_and_others_cannot(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> None:
    admin_subject = f"admin-{uuid.uuid4().hex[:10]}"
    settings = broker_settings(
        database_url, upstream_idp, keyring, admins=[f"corp:{admin_subject}"]
    )
    async with running_broker(settings) as (runtime, broker):
        subject, user_headers = await sign_in(broker, idp)
        user_id = (await corp_profile(broker, user_headers))["user"]["id"]
        _admin, admin_headers = await sign_in(broker, idp, sub=admin_subject, admin_scope=True)
        admin_id = (await corp_profile(broker, admin_headers))["user"]["id"]
        path = f"/admin/oauth2/users/{user_id}/sync"

        assert (await broker.post(path)).status_code == 401
        refused = await broker.post(path, headers=user_headers)
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
        await idp.post(f"/_control/users/{subject}", json={"name": "Synced By Admin"})
        response = await broker.post(path, headers=admin_headers)

        assert response.status_code == 202, response.text
        await eventually(changed_to(broker, user_headers, "name", "Synced By Admin"), within=10)
        (event,) = await audit_rows(runtime, user_id, "profile.synced")
        assert event.actor == f"user:{admin_id}"
        unknown = await broker.post(
            f"/admin/oauth2/users/{uuid.uuid4()}/sync", headers=admin_headers
        )
        assert unknown.status_code == 404
        garbage = await broker.post("/admin/oauth2/users/not-a-uuid/sync", headers=admin_headers)
        assert garbage.status_code == 404
        # An admin grant through a link whose upstream grant was revoked no longer counts.
        async with runtime.engine.begin() as connection:
            await connection.execute(
                update(LINKS).where(LINKS.c.user_id == uuid.UUID(admin_id)).values(state="revoked")
            )
        revoked = await broker.post(path, headers=admin_headers)
        assert revoked.status_code == 403
