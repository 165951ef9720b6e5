"""``POST /revoke`` (RFC 7009), ``DELETE /auth/oauth2/revoke``, ``POST /introspect`` (RFC 7662),
the revocation stream, and forged tokens at /userinfo and /introspect (docs/security.md "Token
verification", "Revocation", "Introspection")."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx2
import pytest
from broker.app import create_app
from redis.asyncio import Redis
from shared.runtime import build_runtime

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.flows import authorize, exchange, login, refresh
from tests.support.jwts import claims_of, header_of

pytestmark = pytest.mark.integration

BACKEND = ("backend", "backend-secret-at-least-32-characters")
BACKEND_REDIRECT = "http://127.0.0.1:4000/cb"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _backend_login(broker: httpx2.AsyncClient) -> dict[str, Any]:
    result = await authorize(broker, client_id="backend", redirect_uri=BACKEND_REDIRECT)
    response = await exchange(
        broker, result, client_id="backend", client_secret=BACKEND[1], redirect_uri=BACKEND_REDIRECT
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def _introspect(broker: httpx2.AsyncClient, token: str, **data: str) -> dict[str, Any]:
    response = await broker.post("/introspect", data={"token": token, **data}, auth=BACKEND)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


async def _userinfo_status(broker: httpx2.AsyncClient, access_token: str) -> int:
    response = await broker.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return response.status_code


# --------------------------------------------------------------------------- /revoke


async def test_revoke_needs_client_authentication_first(broker):
    no_client = await broker.post("/revoke", data={"token": "x"})
    assert no_client.status_code == 401
    assert no_client.json()["error"] == "invalid_client"
    wrong = await broker.post("/revoke", data={"token": "x"}, auth=("backend", "wrong"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic")
    missing = await broker.post("/revoke", data={"client_id": "web"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 43, "eyJhbGciOiJub25lIn0.e30."])
async def test_revoking_an_unknown_or_garbage_token_is_200(broker, token):
    response = await broker.post("/revoke", data={"token": token, "client_id": "web"})
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("kind", ["refresh_token", "access_token"])
async def test_revoking_either_token_ends_the_session(broker, idp, kind):
    tokens = await login(broker)
    response = await broker.post(
        "/revoke", data={"token": tokens[kind], "token_type_hint": kind, "client_id": "web"}
    )
    assert response.status_code == 200
    assert (await refresh(broker, tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert await _userinfo_status(broker, tokens["access_token"]) == 401
    assert await _introspect(broker, tokens["access_token"]) == {"active": False}


async def test_a_wrong_token_type_hint_is_only_a_hint(broker, idp):
    tokens = await login(broker)
    response = await broker.post(
        "/revoke",
        data={
            "token": tokens["refresh_token"],
            "token_type_hint": "access_token",
            "client_id": "web",
        },
    )
    assert response.status_code == 200
    assert (await refresh(broker, tokens["refresh_token"])).status_code == 400


async def test_another_clients_token_is_never_revoked(broker, idp):
    tokens = await login(broker)  # the public client "web"
    for token in (tokens["refresh_token"], tokens["access_token"]):
        response = await broker.post("/revoke", data={"token": token}, auth=BACKEND)
        assert response.status_code == 200  # the same answer as for a revoked token
    assert (await refresh(broker, tokens["refresh_token"])).status_code == 200


# --------------------------------------------------------------------------- /introspect


async def test_introspection_needs_a_confidential_client(broker, idp):
    tokens = await login(broker)
    public = await broker.post(
        "/introspect", data={"token": tokens["access_token"], "client_id": "web"}
    )
    assert public.status_code == 401
    assert public.json()["error"] == "invalid_client"
    anonymous = await broker.post("/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code == 401


async def test_a_live_access_token_introspects_with_its_claims(broker, idp):
    tokens = await login(broker)
    body = await _introspect(broker, tokens["access_token"])
    claims = claims_of(tokens["access_token"])
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "sid"):
        assert body[name] == claims[name]


async def test_own_refresh_tokens_introspect_and_used_ones_do_not(broker, idp):
    tokens = await _backend_login(broker)
    body = await _introspect(broker, tokens["refresh_token"], token_type_hint="refresh_token")
    assert body["active"] is True
    assert body["client_id"] == "backend"
    assert body["token_type"] == "refresh_token"
    assert body["sid"] == claims_of(tokens["access_token"])["sid"]
    assert body["exp"] - body["iat"] == 30 * 86400
    rotated = await broker.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=BACKEND,
    )
    assert rotated.status_code == 200
    assert await _introspect(broker, tokens["refresh_token"]) == {"active": False}
    assert (await _introspect(broker, rotated.json()["refresh_token"]))["active"] is True


async def test_another_clients_refresh_token_is_inactive(broker, idp):
    tokens = await login(broker)  # issued to "web"
    assert await _introspect(broker, tokens["refresh_token"]) == {"active": False}
    assert (await _introspect(broker, tokens["access_token"]))["active"] is True  # any access token


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 43, "eyJhbGciOiJub25lIn0.e30."])
async def test_unknown_or_garbage_tokens_are_exactly_inactive(broker, token):
    response = await broker.post("/introspect", data={"token": token}, auth=BACKEND)
    assert response.json() == {"active": False}


@pytest.mark.parametrize("token", ["", "x" * 9000])
async def test_a_missing_or_oversized_token_is_invalid_request(broker, token):
    response = await broker.post("/introspect", data={"token": token}, auth=BACKEND)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --------------------------------------------------------------------------- forged tokens


def _forgeries(access_token: str, public_jwk: dict[str, Any]) -> dict[str, str]:
    """docs/security.md "Token verification": alg none, HS256 keyed with the public key, a kid not
    in JWKS, typ JWT."""
    import hmac

    from joserfc import jwt
    from joserfc.jwk import ECKey

    _, payload_segment, signature = access_token.split(".")
    header = header_of(access_token)
    claims = claims_of(access_token) | {"sub": str(uuid.uuid4())}
    body = _b64(json.dumps(claims).encode())
    none = f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{body}."
    hs_header = _b64(json.dumps({**header, "alg": "HS256"}).encode())
    key = json.dumps(public_jwk, sort_keys=True).encode()
    hs_signature = _b64(hmac.digest(key, f"{hs_header}.{body}".encode(), "sha256"))
    stranger = ECKey.generate_key("P-256", parameters={"kid": "not-in-jwks"})
    unknown_kid = jwt.encode(
        {"alg": "ES256", "kid": "not-in-jwks", "typ": "at+jwt"}, claims, stranger
    )
    typ_jwt = f"{_b64(json.dumps({**header, 'typ': 'JWT'}).encode())}.{payload_segment}.{signature}"
    return {
        "alg_none": none,
        "hs256_with_public_key": f"{hs_header}.{body}.{hs_signature}",
        "unknown_kid": unknown_kid,
        "typ_jwt": typ_jwt,
    }


async def test_forged_tokens_are_refused_at_userinfo_and_inactive_at_introspection(broker, idp):
    tokens = await login(broker)
    jwks = (await broker.get("/.well-known/jwks.json")).json()
    kid = header_of(tokens["access_token"])["kid"]
    public = next(key for key in jwks["keys"] if key["kid"] == kid)
    for name, forged in _forgeries(tokens["access_token"], public).items():
        assert await _userinfo_status(broker, forged) == 401, name
        assert await _introspect(broker, forged) == {"active": False}, name
    assert await _userinfo_status(broker, tokens["access_token"]) == 200  # the real one still works


# --------------------------------------------------------------------------- first-party API


async def _delete_revoke(
    broker: httpx2.AsyncClient,
    access_token: str,
    *,
    body: dict[str, str] | None = None,
    **params: str,
) -> httpx2.Response:
    return await broker.request(
        "DELETE",
        "/auth/oauth2/revoke",
        headers={"Authorization": f"Bearer {access_token}"},
        params=params,
        json=body,
    )


async def test_the_signed_in_user_ends_their_own_session(broker, idp):
    mine, other = await login(broker), await login(broker)
    response = await _delete_revoke(broker, mine["access_token"])
    assert response.status_code == 200
    assert response.json() == {"revoked_sessions": [claims_of(mine["access_token"])["sid"]]}
    assert await _userinfo_status(broker, mine["access_token"]) == 401
    assert await _userinfo_status(broker, other["access_token"]) == 200
    assert (await _delete_revoke(broker, mine["access_token"])).status_code == 401


async def test_a_user_revokes_one_of_their_tokens_or_every_session(broker, idp):
    first, second, third = await login(broker), await login(broker), await login(broker)
    by_token = await _delete_revoke(
        broker, first["access_token"], body={"token": second["refresh_token"]}
    )
    assert by_token.json() == {"revoked_sessions": [claims_of(second["access_token"])["sid"]]}
    assert (await refresh(broker, second["refresh_token"])).status_code == 400
    everything = await _delete_revoke(broker, first["access_token"], all="true")
    revoked = set(everything.json()["revoked_sessions"])
    # Every live session of the user (other tests signed the same user in too), once each.
    assert {claims_of(tokens["access_token"])["sid"] for tokens in (first, third)} <= revoked
    assert claims_of(second["access_token"])["sid"] not in revoked
    for tokens in (first, third):
        assert await _userinfo_status(broker, tokens["access_token"]) == 401
    # Nothing of the user was left alive: a new sign-in's all=true ends just that one session.
    fresh = await login(broker)
    again = await _delete_revoke(broker, fresh["access_token"], all="true")
    assert again.json() == {"revoked_sessions": [claims_of(fresh["access_token"])["sid"]]}


async def test_a_user_cannot_revoke_someone_elses_token(broker, idp):
    alice = await login(broker)
    ada = await login(broker, provider="dev")
    response = await _delete_revoke(
        broker, ada["access_token"], body={"token": alice["refresh_token"]}
    )
    assert response.json() == {"revoked_sessions": []}
    assert (await refresh(broker, alice["refresh_token"])).status_code == 200


async def test_delete_revoke_refuses_bad_input_with_rfc_errors(broker, idp):
    tokens = await login(broker)
    assert (await broker.delete("/auth/oauth2/revoke")).status_code == 401
    bad_flag = await _delete_revoke(broker, tokens["access_token"], all="yes")
    assert bad_flag.json()["error"] == "invalid_request"
    extra = await _delete_revoke(broker, tokens["access_token"], body={"sid": "x"})
    assert extra.json()["error"] == "invalid_request"


# --------------------------------------------------------------------------- the stream


async def test_revocations_are_published_on_the_stream(
    database_url, upstream_idp, keyring, redis_url, idp
):
    stream = f"test:revocations:{uuid.uuid4().hex}"
    settings = broker_settings(
        database_url, upstream_idp, keyring, redis_url=redis_url, revocation_stream=stream
    )
    runtime = build_runtime(settings)
    await runtime.start()
    redis: Redis = Redis.from_url(redis_url)
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as broker:
            revoked, replayed = await login(broker), await login(broker)
            await broker.post(
                "/revoke", data={"token": revoked["refresh_token"], "client_id": "web"}
            )
            rotated = await refresh(broker, replayed["refresh_token"])
            assert rotated.status_code == 200
            assert (await refresh(broker, rotated.json()["refresh_token"])).status_code == 200
            # The successor was used: the first token again is a replay.
            assert (await refresh(broker, replayed["refresh_token"])).status_code == 400
        entries = await redis.xrange(stream)
        published = [
            {key.decode(): value.decode() for key, value in fields.items()} for _, fields in entries
        ]
        assert [(entry["sid"], entry["reason"]) for entry in published] == [
            (claims_of(revoked["access_token"])["sid"], "revoked_by_client"),
            (claims_of(replayed["access_token"])["sid"], "refresh_token_reuse"),
        ]
        assert all(entry["revoked_at"].endswith("+00:00") for entry in published)
    finally:
        await redis.delete(stream)
        await redis.aclose()
        await runtime.stop()
