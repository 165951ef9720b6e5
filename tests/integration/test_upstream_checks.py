"""docs/security.md "Upstream ID-token validation", "Upstream issuer and UserInfo subject": a
misbehaving upstream never yields a user, a link or a session."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from shared.crypto.keyring import DecryptionError
from shared.crypto.sealed_columns import UPSTREAM_ACCESS_TOKEN, UPSTREAM_REFRESH_TOKEN
from shared.db.base import table
from shared.models import OAuth2Profile, OAuth2Token, User
from sqlalchemy import func, select

from tests.support.flows import authorize, login


async def _count_profiles(runtime, subject: str) -> int:
    profiles = table(OAuth2Profile)
    async with runtime.engine.connect() as connection:
        return (
            await connection.execute(
                select(func.count()).select_from(profiles).where(profiles.c.subject == subject)
            )
        ).scalar_one()


@pytest.mark.parametrize(
    "mode",
    [
        "wrong_aud",
        "wrong_iss",
        "bad_nonce",
        "expired",
        "bad_signature",
        "alg_none",
        "userinfo_sub_mismatch",
    ],
)
async def test_invalid_upstream_id_token_creates_nothing(broker, idp, runtime, mode):
    subject = f"mallory-{mode}"
    await idp.post("/_control/user", json={"sub": subject, "email": "m@example.com"})
    await idp.post("/_control/misbehave", json={"mode": mode})
    result = await authorize(broker)
    assert "code" not in result.params
    assert result.params["error"] == "server_error"
    assert result.params["state"] == result.state
    assert await _count_profiles(runtime, subject) == 0


async def test_upstream_token_endpoint_failure_is_temporarily_unavailable(broker, idp):
    await idp.post("/_control/misbehave", json={"mode": "token_error_500"})
    result = await authorize(broker)
    assert result.params["error"] == "temporarily_unavailable"


async def test_discovery_issuer_mismatch_stops_the_login(broker, idp, runtime):
    await idp.post("/_control/discovery_issuer", json={"issuer": "http://127.0.0.1:1/other"})
    response = await broker.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": "backend",
            "redirect_uri": "http://127.0.0.1:4000/cb",
            "scope": "openid",
            "state": "s",
            "provider": "corp",
        },
    )
    assert response.status_code == 302
    assert "error=temporarily_unavailable" in response.headers["location"]
    assert response.headers["location"].startswith("http://127.0.0.1:4000/cb")


async def test_identity_is_provider_and_subject_and_upstream_tokens_are_encrypted(
    broker, idp, runtime
):
    await idp.post(
        "/_control/user",
        json={"sub": "bob-1", "email": "bob@example.com", "email_verified": True, "name": "Bob"},
    )
    await login(broker)
    # Same email, another subject: a different person, never the same account.
    await idp.post(
        "/_control/user",
        json={"sub": "bob-2", "email": "bob@example.com", "email_verified": True, "name": "Bob"},
    )
    await login(broker)
    profiles = table(OAuth2Profile)
    async with runtime.engine.connect() as connection:
        users = (
            (
                await connection.execute(
                    select(profiles.c.user_id).where(profiles.c.subject.in_(["bob-1", "bob-2"]))
                )
            )
            .scalars()
            .all()
        )
        assert len(set(users)) == 2
        tokens = table(OAuth2Token)
        stored = (
            await connection.execute(
                select(tokens.c.id, tokens.c.access_token_enc, tokens.c.refresh_token_enc).where(
                    tokens.c.user_id.in_(users)
                )
            )
        ).all()
        names = (
            (
                await connection.execute(
                    select(table(User).c.display_name).where(table(User).c.id.in_(users))
                )
            )
            .scalars()
            .all()
        )
    assert names == ["Bob", "Bob"]
    assert len(stored) == 2
    keyring = runtime.settings.keyring
    (first_id, first_access, first_refresh), (second_id, _, _) = stored
    access = keyring.decrypt(first_access, UPSTREAM_ACCESS_TOKEN.aad(first_id)).decode()
    refresh = keyring.decrypt(first_refresh, UPSTREAM_REFRESH_TOKEN.aad(first_id)).decode()
    assert access and refresh
    assert access.encode() not in first_access and refresh.encode() not in first_refresh
    assert keyring.key_id_of(first_access) == "test1"
    # docs/security.md "Encryption at rest": bound to row and column; a copy elsewhere does not
    # decrypt.
    with pytest.raises(DecryptionError):
        keyring.decrypt(first_access, UPSTREAM_ACCESS_TOKEN.aad(second_id))
    with pytest.raises(DecryptionError):
        keyring.decrypt(first_access, UPSTREAM_REFRESH_TOKEN.aad(first_id))


async def test_dev_provider_signs_in_with_an_unverified_email(broker, runtime):
    result = await authorize(
        broker, provider="dev", dev_identity=("grace@example.com", "Grace Hopper")
    )
    assert "code" in result.params, result.location
    response = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": "http://127.0.0.1:3000/callback",
            "code_verifier": result.verifier,
            "client_id": "web",
        },
    )
    userinfo = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert userinfo.json()["email"] == "grace@example.com"
    assert userinfo.json()["email_verified"] is False
    assert userinfo.json()["name"] == "Grace Hopper"


async def test_dev_login_code_is_bound_to_its_state(broker):
    first = await broker.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": "backend",
            "redirect_uri": "http://127.0.0.1:4000/cb",
            "scope": "openid",
            "provider": "dev",
        },
    )
    form_url = first.headers["location"]
    submitted = await broker.post(
        form_url.replace("http://127.0.0.1:8000", "").split("?")[0],
        data={"state": "another-state", "email": "eve@example.com", "name": "Eve"},
    )
    assert submitted.status_code == 303
    # The callback refuses the forged state before decrypting anything.
    callback = await broker.get(submitted.headers["location"].replace("http://127.0.0.1:8000", ""))
    assert callback.status_code == 400


async def test_chooser_lists_every_provider_when_none_is_chosen(broker):
    response = await broker.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": "backend",
            "redirect_uri": "http://127.0.0.1:4000/cb",
            "scope": "openid",
            "state": "s",
        },
    )
    assert response.status_code == 200
    assert "Corp SSO" in response.text
    assert "/auth/oauth2/corp/login?" in response.text
    assert "/auth/oauth2/dev/login?" in response.text
    assert response.headers["x-frame-options"] == "DENY"


async def test_prompt_and_max_age_reach_the_upstream(broker, idp):
    await authorize(broker, extra={"prompt": "login consent", "max_age": "300"})
    sent = (await idp.get("/_control/authorize_requests")).json()[-1]
    assert sent["prompt"] == "login consent"
    assert sent["max_age"] == "300"


async def test_id_token_auth_time_is_the_upstream_authentication_time(broker, idp, runtime):
    await idp.post("/_control/session", json={"age": 3600})
    tokens = await login(broker)
    keys = KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json())
    claims = jwt.decode(tokens["id_token"], keys).claims
    assert claims["iat"] - claims["auth_time"] >= 3600 - 5


@pytest.mark.parametrize(
    "extra", [{"prompt": "login"}, {"max_age": "60"}, {"max_age": "0", "prompt": "consent"}]
)
async def test_step_up_is_refused_when_the_upstream_answers_from_an_old_session(broker, idp, extra):
    await idp.post("/_control/session", json={"age": 7200, "ignore_reauthentication": True})
    result = await authorize(broker, extra=extra)
    assert result.params["error"] == "login_required"
    assert result.params["state"] == result.state


async def test_max_age_longer_than_the_upstream_session_is_satisfied(broker, idp):
    await idp.post("/_control/session", json={"age": 7200, "ignore_reauthentication": True})
    result = await authorize(broker, extra={"max_age": "86400"})
    assert "code" in result.params


async def test_unknown_prompt_values_and_bad_max_age_are_invalid_request(broker, idp):
    for extra in ({"prompt": "bogus"}, {"max_age": "-1"}, {"max_age": "soon"}):
        result = await authorize(broker, extra=extra)
        assert result.params["error"] == "invalid_request", extra
