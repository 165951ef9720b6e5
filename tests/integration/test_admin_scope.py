"""Admin power needs the ``admin`` scope (docs/security.md "Admin power needs the admin scope").

The scope is granted only to a client configured for it and only to a user who is an admin when
the tokens are issued; every admin call checks the role again. An admin's ordinary token from
any other relying party gets 403 ``insufficient_scope``.
"""

from __future__ import annotations

import uuid

import httpx2
import pytest
from shared.db.tables import ADMIN_GRANTS as GRANTS
from shared.runtime import Runtime
from sqlalchemy import delete, insert

from tests.integration.test_admin_users import ENDPOINTS
from tests.support.accounts import CONSOLE, Admin, corp_profile, sign_in
from tests.support.flows import bearer, login, refresh
from tests.support.jwts import claims_of

pytestmark = pytest.mark.integration


async def _grant_admin(runtime: Runtime, user_id: uuid.UUID) -> None:
    async with runtime.engine.begin() as connection:
        await connection.execute(
            insert(GRANTS).values(
                user_id=user_id, granted_by="test", granted_at=runtime.clock.now()
            )
        )


async def _revoke_admin(runtime: Runtime, user_id: uuid.UUID) -> None:
    async with runtime.engine.begin() as connection:
        await connection.execute(delete(GRANTS).where(GRANTS.c.user_id == user_id))


def _scope_claim(headers: dict[str, str]) -> list[str]:
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = claims_of(token)
    return str(claims["scope"]).split()


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_an_admins_token_from_an_ordinary_client_gets_insufficient_scope(
    admin: Admin, method: str, path: str
) -> None:
    _runtime, broker, admin_headers, admin_id = admin
    # The same admin signs in to the ordinary `web` relying party (the upstream's current user).
    ordinary = bearer(await login(broker))
    assert (await corp_profile(broker, ordinary))["user"]["id"] == admin_id
    url = path.format(user=admin_id, token=uuid.uuid4())

    refused = await broker.request(method, url, headers=ordinary)

    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge and 'scope="admin"' in challenge
    # The admin's console token still works, and the refused call changed nothing.
    assert (await broker.get("/admin/oauth2/users", headers=admin_headers)).status_code == 200
    assert (await corp_profile(broker, admin_headers))["user"]["status"] == "active"


async def test_a_client_not_configured_for_the_admin_scope_is_never_granted_it(
    admin: Admin,
) -> None:
    _runtime, broker, _headers, _admin_id = admin
    tokens = await login(broker, scope="openid email profile admin")  # `web`: no admin scope

    assert "admin" not in tokens["scope"].split()
    assert "admin" not in _scope_claim(bearer(tokens))
    assert (await broker.get("/admin/oauth2/users", headers=bearer(tokens))).status_code == 403


async def test_a_non_admin_asking_for_the_admin_scope_is_not_granted_it(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    _runtime, broker, _headers, _admin_id = admin
    _subject, headers = await sign_in(broker, idp, admin_scope=True)

    assert "admin" not in _scope_claim(headers)
    refused = await broker.get("/admin/oauth2/users", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"


async def test_the_admin_role_is_checked_again_on_every_call(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, admin_headers, _admin_id = admin
    _subject, plain = await sign_in(broker, idp)
    user_id = uuid.UUID((await corp_profile(broker, plain))["user"]["id"])
    await _grant_admin(runtime, user_id)
    headers = bearer(await login(broker, **CONSOLE))
    assert "admin" in _scope_claim(headers)
    assert (await broker.get("/admin/oauth2/users", headers=headers)).status_code == 200

    # The grant is revoked: the token still carries the scope, but the role is gone at once.
    await _revoke_admin(runtime, user_id)
    refused = await broker.get("/admin/oauth2/users", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "access_denied"

    # Granted again, then disabled by another admin: the token is refused outright.
    await _grant_admin(runtime, user_id)
    assert (await broker.get("/admin/oauth2/users", headers=headers)).status_code == 200
    disabled = await broker.post(f"/admin/oauth2/users/{user_id}/disable", headers=admin_headers)
    assert disabled.status_code == 200, disabled.text
    assert (await broker.get("/admin/oauth2/users", headers=headers)).status_code == 401


async def test_a_refreshed_admin_token_keeps_the_admin_scope(admin: Admin) -> None:
    _runtime, broker, _headers, _admin_id = admin
    tokens = await login(broker, **CONSOLE)

    refreshed = await refresh(broker, tokens["refresh_token"], client_id="console")

    assert refreshed.status_code == 200, refreshed.text
    assert "admin" in refreshed.json()["scope"].split()
    headers = bearer(refreshed.json())
    assert (await broker.get("/admin/oauth2/users", headers=headers)).status_code == 200


async def test_a_refresh_after_the_role_is_gone_carries_no_admin_scope(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, _headers, _admin_id = admin
    _subject, plain = await sign_in(broker, idp)
    user_id = uuid.UUID((await corp_profile(broker, plain))["user"]["id"])
    await _grant_admin(runtime, user_id)
    tokens = await login(broker, **CONSOLE)
    await _revoke_admin(runtime, user_id)

    demoted = await refresh(broker, tokens["refresh_token"], client_id="console")
    assert demoted.status_code == 200, demoted.text
    assert "admin" not in demoted.json()["scope"].split()
    assert "admin" not in _scope_claim(bearer(demoted.json()))

    # Granted again: the session's next refresh carries the scope again (a live session that
    # was granted it), and the admin API checks the role on every call either way.
    await _grant_admin(runtime, user_id)
    regranted = await refresh(broker, demoted.json()["refresh_token"], client_id="console")
    assert "admin" in regranted.json()["scope"].split()
