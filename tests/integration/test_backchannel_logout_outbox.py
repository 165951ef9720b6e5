"""Every way a broker session ends owes its relying party exactly one Logout Token: the outbox
(committed ``session.revoked`` audit rows behind their own cursor) writes one delivery per ended
session of a client with a ``backchannel_logout_uri``, never one for a session that did not end
or a client without one."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from shared.auth_sessions import create_session, revoke_session
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_CURSORS, SESSIONS
from shared.jobs.base import JobDeps
from shared.jobs.logout_outbox import OUTBOX_CURSOR, collect_batch, collect_deliveries
from shared.jobs.upstream_refresh import UpstreamRefreshPayload, refresh_upstream_token
from shared.runtime import Runtime
from sqlalchemy import select

from tests.conftest import broker_settings
from tests.support.accounts import sign_in
from tests.support.backchannel import collect_past, deliveries_of
from tests.support.flows import authorize, bearer, exchange, login, refresh
from tests.support.jwts import claims_of
from tests.support.links import create_link, mint_grants, start_session
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

# Nothing here delivers: the tokens owed are only counted.
NOWHERE = "http://127.0.0.1:9/backchannel-logout"
WEB = {"client_id": "bcl-web", "redirect_uri": "http://127.0.0.1:3000/bcl-web"}
SPA = {"client_id": "bcl-spa", "redirect_uri": "http://127.0.0.1:3000/bcl-spa"}
PLAIN = {"client_id": "bcl-plain", "redirect_uri": "http://127.0.0.1:3000/bcl-plain"}
SIGNED_OUT = "http://127.0.0.1:3000/bcl-signed-out"


def clients() -> list[dict[str, Any]]:
    return [
        {
            "id": WEB["client_id"],
            "redirect_uris": [WEB["redirect_uri"]],
            "post_logout_redirect_uris": [SIGNED_OUT],
            "backchannel_logout_uri": NOWHERE,
        },
        {
            "id": SPA["client_id"],
            "redirect_uris": [SPA["redirect_uri"]],
            "backchannel_logout_uri": NOWHERE,
            "backchannel_logout_session_required": True,
        },
        {"id": PLAIN["client_id"], "redirect_uris": [PLAIN["redirect_uri"]]},
        {
            "id": "console",
            "redirect_uris": ["http://127.0.0.1:3000/console"],
            "scopes": ["openid", "email", "profile", "offline_access", "admin"],
        },
    ]


@dataclass
class Broker:
    runtime: Runtime
    http: httpx2.AsyncClient
    deps: JobDeps
    admin_headers: dict[str, str]


@pytest.fixture
async def bcl(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> AsyncIterator[Broker]:
    admin_subject = f"admin-{uuid.uuid4().hex[:10]}"
    settings = broker_settings(
        database_url, upstream_idp, keyring, clients=clients(), admins=[f"corp:{admin_subject}"]
    )
    async with running_broker(settings) as (runtime, http):
        _subject, admin_headers = await sign_in(http, idp, sub=admin_subject, admin_scope=True)
        yield Broker(runtime, http, runtime.resources.job_deps(), admin_headers)


def sid_of(tokens: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(claims_of(tokens["id_token"])["sid"])


async def new_user(idp: httpx2.AsyncClient) -> str:
    subject = f"bcl-{uuid.uuid4().hex[:10]}"
    await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    return subject


def assert_one_each(rows: list[Any], expected: dict[uuid.UUID, str], user_id: str) -> None:
    """One delivery per session, to that session's client, naming its user."""
    assert sorted((row.session_id, row.client_id) for row in rows) == sorted(expected.items())
    assert {str(row.user_id) for row in rows} == {user_id}
    assert len({row.jti for row in rows}) == len(rows)
    assert all(row.attempts == 0 and row.next_attempt_at is not None for row in rows)


async def test_logout_with_an_id_token_hint_owes_its_client_one_logout_token(bcl, idp):
    await new_user(idp)
    tokens = await login(bcl.http, **WEB)
    response = await bcl.http.get("/logout", params={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200

    rows = await collect_past(bcl.deps, sid_of(tokens))

    assert_one_each(rows, {sid_of(tokens): "bcl-web"}, claims_of(tokens["id_token"])["sub"])
    # Read again: the cursor is past it, nothing is written twice.
    await collect_deliveries(bcl.deps, batch_size=1000, max_seconds=5)
    assert len(await deliveries_of(bcl.deps, sid_of(tokens))) == 1


async def test_a_browsers_confirmed_sign_out_owes_each_of_its_clients_their_own(bcl, idp):
    # One browser signed in to two relying parties (and to one without back-channel logout):
    # its sign-out ends three sessions, and each client with a URI is told of its own.
    await new_user(idp)
    web, spa, plain = [await login(bcl.http, **client) for client in (WEB, SPA, PLAIN)]
    page = await bcl.http.get("/logout")
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    assert (await bcl.http.post("/logout", data=fields)).status_code == 200

    rows = await collect_past(bcl.deps, sid_of(web), sid_of(spa), sid_of(plain))

    user_id = claims_of(web["id_token"])["sub"]
    assert_one_each(rows, {sid_of(web): "bcl-web", sid_of(spa): "bcl-spa"}, user_id)


async def test_revoking_a_refresh_token_at_the_revocation_endpoint(bcl, idp):
    await new_user(idp)
    tokens = await login(bcl.http, **WEB)
    response = await bcl.http.post(
        "/revoke", data={"token": tokens["refresh_token"], "client_id": "bcl-web"}
    )
    assert response.status_code == 200

    rows = await collect_past(bcl.deps, sid_of(tokens))

    assert_one_each(rows, {sid_of(tokens): "bcl-web"}, claims_of(tokens["id_token"])["sub"])


async def test_revoking_ones_own_sessions_through_the_first_party_api(bcl, idp):
    await new_user(idp)
    first, second, third = [await login(bcl.http, **WEB) for _ in range(3)]
    own = await bcl.http.delete("/auth/oauth2/revoke", headers=bearer(first))
    assert own.json()["revoked_sessions"] == [str(sid_of(first))]
    every = await bcl.http.delete(
        "/auth/oauth2/revoke", params={"all": "true"}, headers=bearer(second)
    )
    assert sorted(every.json()["revoked_sessions"]) == sorted(
        str(sid_of(tokens)) for tokens in (second, third)
    )

    rows = await collect_past(bcl.deps, sid_of(first), sid_of(second), sid_of(third))

    expected = {sid_of(tokens): "bcl-web" for tokens in (first, second, third)}
    assert_one_each(rows, expected, claims_of(first["id_token"])["sub"])


async def test_an_admin_revoking_a_session(bcl, idp):
    await new_user(idp)
    tokens = await login(bcl.http, **WEB)
    response = await bcl.http.delete(
        f"/admin/oauth2/tokens/{sid_of(tokens)}", headers=bcl.admin_headers
    )
    assert response.status_code == 200, response.text

    rows = await collect_past(bcl.deps, sid_of(tokens))

    assert_one_each(rows, {sid_of(tokens): "bcl-web"}, claims_of(tokens["id_token"])["sub"])


async def test_an_admin_disabling_the_user(bcl, idp):
    await new_user(idp)
    web, spa = await login(bcl.http, **WEB), await login(bcl.http, **SPA)
    user_id = claims_of(web["id_token"])["sub"]
    response = await bcl.http.post(
        f"/admin/oauth2/users/{user_id}/disable", headers=bcl.admin_headers
    )
    assert response.status_code == 200, response.text

    rows = await collect_past(bcl.deps, sid_of(web), sid_of(spa))

    assert_one_each(rows, {sid_of(web): "bcl-web", sid_of(spa): "bcl-spa"}, user_id)


async def test_a_replayed_refresh_token(bcl, idp):
    await new_user(idp)
    tokens = await login(bcl.http, **WEB)
    rotated = (await refresh(bcl.http, tokens["refresh_token"], "bcl-web")).json()
    assert (await refresh(bcl.http, rotated["refresh_token"], "bcl-web")).status_code == 200
    replay = await refresh(bcl.http, tokens["refresh_token"], "bcl-web")  # successor was used
    assert replay.json()["error"] == "invalid_grant"

    rows = await collect_past(bcl.deps, sid_of(tokens))

    assert_one_each(rows, {sid_of(tokens): "bcl-web"}, claims_of(tokens["id_token"])["sub"])


async def test_a_replayed_authorization_code(bcl, idp):
    await new_user(idp)
    result = await authorize(bcl.http, **WEB)
    first = await exchange(bcl.http, result, **WEB)
    assert first.status_code == 200
    again = await exchange(bcl.http, result, **WEB)
    assert again.json()["error"] == "invalid_grant"

    tokens = first.json()
    rows = await collect_past(bcl.deps, sid_of(tokens))

    assert_one_each(rows, {sid_of(tokens): "bcl-web"}, claims_of(tokens["id_token"])["sub"])


async def test_an_upstream_grant_found_revoked_by_the_worker(bcl, idp):
    subject = f"bcl-{uuid.uuid4().hex[:10]}"
    (grant,) = await mint_grants(idp, {"sub": subject, "email": f"{subject}@corp.example"})
    link = await create_link(
        bcl.deps.engine,
        bcl.deps.settings.keyring,
        grant,
        subject=subject,
        expires_at=bcl.deps.clock.now(),
    )
    await start_session(bcl.deps.engine, link, client_id="bcl-web")
    await start_session(bcl.deps.engine, link, client_id="bcl-spa")
    await idp.post("/_control/refresh_faults", json={"mode": "invalid_grant"})

    result = await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.token_id), bcl.deps)

    assert result["status"] == "revoked" and result["sessions_revoked"] == 2
    async with bcl.deps.engine.connect() as connection:
        sessions = await connection.execute(
            select(SESSIONS.c.id, SESSIONS.c.client_id).where(
                SESSIONS.c.profile_id == link.profile_id
            )
        )
        expected = {row.id: row.client_id for row in sessions}
    rows = await collect_past(bcl.deps, *expected)
    assert_one_each(rows, expected, str(link.user_id))


async def test_a_revocation_that_rolled_back_owes_nothing(bcl, idp):
    await new_user(idp)
    tokens = await login(bcl.http, **WEB)

    with pytest.raises(RuntimeError, match="changed its mind"):
        async with bcl.deps.engine.begin() as connection:
            revocation = await revoke_session(
                connection, sid_of(tokens), now=bcl.deps.clock.now(), reason="logout", actor="t"
            )
            assert revocation is not None
            raise RuntimeError("changed its mind")
    # A later revocation of another session: once the outbox is past it, it was past the
    # rolled-back one too (had it committed, it would sort earlier).
    later = await login(bcl.http, **WEB)
    assert (await bcl.http.delete("/auth/oauth2/revoke", headers=bearer(later))).status_code == 200
    await collect_past(bcl.deps, sid_of(later))

    assert await deliveries_of(bcl.deps, sid_of(tokens)) == []
    assert (await bcl.http.get("/userinfo", headers=bearer(tokens))).status_code == 200


async def test_a_client_without_a_backchannel_logout_uri_is_owed_nothing(bcl, idp):
    await new_user(idp)
    tokens = await login(bcl.http, **PLAIN)
    await bcl.http.get("/logout", params={"id_token_hint": tokens["id_token"]})

    assert await collect_past(bcl.deps, sid_of(tokens)) == []


async def test_concurrent_readers_write_each_delivery_once(bcl, idp):
    now = bcl.deps.clock.now()
    await new_user(idp)
    user_id = uuid.UUID(claims_of((await login(bcl.http, **WEB))["id_token"])["sub"])
    sessions = []
    async with bcl.deps.engine.begin() as connection:
        for _ in range(30):
            grant = await create_session(
                connection, user_id=user_id, client_id="bcl-web", provider="corp",
                profile_id=None, scope="openid", auth_time=now, now=now, refresh_ttl=600,
            )  # fmt: skip
            sessions.append(grant.session_id)
    for session_id in sessions:  # one transaction each: thirty revocations to read
        async with bcl.deps.engine.begin() as connection:
            await revoke_session(connection, session_id, now=now, reason="logout", actor="t")

    # Eight readers at once, in batches that split the thirty: whichever holds the cursor
    # writes a batch, the others find it taken (None) or read after it.
    await asyncio.gather(*(collect_batch(bcl.deps, 7) for _ in range(8)))
    rows = await collect_past(bcl.deps, *sessions)

    assert sorted(row.session_id for row in rows) == sorted(sessions)


async def test_the_outbox_cursor_is_a_row_of_audit_relay_cursors(bcl, idp):
    # Audit retention keeps every row some cursor there has not passed: none is dropped unread.
    await collect_batch(bcl.deps, 10)
    async with bcl.deps.engine.connect() as connection:
        streams = set(await connection.scalars(select(AUDIT_CURSORS.c.stream)))
    assert OUTBOX_CURSOR in streams
