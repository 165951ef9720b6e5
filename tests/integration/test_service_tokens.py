"""Service tokens (``client_credentials``, RFC 6749 §4.4) and ``private_key_jwt`` (RFC 7523)
at the real token endpoint, over PostgreSQL: what a service gets, how it authenticates, the
``jti`` replay defence across two brokers, scope and audience rules, introspection and
revocation, the APIs that refuse a token without a user, the admin listing, and the verifier
(docs/security.md "Service tokens", "Client assertions")."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from broker.app import create_app
from broker.oauth.tokens import service_token_claims, sign_service_token
from oidc_broker_verifier import AccessTokenVerifier, TokenRejected, token_kind
from shared.clock import SystemClock
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_TABLE, CLIENT_ASSERTIONS, REVOKED_ACCESS_TOKENS
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from sqlalchemy import select

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.accounts import corp_profile, sign_in
from tests.support.client_assertions import (
    DROP,
    assertion,
    assertion_params,
    ec_key,
    public_jwks,
    rsa_key,
)
from tests.support.flows import authorize
from tests.support.jwts import claims_of, header_of

pytestmark = pytest.mark.integration

TOKEN_ENDPOINT = f"{BROKER_ISSUER}/token"
API = "https://api.internal"
BILLING_API = "https://billing.internal"
BILLING_SECRET = "billing-secret-at-least-32-characters"
REPORTS_SECRET = "reports-secret-at-least-32-characters"
KEYED_REDIRECT = "http://127.0.0.1:4100/cb"
EC = ec_key("ec1")
RSA = rsa_key("rsa1")
KEYED = ec_key("keyed1")


@dataclass(frozen=True)
class Services:
    """A broker with service clients whose ids are this test's own (the run's database keeps
    every test's audit rows, and the admin listing counts them per client)."""

    runtime: Runtime
    broker: httpx2.AsyncClient
    billing: str  # client_secret_basic; scopes billing.read billing.write; two audiences
    reports: str  # client_secret_post; reports.read; the broker-wide default audience
    signer: str  # private_key_jwt with an EC and an RSA key; ledger.read
    keyed: str  # signs users in, private_key_jwt

    async def token(self, client_id: str, **data: str) -> httpx2.Response:
        """A client_credentials request, authenticated the way ``client_id`` registered."""
        body = {"grant_type": "client_credentials", **data}
        if client_id == self.billing:
            return await self.broker.post("/token", data=body, auth=(client_id, BILLING_SECRET))
        if client_id == self.reports:
            body.update(client_id=client_id, client_secret=REPORTS_SECRET)
            return await self.broker.post("/token", data=body)
        return await self.broker.post(
            "/token", data={**body, **assertion_params(assertion(EC, client_id, TOKEN_ENDPOINT))}
        )

    async def access_token(self, client_id: str, **data: str) -> str:
        response = await self.token(client_id, **data)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def service_clients(suffix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"billing-{suffix}",
            "secret": BILLING_SECRET,
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scopes": ["billing.read", "billing.write"],
            "audience": [API, BILLING_API],
        },
        {
            "id": f"reports-{suffix}",
            "secret": REPORTS_SECRET,
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
            "scopes": ["reports.read"],
        },
        {
            "id": f"signer-{suffix}",
            "grant_types": ["client_credentials"],
            "jwks": public_jwks(EC, RSA),
            "scopes": ["ledger.read"],
            "audience": [API],
        },
        {
            "id": f"keyed-{suffix}",
            "jwks": public_jwks(KEYED),
            "redirect_uris": [KEYED_REDIRECT],
        },
    ]


def service_settings(
    database_url: str, upstream: str, keyring: Keyring, suffix: str, **overrides: Any
) -> Settings:
    base = broker_settings(database_url, upstream, keyring)
    clients = [client.model_dump(mode="json") for client in base.clients]
    for client, original in zip(clients, base.clients, strict=True):
        if original.secret is not None:
            client["secret"] = original.secret.get_secret_value()
    return broker_settings(
        database_url,
        upstream,
        keyring,
        clients=clients + service_clients(suffix),
        **overrides,
    )


@asynccontextmanager
async def running(settings: Settings, address: str = "127.0.0.1") -> AsyncIterator[Services]:
    runtime = build_runtime(settings, clock=SystemClock())
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime), client=(address, 40000))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as broker:
            suffix = settings.clients[-1].id.removeprefix("keyed-")
            yield Services(
                runtime=runtime,
                broker=broker,
                billing=f"billing-{suffix}",
                reports=f"reports-{suffix}",
                signer=f"signer-{suffix}",
                keyed=f"keyed-{suffix}",
            )
    finally:
        await runtime.stop()


@pytest.fixture
async def services(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> AsyncIterator[Services]:
    suffix = uuid.uuid4().hex[:10]
    async with running(service_settings(database_url, upstream_idp, keyring, suffix)) as running_:
        yield running_


def assert_invalid_client(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")


# --------------------------------------------------------------------------- the grant


async def test_a_service_gets_an_rfc9068_token_about_itself_with_client_secret_basic(
    services: Services,
):
    response = await services.token(services.billing)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # §4.4.3
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == services.runtime.settings.access_token_ttl
    assert body["scope"] == "billing.read billing.write"
    claims = claims_of(body["access_token"])
    assert header_of(body["access_token"])["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == services.billing
    assert claims["aud"] == [API, BILLING_API]
    assert claims["scope"] == "billing.read billing.write"
    assert claims["iss"] == BROKER_ISSUER
    assert claims["jti"] and claims["exp"] - claims["iat"] == body["expires_in"]
    assert "sid" not in claims and "auth_time" not in claims


async def test_client_secret_post_for_a_client_registered_for_it(services: Services):
    response = await services.token(services.reports)

    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["sub"] == services.reports
    assert claims["aud"] == BROKER_ISSUER  # no audience configured: the broker-wide default


@pytest.mark.parametrize("key", ["ec", "rsa"])
async def test_private_key_jwt_with_a_key_generated_here(services: Services, key: str):
    signed = assertion(EC if key == "ec" else RSA, services.signer, TOKEN_ENDPOINT)
    response = await services.broker.post(
        "/token", data={"grant_type": "client_credentials", **assertion_params(signed)}
    )

    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["sub"] == services.signer


async def test_each_client_authenticates_only_the_way_it_registered(services: Services):
    grant = {"grant_type": "client_credentials"}
    basic_as_post = {**grant, "client_id": services.billing, "client_secret": BILLING_SECRET}
    assert_invalid_client(await services.broker.post("/token", data=basic_as_post))
    post_as_basic = await services.broker.post(
        "/token", data=grant, auth=(services.reports, REPORTS_SECRET)
    )
    assert_invalid_client(post_as_basic)
    secret_for_keys = {**grant, "client_id": services.signer, "client_secret": BILLING_SECRET}
    assert_invalid_client(await services.broker.post("/token", data=secret_for_keys))
    keys_for_secret = assertion_params(assertion(EC, services.billing, TOKEN_ENDPOINT))
    assert_invalid_client(await services.broker.post("/token", data={**grant, **keys_for_secret}))


# --------------------------------------------------------------------------- client assertions


async def test_a_replayed_client_assertion_is_invalid_client(services: Services):
    signed = assertion(EC, services.signer, TOKEN_ENDPOINT)
    data = {"grant_type": "client_credentials", **assertion_params(signed)}

    first = await services.broker.post("/token", data=data)
    again = await services.broker.post("/token", data=data)
    elsewhere = await services.broker.post(
        "/introspect", data={"token": "x", **assertion_params(signed)}
    )

    assert first.status_code == 200, first.text
    assert_invalid_client(again)
    assert "already used" in again.json()["error_description"]
    assert_invalid_client(elsewhere)


async def test_one_assertion_sent_to_two_brokers_at_once_is_accepted_once(
    database_url: str, upstream_idp: str, keyring: Keyring
):
    suffix = uuid.uuid4().hex[:10]
    settings = service_settings(database_url, upstream_idp, keyring, suffix)
    async with running(settings) as one, running(settings) as two:
        signed = assertion(RSA, one.signer, TOKEN_ENDPOINT)
        data = {"grant_type": "client_credentials", **assertion_params(signed)}

        responses = await asyncio.gather(
            *(broker.post("/token", data=data) for broker in [one.broker, two.broker] * 5)
        )

        assert sorted(response.status_code for response in responses) == [200] + [401] * 9
        async with one.runtime.engine.connect() as connection:
            spent = await connection.scalar(
                select(CLIENT_ASSERTIONS.c.expires_at).where(
                    CLIENT_ASSERTIONS.c.client_id == one.signer
                )
            )
        # Kept until the assertion could no longer be presented (exp plus the leeway).
        assert spent is not None and spent.timestamp() > time.time()


def _now() -> int:
    return int(time.time())


BAD_ASSERTIONS = {
    "expired": lambda client: assertion(EC, client, TOKEN_ENDPOINT, exp=_now() - 120),
    "exp-too-far-ahead": lambda client: assertion(EC, client, TOKEN_ENDPOINT, exp=_now() + 3700),
    "another-audience": lambda client: assertion(EC, client, "https://other.example/token"),
    "alg-the-key-does-not-have": lambda client: assertion(
        RSA, client, TOKEN_ENDPOINT, header={"kid": "ec1"}
    ),
    "hs256": lambda client: _hs256(client),
    "unknown-kid": lambda client: assertion(EC, client, TOKEN_ENDPOINT, header={"kid": "gone"}),
    "a-key-not-registered": lambda client: assertion(ec_key("ec1"), client, TOKEN_ENDPOINT),
    "no-jti": lambda client: assertion(EC, client, TOKEN_ENDPOINT, jti=DROP),
}


def _hs256(client: str) -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"ec1"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(
        json.dumps(
            {"iss": client, "sub": client, "aud": TOKEN_ENDPOINT, "exp": _now() + 60, "jti": "x"}
        ).encode()
    )
    return f"{head}.{body.rstrip(b'=').decode()}.c2ln"


@pytest.mark.parametrize("case", sorted(BAD_ASSERTIONS))
async def test_a_bad_client_assertion_is_invalid_client(services: Services, case: str):
    signed = BAD_ASSERTIONS[case](services.signer)

    response = await services.broker.post(
        "/token", data={"grant_type": "client_credentials", **assertion_params(signed)}
    )

    assert_invalid_client(response)


async def test_private_key_jwt_works_wherever_clients_authenticate(
    services: Services, idp: httpx2.AsyncClient
):
    def signed(audience: str = TOKEN_ENDPOINT) -> dict[str, str]:
        return assertion_params(assertion(KEYED, services.keyed, audience))

    broker = services.broker
    result = await authorize(broker, client_id=services.keyed, redirect_uri=KEYED_REDIRECT)
    code = {
        "grant_type": "authorization_code",
        "code": result.params["code"],
        "redirect_uri": KEYED_REDIRECT,
        "code_verifier": result.verifier or "",
    }
    tokens = (await broker.post("/token", data={**code, **signed()})).json()
    assert tokens["refresh_token"] and tokens["id_token"], tokens

    refreshed = await broker.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **signed()},
    )
    assert refreshed.status_code == 200, refreshed.text
    first_party = await broker.post(
        "/auth/oauth2/refresh",
        json={"refresh_token": refreshed.json()["refresh_token"], **signed(BROKER_ISSUER)},
    )
    assert first_party.status_code == 200, first_party.text
    latest = first_party.json()

    introspected = await broker.post(
        "/introspect",
        data={"token": latest["refresh_token"], **signed(f"{BROKER_ISSUER}/introspect")},
    )
    assert introspected.json()["active"] is True
    revoked = await broker.post(
        "/revoke", data={"token": latest["refresh_token"], **signed(f"{BROKER_ISSUER}/revoke")}
    )
    assert revoked.status_code == 200
    after = await broker.post("/introspect", data={"token": latest["access_token"], **signed()})
    assert after.json() == {"active": False}


async def test_failed_assertions_count_toward_the_abuse_limits(
    database_url: str, upstream_idp: str, keyring: Keyring
):
    suffix = uuid.uuid4().hex[:10]
    settings = service_settings(
        database_url, upstream_idp, keyring, suffix, client_auth_failure_limit=3
    )
    async with running(settings, address="198.51.100.77") as services:
        for _ in range(3):
            bad = assertion(EC, services.signer, TOKEN_ENDPOINT, exp=_now() - 120)
            assert_invalid_client(
                await services.broker.post(
                    "/token", data={"grant_type": "client_credentials", **assertion_params(bad)}
                )
            )

        throttled = await services.token(services.signer)

        # Before the assertion is even looked at: the same answer, good assertion or bad.
        assert throttled.status_code == 429, throttled.text
        assert throttled.json()["error"] == "temporarily_unavailable"


# --------------------------------------------------------------------------- who may, what


async def test_a_grant_the_client_does_not_list_is_unauthorized_client(services: Services):
    broker = services.broker
    code_for_a_service = await broker.post(
        "/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": KEYED_REDIRECT},
        auth=(services.billing, BILLING_SECRET),
    )
    refresh_for_a_service = await broker.post(
        "/auth/oauth2/refresh",
        json={"refresh_token": "x"},
        auth=(services.billing, BILLING_SECRET),
    )
    service_for_a_sign_in_client = await broker.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=("backend", "backend-secret-at-least-32-characters"),
    )
    service_for_a_public_client = await broker.post(
        "/token", data={"grant_type": "client_credentials", "client_id": "web"}
    )
    for response in (
        code_for_a_service,
        refresh_for_a_service,
        service_for_a_sign_in_client,
        service_for_a_public_client,
    ):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "unauthorized_client"
    unknown = await broker.post(
        "/token", data={"grant_type": "password"}, auth=(services.billing, BILLING_SECRET)
    )
    assert unknown.json()["error"] == "unsupported_grant_type"


async def test_a_service_cannot_start_a_sign_in(services: Services):
    response = await services.broker.get(
        "/authorize",
        params={
            "client_id": services.billing,
            "redirect_uri": KEYED_REDIRECT,
            "response_type": "code",
            "scope": "openid",
        },
    )

    assert response.status_code == 400
    assert "location" not in response.headers
    assert "does not sign users in" in response.text


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (None, "billing.read billing.write"),
        ("billing.read", "billing.read"),
        ("billing.write billing.read billing.write", "billing.write billing.read"),
        ("", ""),
    ],
)
async def test_the_scope_is_the_requested_subset_of_the_clients_service_scopes(
    services: Services, requested: str | None, granted: str
):
    data = {} if requested is None else {"scope": requested}

    response = await services.token(services.billing, **data)

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == granted
    claims = claims_of(response.json()["access_token"])
    assert claims.get("scope", "") == granted


@pytest.mark.parametrize(
    "requested", ["openid", "billing.read offline_access", "admin", "profile", "billing.delete"]
)
async def test_user_scopes_and_scopes_not_allowed_are_invalid_scope(
    services: Services, requested: str
):
    response = await services.token(services.billing, scope=requested)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("data", "aud"),
    [
        ({"audience": BILLING_API}, BILLING_API),
        ({"resource": API}, API),
        ({"audience": f"{BILLING_API} {API}"}, [BILLING_API, API]),
        ({"audience": BILLING_API, "resource": API}, [BILLING_API, API]),
    ],
)
async def test_the_audience_is_chosen_among_the_clients(
    services: Services, data: dict[str, str], aud: Any
):
    token = await services.access_token(services.billing, **data)

    assert claims_of(token)["aud"] == aud


@pytest.mark.parametrize(
    "data", [{"audience": "https://elsewhere.internal"}, {"resource": BROKER_ISSUER}]
)
async def test_an_audience_the_client_may_not_have_is_invalid_target(
    services: Services, data: dict[str, str]
):
    response = await services.token(services.billing, **data)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


async def test_each_token_is_audited_with_the_client_as_actor(services: Services):
    token = await services.access_token(services.billing, scope="billing.read")

    async with services.runtime.engine.connect() as connection:
        (row,) = (
            await connection.execute(
                select(AUDIT_TABLE).where(
                    AUDIT_TABLE.c.action == "token.issued",
                    AUDIT_TABLE.c.client_id == services.billing,
                )
            )
        ).all()
    assert row.actor == row.subject == f"client:{services.billing}"
    assert row.ip == "127.0.0.1"
    assert row.data == {
        "grant_type": "client_credentials",
        "scope": "billing.read",
        "aud": [API, BILLING_API],
        "jti": claims_of(token)["jti"],
    }
    assert token not in json.dumps(row.data)


# --------------------------------------------------------------------------- introspect, revoke


async def _introspect(services: Services, token: str) -> dict[str, Any]:
    response = await services.broker.post(
        "/introspect", data={"token": token}, auth=(services.billing, BILLING_SECRET)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_introspection_describes_a_live_service_token(services: Services):
    token = await services.access_token(services.reports)

    body = await _introspect(services, token)

    claims = claims_of(token)
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    assert body["sub"] == body["client_id"] == services.reports
    assert body["scope"] == "reports.read"
    for name in ("iss", "aud", "exp", "iat", "nbf", "jti"):
        assert body[name] == claims[name]
    assert "sid" not in body


async def test_a_revoked_service_token_is_inactive_and_only_its_client_can_revoke_it(
    services: Services,
):
    token = await services.access_token(services.reports)
    other = await services.access_token(services.reports)

    by_another_client = await services.broker.post(
        "/revoke", data={"token": token}, auth=(services.billing, BILLING_SECRET)
    )
    assert by_another_client.status_code == 200
    assert (await _introspect(services, token))["active"] is True

    for _ in range(2):  # revoking twice is the same 200
        revoked = await services.broker.post(
            "/revoke",
            data={"token": token, "client_id": services.reports, "client_secret": REPORTS_SECRET},
        )
        assert revoked.status_code == 200

    assert await _introspect(services, token) == {"active": False}
    assert (await _introspect(services, other))["active"] is True  # one token, not the client
    jti = claims_of(token)["jti"]
    async with services.runtime.engine.connect() as connection:
        record = (
            await connection.execute(
                select(REVOKED_ACCESS_TOKENS).where(REVOKED_ACCESS_TOKENS.c.jti == jti)
            )
        ).one()
        audits = (
            await connection.execute(
                select(AUDIT_TABLE.c.actor, AUDIT_TABLE.c.data).where(
                    AUDIT_TABLE.c.action == "token.revoked",
                    AUDIT_TABLE.c.client_id == services.reports,
                )
            )
        ).all()
    assert record.client_id == services.reports
    assert int(record.expires_at.timestamp()) == claims_of(token)["exp"]  # kept until then
    assert [(actor, data["jti"]) for actor, data in audits] == [(f"client:{services.reports}", jti)]


async def test_userinfo_and_the_first_party_and_admin_apis_refuse_a_service_token(
    services: Services,
):
    token = await services.access_token(services.billing)
    bearer = {"Authorization": f"Bearer {token}"}
    broker = services.broker

    for response in (
        await broker.get("/userinfo", headers=bearer),
        await broker.post("/userinfo", data={"access_token": token}),
        await broker.get("/auth/oauth2/profile", headers=bearer),
        await broker.delete("/auth/oauth2/revoke", headers=bearer),
        await broker.post("/auth/oauth2/profile/sync", headers=bearer),
        await broker.get("/admin/oauth2/users", headers=bearer),
        await broker.get("/admin/oauth2/clients", headers=bearer),
    ):
        assert response.status_code == 401, (response.request.url, response.text)
        assert response.json()["error"] == "invalid_token"
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
        assert "service token" in response.json()["error_description"]


# --------------------------------------------------------------------------- the verifier


async def test_the_verifier_accepts_a_service_token_and_says_so(services: Services):
    token = await services.access_token(services.billing, audience=API)
    http = services.broker  # the broker's discovery and JWKS, in-process

    claims = await AccessTokenVerifier(BROKER_ISSUER, audience=API, http=http).verify(token)
    users_only = AccessTokenVerifier(BROKER_ISSUER, audience=API, http=http, accept=("user",))
    services_only = AccessTokenVerifier(BROKER_ISSUER, audience=API, http=http, accept=("service",))

    assert claims["sub"] == claims["client_id"] == services.billing
    assert token_kind(claims) == "service"
    assert (await services_only.verify(token))["sub"] == services.billing
    with pytest.raises(TokenRejected, match="service tokens are not accepted"):
        await users_only.verify(token)
    with pytest.raises(TokenRejected, match="another audience"):
        await AccessTokenVerifier(BROKER_ISSUER, audience=BILLING_API, http=http).verify(token)


async def test_a_token_without_a_session_that_names_a_user_is_refused_everywhere(
    services: Services,
):
    # The broker never signs one: a user's token always carries its sid. Signed with the
    # broker's own key here, so only the missing sid gives it away.
    client = services.runtime.settings.client(services.billing)
    assert client is not None
    claims = service_token_claims(
        services.runtime.settings, client=client, scope="", audience=(API,), now=SystemClock().now()
    )
    forged = sign_service_token(
        services.runtime.keys.snapshot,
        services.runtime.settings,
        {**claims, "sub": str(uuid.uuid4())},
    )

    verifier = AccessTokenVerifier(BROKER_ISSUER, audience=API, http=services.broker)
    with pytest.raises(TokenRejected, match="sub = client_id"):
        await verifier.verify(forged)
    assert await _introspect(services, forged) == {"active": False}
    userinfo = await services.broker.get("/userinfo", headers={"Authorization": f"Bearer {forged}"})
    assert userinfo.status_code == 401


# --------------------------------------------------------------------------- the admin listing


@pytest.fixture
async def admin_services(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> AsyncIterator[tuple[Services, dict[str, str]]]:
    subject = f"admin-{uuid.uuid4().hex[:10]}"
    settings = service_settings(
        database_url, upstream_idp, keyring, uuid.uuid4().hex[:10], admins=[f"corp:{subject}"]
    )
    async with running(settings) as services:
        _subject, headers = await sign_in(services.broker, idp, sub=subject, admin_scope=True)
        assert (await corp_profile(services.broker, headers))["user"]["id"]
        yield services, headers


async def test_the_admin_api_lists_clients_with_their_service_token_activity(
    admin_services: tuple[Services, dict[str, str]],
):
    services, admin = admin_services
    for _ in range(3):
        await services.access_token(services.billing)
    await services.access_token(services.signer)

    response = await services.broker.get("/admin/oauth2/clients", headers=admin)

    assert response.status_code == 200, response.text
    listed = {client["id"]: client for client in response.json()["clients"]}
    billing, signer = listed[services.billing], listed[services.signer]
    assert billing["grant_types"] == ["client_credentials"]
    assert billing["token_endpoint_auth_methods"] == ["client_secret_basic"]
    assert billing["audience"] == [API, BILLING_API]
    assert billing["service_tokens"]["issued_24h"] == billing["service_tokens"]["issued_30d"] == 3
    assert billing["service_tokens"]["last_issued_at"].endswith("Z")
    assert signer["token_endpoint_auth_methods"] == ["private_key_jwt"]
    assert signer["jwks_kids"] == ["ec1", "rsa1"]
    assert signer["service_tokens"]["issued_24h"] == 1
    assert listed[services.reports]["service_tokens"] == {
        "issued_24h": 0,
        "issued_30d": 0,
        "last_issued_at": None,
    }
    assert listed["web"]["service_tokens"] is None and listed["web"]["public"] is True
    assert BILLING_SECRET not in response.text and REPORTS_SECRET not in response.text
    assert '"d"' not in response.text  # no private key member either

    only_services = await services.broker.get(
        "/admin/oauth2/clients", params={"grant_type": "client_credentials"}, headers=admin
    )
    assert {client["id"] for client in only_services.json()["clients"]} == {
        services.billing,
        services.reports,
        services.signer,
    }
    for bad in ({"grant_type": "password"}, {"limit": "5"}):
        refused = await services.broker.get("/admin/oauth2/clients", params=bad, headers=admin)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_request"


async def test_the_client_listing_needs_the_admin_scope(
    admin_services: tuple[Services, dict[str, str]], idp: httpx2.AsyncClient
):
    services, _admin = admin_services
    _subject, ordinary = await sign_in(services.broker, idp)

    response = await services.broker.get("/admin/oauth2/clients", headers=ordinary)

    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
