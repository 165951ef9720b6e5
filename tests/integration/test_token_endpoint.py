"""/token, /auth/oauth2/refresh and /userinfo: client authentication, bad input, grants."""

from __future__ import annotations

import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from shared.db.base import table
from shared.models import AuditAction, User
from sqlalchemy import select, update

from tests.support.flows import authorize, login, refresh


async def test_wrong_client_secret_is_401_with_www_authenticate(broker):
    response = await broker.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        auth=("backend", "wrong"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_unknown_grant_type_is_unsupported_grant_type(broker):
    response = await broker.post("/token", data={"grant_type": "password", "client_id": "web"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize(
    "data",
    [
        {"client_id": "web"},
        {"grant_type": "authorization_code", "client_id": "web"},
        {"grant_type": "refresh_token", "client_id": "web"},
        {
            "grant_type": "authorization_code",
            "client_id": "web",
            "code": "nope",
            "redirect_uri": "http://127.0.0.1:3000/callback",
        },
        {"grant_type": "refresh_token", "client_id": "web", "refresh_token": "\x00" * 40},
    ],
)
async def test_bad_token_requests_get_rfc_errors_never_500(broker, data):
    response = await broker.post("/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "invalid_grant")


async def test_token_endpoint_refuses_json_bodies_and_repeated_parameters(broker):
    as_json = await broker.post("/token", json={"grant_type": "refresh_token"})
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    repeated = await broker.post(
        "/token",
        content="grant_type=refresh_token&grant_type=refresh_token&client_id=web",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json()["error"] == "invalid_request"


async def test_confidential_client_uses_client_secret_post_too(broker, idp):
    result = await authorize(
        broker, client_id="backend", redirect_uri="http://127.0.0.1:4000/cb", pkce=False
    )
    response = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": "http://127.0.0.1:4000/cb",
            "client_id": "backend",
            "client_secret": "backend-secret-at-least-32-characters",
        },
    )
    assert response.status_code == 200, response.text
    claims = jwt.decode(
        response.json()["access_token"],
        KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json()),
    ).claims
    assert claims["aud"] == "https://api.internal"  # the client's configured audience


async def test_a_client_that_registered_es256_gets_es256_id_tokens(broker, idp):
    result = await authorize(
        broker, client_id="es-client", redirect_uri="http://127.0.0.1:5000/cb", pkce=False
    )
    response = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": "http://127.0.0.1:5000/cb",
        },
        auth=("es-client", "es-secret-at-least-32-characters-long"),
    )
    tokens = response.json()
    keys = KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json())
    assert jwt.decode(tokens["id_token"], keys, algorithms=["ES256"]).header["alg"] == "ES256"
    assert jwt.decode(tokens["access_token"], keys, algorithms=["ES256"]).header["alg"] == "ES256"


async def test_json_refresh_endpoint_shares_the_refresh_grant(broker, idp):
    tokens = await login(broker)
    response = await broker.post(
        "/auth/oauth2/refresh", json={"refresh_token": tokens["refresh_token"], "client_id": "web"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] != tokens["refresh_token"]
    onward = await broker.post(
        "/auth/oauth2/refresh",
        json={"refresh_token": response.json()["refresh_token"], "client_id": "web"},
    )
    assert onward.status_code == 200, onward.text
    # Its successor was used: the first token presented again is a replay.
    replay = await broker.post(
        "/auth/oauth2/refresh", json={"refresh_token": tokens["refresh_token"], "client_id": "web"}
    )
    assert replay.json()["error"] == "invalid_grant"
    garbage = await broker.post("/auth/oauth2/refresh", content=b"{not json")
    assert garbage.status_code == 400


async def test_refresh_token_is_bound_to_its_client(broker, idp):
    tokens = await login(broker)
    response = await broker.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=("backend", "backend-secret-at-least-32-characters"),
    )
    assert response.json()["error"] == "invalid_grant"
    # The rightful client can still use it: the foreign attempt did not burn it.
    assert (await refresh(broker, tokens["refresh_token"])).status_code == 200


async def test_refresh_may_narrow_but_not_widen_the_scope(broker, idp):
    tokens = await login(broker, scope="openid email")
    wider = await broker.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "web",
            "scope": "openid email profile",
        },
    )
    assert wider.json()["error"] == "invalid_scope"
    narrower = await broker.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "web",
            "scope": "openid",
        },
    )
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "openid"


async def test_disabled_user_cannot_refresh(broker, idp, runtime):
    tokens = await login(broker)
    keys = KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json())
    user_id = uuid.UUID(jwt.decode(tokens["access_token"], keys).claims["sub"])
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(table(User)).where(table(User).c.id == user_id).values(status="disabled")
        )
    try:
        response = await refresh(broker, tokens["refresh_token"])
        assert response.json()["error"] == "invalid_grant"
        userinfo = await broker.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert userinfo.status_code == 401
    finally:
        async with runtime.engine.begin() as connection:
            await connection.execute(
                update(table(User)).where(table(User).c.id == user_id).values(status="active")
            )


@pytest.mark.parametrize(
    "header", ["Bearer garbage", "Bearer ", "Basic abc", "Bearer eyJhbGciOiJub25lIn0.e30."]
)
async def test_userinfo_refuses_bad_tokens_with_401(broker, header):
    response = await broker.get("/userinfo", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_userinfo_refuses_an_id_token(broker, idp):
    tokens = await login(broker)
    response = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['id_token']}"}
    )
    assert response.status_code == 401


async def test_login_token_issue_and_refresh_are_audited(broker, idp, runtime):
    tokens = await login(broker)
    sub = jwt.decode(
        tokens["access_token"],
        KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json()),
    ).claims["sub"]
    assert (await refresh(broker, tokens["refresh_token"])).status_code == 200
    audit = table(AuditAction)
    async with runtime.engine.connect() as connection:
        actions = (
            (
                await connection.execute(
                    select(audit.c.action).where(audit.c.subject == sub).order_by(audit.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert "user.signed_in" in actions
    assert "token.issued" in actions
    assert "refresh_token.rotated" in actions


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 20000,
        b'{"client_id": "web", "refresh_token": "\\ud800"}',
        b'{"client_id": "web", "refresh_token": 5}',
        b'"just a string"',
    ],
)
async def test_json_refresh_endpoint_refuses_hostile_bodies_with_400(broker, body):
    response = await broker.post(
        "/auth/oauth2/refresh", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_refused_login_of_a_disabled_user_is_audited(broker, idp, runtime):
    subject = f"disabled-{uuid.uuid4().hex[:8]}"
    await idp.post("/_control/user", json={"sub": subject, "email": "d@example.com"})
    tokens = await login(broker)
    keys = KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json())
    user_id = uuid.UUID(jwt.decode(tokens["access_token"], keys).claims["sub"])
    users = table(User)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(users).where(users.c.id == user_id).values(status="disabled")
        )
    result = await authorize(broker)
    assert result.params["error"] == "access_denied"
    audit = table(AuditAction)
    async with runtime.engine.connect() as connection:
        refused = (
            (
                await connection.execute(
                    select(audit.c.action).where(
                        audit.c.subject == str(user_id), audit.c.action == "login.refused"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert refused == ["login.refused"]


async def test_overlong_upstream_claims_do_not_break_the_login(broker, idp):
    await idp.post(
        "/_control/user",
        json={
            "sub": f"long-{uuid.uuid4().hex}",
            "name": "N" * 300,
            "email": "l@example.com",
            "email_verified": True,
        },
    )
    tokens = await login(broker)
    userinfo = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.json()["name"] == "N" * 200
    await idp.post("/_control/user", json={"sub": "s" * 300})
    result = await authorize(broker)
    assert result.params["error"] == "server_error"


async def test_browser_clients_get_cors_for_registered_origins_only(broker, idp):
    preflight = await broker.options(
        "/token",
        headers={
            "Origin": "http://127.0.0.1:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    assert "access-control-allow-credentials" not in preflight.headers
    foreign = await broker.options(
        "/token",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in foreign.headers
    tokens = await login(broker)
    userinfo = await broker.get(
        "/userinfo",
        headers={
            "Authorization": f"Bearer {tokens['access_token']}",
            "Origin": "http://127.0.0.1:3000",
        },
    )
    assert userinfo.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    # The grant itself (dispatched before the router) answers a browser with CORS headers too.
    refreshed = await refresh(
        broker, tokens["refresh_token"], headers={"Origin": "http://127.0.0.1:3000"}
    )
    assert refreshed.status_code == 200
    assert refreshed.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
