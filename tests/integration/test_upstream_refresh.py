"""Upstream token refresh, in the test process: near-expiry tokens are refreshed and re-encrypted,
``invalid_grant`` acts by policy, transient failures back off and revoke nothing. The upstream
is the real stand-in OpenID Provider over HTTP; the database is the run's PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_TABLE, LINKS
from shared.jobs.base import JobDeps, JobName
from shared.jobs.queue import InProcessJobQueue
from shared.jobs.upstream_refresh import (
    UpstreamRefreshPayload,
    UpstreamScanPayload,
    refresh_upstream_token,
    retry_delay,
)
from shared.settings import Settings
from sqlalchemy import select, update

from tests.conftest import broker_settings, corp_provider
from tests.support.flows import refresh
from tests.support.job_deps import job_deps
from tests.support.links import (
    Link,
    create_link,
    link_row,
    mint_grants,
    start_session,
    stored_tokens,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def soon(seconds: int = 60) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def corp_settings(database_url: str, upstream: str, keyring: Keyring, **corp: Any) -> Settings:
    return broker_settings(
        database_url, upstream, keyring, providers=[corp_provider(upstream, **corp)]
    )


@pytest.fixture
async def deps(database_url: str, upstream_idp: str, keyring: Keyring) -> AsyncIterator[JobDeps]:
    async with job_deps(corp_settings(database_url, upstream_idp, keyring)) as deps:
        yield deps


async def new_link(
    idp: httpx2.AsyncClient, deps: JobDeps, *, expires_at: dt.datetime | None = None
) -> Link:
    subject = f"sub-{uuid.uuid4().hex[:12]}"
    (grant,) = await mint_grants(idp, {"sub": subject, "email": f"{subject}@corp.example"})
    return await create_link(
        deps.engine, deps.settings.keyring, grant, subject=subject, expires_at=expires_at or soon()
    )


async def audit_actions(deps: JobDeps, subject: uuid.UUID) -> list[str]:
    async with deps.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE.c.action)
            .where(AUDIT_TABLE.c.subject == str(subject))
            .order_by(AUDIT_TABLE.c.id)
        )
        return list(rows.scalars())


async def refresh_log(idp: httpx2.AsyncClient) -> dict[str, Any]:
    response = await idp.get("/_control/refresh_log")
    body: dict[str, Any] = response.json()
    return body


async def test_a_near_expiry_token_is_found_by_the_scan_refreshed_and_stored_encrypted(
    idp: httpx2.AsyncClient, deps: JobDeps, upstream_idp: str
) -> None:
    link = await new_link(idp, deps)
    queue = InProcessJobQueue(deps)
    try:
        scan_id = await queue.enqueue(JobName.SCAN_UPSTREAM_TOKENS, UpstreamScanPayload())
        assert scan_id is not None
        scan = await asyncio.wait_for(queue.result(scan_id), 10)
        assert scan["enqueued"] >= 1

        async def refreshed() -> bool:
            return (await link_row(deps.engine, link)).last_refreshed_at is not None

        await eventually(refreshed, within=10, interval=0.05)
    finally:
        await queue.aclose()

    row = await link_row(deps.engine, link)
    access, refresh_token = stored_tokens(row, deps.settings.keyring)
    assert row.state == "ok" and row.failure_count == 0
    assert row.expires_at > soon(3000), "the new access token's expiry is stored"
    # The upstream rotated the refresh token: the new one is stored, the old one is spent.
    assert refresh_token and refresh_token != link.refresh_token
    assert (await refresh_log(idp))["counts"][link.refresh_token] == 1
    assert access != link.access_token
    assert access is not None and access.encode() not in row.access_token_enc
    assert refresh_token.encode() not in row.refresh_token_enc
    async with httpx2.AsyncClient() as http:
        userinfo = await http.get(
            f"{upstream_idp}/userinfo", headers={"Authorization": f"Bearer {access}"}
        )
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == link.subject
    assert "upstream_token.refreshed" in await audit_actions(deps, link.user_id)


async def test_a_token_not_yet_due_is_left_alone(idp: httpx2.AsyncClient, deps: JobDeps) -> None:
    link = await new_link(idp, deps, expires_at=soon(3600))

    result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)

    assert result["status"] == "skipped" and result["reason"] == "not_due"
    assert (await refresh_log(idp))["refreshes"] == []


async def test_invalid_grant_revokes_the_link_and_the_sessions_signed_in_through_it(
    idp: httpx2.AsyncClient, deps: JobDeps, broker: httpx2.AsyncClient
) -> None:
    link = await new_link(idp, deps)
    session_refresh_token = await start_session(deps.engine, link)
    await idp.post("/_control/refresh_faults", json={"mode": "invalid_grant"})

    result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)

    assert result["status"] == "revoked" and result["sessions_revoked"] == 1
    row = await link_row(deps.engine, link)
    assert row.state == "revoked"
    assert row.access_token_enc is None and row.refresh_token_enc is None
    response = await refresh(broker, session_refresh_token)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    actions = await audit_actions(deps, link.user_id)
    assert "upstream_token.revoked" in actions and "session.revoked" in actions


async def test_require_reauth_keeps_the_sessions_but_their_refresh_asks_for_a_new_sign_in(
    idp: httpx2.AsyncClient,
    broker: httpx2.AsyncClient,
    database_url: str,
    upstream_idp: str,
    keyring: Keyring,
) -> None:
    settings = corp_settings(
        database_url, upstream_idp, keyring, on_upstream_revoked="require_reauth"
    )
    async with job_deps(settings) as deps:
        link = await new_link(idp, deps)
        session_refresh_token = await start_session(deps.engine, link)
        await idp.post("/_control/refresh_faults", json={"mode": "invalid_grant"})

        result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)

        assert result["status"] == "reauth_required" and result["sessions_revoked"] == 0
        assert (await link_row(deps.engine, link)).state == "needs_reauth"
        response = await refresh(broker, session_refresh_token)
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid_grant",
            "error_description": "upstream_reauth_required",
        }
        assert "upstream_token.reauth_required" in await audit_actions(deps, link.user_id)
        assert "session.revoked" not in await audit_actions(deps, link.user_id)


async def test_a_503_backs_off_revokes_nothing_and_the_retry_refreshes(
    idp: httpx2.AsyncClient, deps: JobDeps, broker: httpx2.AsyncClient
) -> None:
    link = await new_link(idp, deps)
    session_refresh_token = await start_session(deps.engine, link)
    await idp.post("/_control/refresh_faults", json={"mode": "unavailable"})
    before = dt.datetime.now(dt.UTC)

    result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)

    assert result["status"] == "retry" and result["outcome"] == "retried"
    row = await link_row(deps.engine, link)
    base = deps.settings.upstream_retry_base
    assert row.state == "refresh_failing" and row.failure_count == 1
    assert stored_tokens(row, deps.settings.keyring)[1] == link.refresh_token
    assert before + dt.timedelta(seconds=base / 2 - 1) <= row.next_attempt_at
    assert row.next_attempt_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=base)
    # Not due again until the backoff has passed ...
    early = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)
    assert early["reason"] == "not_due"
    # ... and the session signed in through the link keeps working meanwhile.
    response = await refresh(broker, session_refresh_token)
    assert response.status_code == 200, response.text

    later = FrozenClock(row.next_attempt_at + dt.timedelta(seconds=1))
    async with job_deps(deps.settings, clock=later) as retry_deps:
        retried = await refresh_upstream_token(
            UpstreamRefreshPayload(token_id=link.token_id), retry_deps
        )
    assert retried["status"] == "refreshed"
    row = await link_row(deps.engine, link)
    assert row.state == "ok" and row.failure_count == 0 and row.next_attempt_at is None
    actions = await audit_actions(deps, link.user_id)
    assert actions.count("upstream_token.refresh_failing") == 1
    assert "session.revoked" not in actions


async def test_retry_after_is_honoured(idp: httpx2.AsyncClient, deps: JobDeps) -> None:
    link = await new_link(idp, deps)
    await idp.post("/_control/refresh_faults", json={"mode": "retry_after", "seconds": 900})

    result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)

    assert result["status"] == "retry"
    row = await link_row(deps.engine, link)
    assert row.next_attempt_at >= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=895)
    assert row.state == "refresh_failing"


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    settings = broker_settings(
        "sqlite+aiosqlite://",
        "http://127.0.0.1:9",
        Keyring.generate(),
        upstream_retry_base=10,
        upstream_retry_max=100,
    )
    assert [retry_delay(settings, n, None, 0.0) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 50]
    assert [retry_delay(settings, n, None, 0.999) for n in (1, 2)] == pytest.approx([9.995, 19.99])
    assert retry_delay(settings, 1, 70, 0.0) == 70
    assert retry_delay(settings, 1, 10_000, 0.0) == 100


async def test_two_jobs_for_one_link_refresh_it_once(
    idp: httpx2.AsyncClient, deps: JobDeps
) -> None:
    link = await new_link(idp, deps)
    await idp.post("/_control/refresh_faults", json={"mode": "slow", "seconds": 0.3})

    results = await asyncio.gather(
        *(
            refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)
            for _ in range(3)
        )
    )

    statuses = sorted(result["status"] for result in results)
    assert statuses == ["refreshed", "skipped", "skipped"]
    assert (await refresh_log(idp))["counts"] == {link.refresh_token: 1}


async def test_a_link_of_a_provider_no_longer_configured_is_skipped(
    idp: httpx2.AsyncClient, deps: JobDeps
) -> None:
    other = await new_link(idp, deps)
    async with deps.engine.begin() as connection:
        await connection.execute(
            update(LINKS).where(LINKS.c.id == other.token_id).values(provider="gone")
        )
    result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=other.token_id), deps)
    assert result["reason"] == "provider_not_configured"
    assert (await refresh_log(idp))["refreshes"] == []


async def test_a_refresh_cancelled_while_the_upstream_answers_still_stores_the_rotated_token(
    idp: httpx2.AsyncClient, deps: JobDeps, upstream_idp: str
) -> None:
    """A job timeout that lands while the upstream rotates the refresh token must not lose the
    new one: the upstream has already spent the old one (found by make soak)."""
    link = await new_link(idp, deps)
    await idp.post("/_control/outage", json={"mode": "slow", "delay": 1.0})
    job = asyncio.ensure_future(
        refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), deps)
    )
    await asyncio.sleep(0.3)  # the request is at the upstream, which answers after 1 s
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    async def stored() -> bool:
        return (await link_row(deps.engine, link)).last_refreshed_at is not None

    await eventually(stored, within=10, interval=0.05)
    await idp.post("/_control/outage", json={"mode": "none"})
    row = await link_row(deps.engine, link)
    refresh_token = stored_tokens(row, deps.settings.keyring)[1]
    assert refresh_token and refresh_token != link.refresh_token
    assert (await refresh_log(idp))["counts"][link.refresh_token] == 1
    # The stored token is the live one: the upstream takes it.
    async with httpx2.AsyncClient() as http:
        again = await http.post(
            f"{upstream_idp}/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=("broker", "broker-secret"),
        )
    assert again.status_code == 200, again.text
