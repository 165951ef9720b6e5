"""The authorization-code flow through a real upstream IdP process, on real PostgreSQL."""

from __future__ import annotations

import httpx2
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.flows import authorize, exchange, login, refresh


async def _jwks(broker: httpx2.AsyncClient) -> KeySet:
    return KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json())


async def test_code_flow_returns_a_verifiable_token_pair(broker, idp):
    result = await authorize(broker)
    assert result.params["state"] == result.state
    assert result.params["iss"] == "http://127.0.0.1:8000"
    response = await exchange(broker, result)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert tokens["scope"] == "openid email profile offline_access"
    keys = await _jwks(broker)
    access = jwt.decode(tokens["access_token"], keys, algorithms=["ES256"])
    assert access.header["typ"] == "at+jwt"
    assert access.header["kid"] in {k.kid for k in keys}
    claims = access.claims
    assert claims["iss"] == "http://127.0.0.1:8000"
    assert claims["aud"] == "http://127.0.0.1:8000"
    assert claims["client_id"] == "web"
    assert claims["exp"] - claims["iat"] == 900
    for name in ("sub", "jti", "scope", "sid"):
        assert claims[name]
    # RS256 unless the client registered another (OIDC Core's default; DESIGN §5).
    id_token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    assert id_token.claims["aud"] == "web"
    assert id_token.claims["nonce"] == result.nonce
    assert id_token.claims["sub"] == claims["sub"]
    assert id_token.claims["email"] == "alice@example.com"
    assert "at_hash" in id_token.claims and "auth_time" in id_token.claims
    assert len(tokens["refresh_token"]) >= 43


async def test_refresh_rotates_and_the_old_token_is_rejected(broker, idp):
    tokens = await login(broker)
    first = await refresh(broker, tokens["refresh_token"])
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["access_token"] != tokens["access_token"]
    onward = await refresh(broker, rotated["refresh_token"])
    assert onward.status_code == 200, onward.text
    # Its successor was used: the old token is rejected as a replay.
    again = await refresh(broker, tokens["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    # RFC 9700 §4.14.2: the reuse revoked the family, so the newest token is dead too.
    successor = await refresh(broker, onward.json()["refresh_token"])
    assert successor.json()["error"] == "invalid_grant"


async def test_userinfo_returns_the_users_claims(broker, idp):
    tokens = await login(broker)
    response = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["email"] == "alice@example.com"
    assert body["email_verified"] is True
    assert body["name"] == "Alice Example"
    assert body["preferred_username"] == "alice"
    assert body["sub"] == jwt.decode(tokens["access_token"], await _jwks(broker)).claims["sub"]


async def test_reused_code_is_refused_and_revokes_the_first_session(broker, idp):
    result = await authorize(broker)
    first = await exchange(broker, result)
    assert first.status_code == 200
    second = await exchange(broker, result)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    tokens = first.json()
    userinfo = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.status_code == 401
    assert (await refresh(broker, tokens["refresh_token"])).json()["error"] == "invalid_grant"
