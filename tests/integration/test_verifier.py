"""The verifier internal services use (``oidc_broker_verifier``), against a real broker:
claims, rejections, the JWKS cache and its refetch limit, key rotation, and the Starlette
middleware."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from broker.app import create_app
from joserfc import jwt
from joserfc.jwk import ECKey
from oidc_broker_verifier import (
    AccessTokenMiddleware,
    AccessTokenVerifier,
    JWKSUnavailable,
    TokenRejected,
    access_token_claims,
)
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.db.migrate import upgrade_to_head_async
from shared.key_rotation import KeySchedule, maintain_keys
from shared.runtime import Runtime, build_runtime
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import BROKER_ISSUER, ROOT, broker_settings
from tests.support.databases import fresh_database, postgres_server_url
from tests.support.flows import authorize, exchange, refresh
from tests.support.jwts import claims_of, header_of

pytestmark = pytest.mark.integration

AUDIENCE = BROKER_ISSUER  # the broker-wide default aud of access tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def broker_http(runtime: Runtime) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=create_app(runtime))
    async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
        yield client


async def _token(broker: httpx2.AsyncClient) -> dict[str, Any]:
    tokens: dict[str, Any] = (
        await exchange(broker, await authorize(broker, provider="dev"))
    ).json()
    return tokens


def _verifier(
    http: httpx2.AsyncClient, clock: Clock | None = None, **kwargs: Any
) -> AccessTokenVerifier:
    return AccessTokenVerifier(
        BROKER_ISSUER, audience=AUDIENCE, http=http, clock=clock or Clock(), **kwargs
    )


async def test_a_valid_token_verifies_and_yields_its_claims(broker_http):
    tokens = await _token(broker_http)
    verifier = _verifier(broker_http)
    claims = await verifier.verify(tokens["access_token"])
    assert claims["client_id"] == "web"
    assert claims["iss"] == BROKER_ISSUER
    assert {"sub", "sid", "jti", "scope", "exp"} <= claims.keys()
    await verifier.verify(tokens["access_token"])
    assert verifier.fetches == 1  # discovery once, the JWKS once, then the cache


async def test_expiry_and_not_before_are_checked_with_a_small_leeway(broker_http):
    tokens = await _token(broker_http)
    clock = Clock()
    verifier = _verifier(broker_http, clock, leeway=10)
    payload = claims_of(tokens["access_token"])
    clock.now = payload["exp"] + 5
    await verifier.verify(tokens["access_token"])  # within the leeway
    clock.now = payload["exp"] + 11
    with pytest.raises(TokenRejected, match="expired"):
        await verifier.verify(tokens["access_token"])
    clock.now = payload["nbf"] - 11
    with pytest.raises(TokenRejected, match="not valid yet"):
        await verifier.verify(tokens["access_token"])


async def test_another_audience_or_issuer_is_rejected(broker_http):
    tokens = await _token(broker_http)
    other_audience = AccessTokenVerifier(
        BROKER_ISSUER, audience="https://api.other", http=broker_http
    )
    with pytest.raises(TokenRejected, match="audience"):
        await other_audience.verify(tokens["access_token"])
    other_issuer = AccessTokenVerifier(
        "http://127.0.0.1:8000/other",
        audience=AUDIENCE,
        http=broker_http,
        jwks_uri=f"{BROKER_ISSUER}/.well-known/jwks.json",
    )
    with pytest.raises(TokenRejected, match="issuer"):
        await other_issuer.verify(tokens["access_token"])


async def test_forgeries_and_id_tokens_are_rejected(broker_http):
    tokens = await _token(broker_http)
    verifier = _verifier(broker_http)
    body = tokens["access_token"].split(".")[1]
    header = header_of(tokens["access_token"])
    jwks = (await broker_http.get("/.well-known/jwks.json")).json()
    public = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    none = f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{body}."
    hs_head = _b64(json.dumps({**header, "alg": "HS256"}).encode())
    hs_mac = hmac.digest(json.dumps(public).encode(), f"{hs_head}.{body}".encode(), "sha256")
    stranger = ECKey.generate_key("P-256", parameters={"kid": "not-in-jwks"})
    claims = claims_of(tokens["access_token"])
    unknown_kid = jwt.encode(
        {"alg": "ES256", "kid": "not-in-jwks", "typ": "at+jwt"}, claims, stranger
    )
    resigned = jwt.encode({"alg": "ES256", "kid": header["kid"], "typ": "at+jwt"}, claims, stranger)
    cases = {
        "alg none": none,
        "HS256 keyed with the public key": f"{hs_head}.{body}.{_b64(hs_mac)}",
        "kid not in JWKS": unknown_kid,
        "signed by another key under our kid": resigned,
        "an ID token": tokens["id_token"],
        "garbage": "not-a-token",
    }
    for name, token in cases.items():
        with pytest.raises(TokenRejected):
            await verifier.verify(token)
            pytest.fail(name)


async def test_an_unknown_kid_refetches_at_most_once_per_interval_and_concurrently_once(
    broker_http,
):
    tokens = await _token(broker_http)
    clock = Clock()
    verifier = _verifier(broker_http, clock, refetch_interval=60)
    await asyncio.gather(*(verifier.verify(tokens["access_token"]) for _ in range(50)))
    assert verifier.fetches == 1  # fifty cold callers, one download
    stranger = ECKey.generate_key("P-256", parameters={"kid": "rotated-in"})
    claims = claims_of(tokens["access_token"])
    foreign = jwt.encode({"alg": "ES256", "kid": "rotated-in", "typ": "at+jwt"}, claims, stranger)
    clock.now += 61
    for _ in range(5):
        with pytest.raises(TokenRejected, match="not in the broker's JWKS"):
            await verifier.verify(foreign)
    assert verifier.fetches == 2  # one refetch for the unknown kid, then none for 60 s
    clock.now += 61
    with pytest.raises(TokenRejected):
        await verifier.verify(foreign)
    assert verifier.fetches == 3


async def test_a_token_from_a_rotated_key_verifies_after_one_refetch(
    keyring: Keyring, upstream_idp: str
):
    with postgres_server_url() as server, fresh_database(server) as url:
        await upgrade_to_head_async(url)
        settings = broker_settings(url, upstream_idp, keyring, jwks_max_age=60)
        broker_clock = FrozenClock(dt.datetime.now(dt.UTC))
        runtime = build_runtime(settings, clock=broker_clock)
        await runtime.start()
        try:
            transport = httpx2.ASGITransport(app=create_app(runtime))
            async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as http:
                clock = Clock()
                verifier = _verifier(http, clock)
                first = await _token(http)
                await verifier.verify(first["access_token"])
                # broker keys rotate, then the broker moves past the new key's activation.
                await maintain_keys(
                    runtime.engine,
                    keyring,
                    KeySchedule.from_settings(settings),
                    settings.signing_algorithms,
                    broker_clock.now(),
                    rotate_now=True,
                )
                broker_clock.advance(61)
                clock.now = broker_clock.now().timestamp()
                await runtime.key_maintainer.run_once()
                second = (await refresh(http, first["refresh_token"])).json()
                assert (
                    header_of(second["access_token"])["kid"]
                    != header_of(first["access_token"])["kid"]
                )
                claims = await verifier.verify(second["access_token"])  # unknown kid: refetch
                assert verifier.fetches == 2
                # The retired key is still published: the first token verifies too.
                assert (await verifier.verify(first["access_token"]))["sid"] == claims["sid"]
        finally:
            await runtime.stop()


async def test_an_unreachable_jwks_is_its_own_error(broker_http):
    tokens = await _token(broker_http)
    verifier = AccessTokenVerifier(
        BROKER_ISSUER,
        audience=AUDIENCE,
        jwks_uri="http://127.0.0.1:9/jwks.json",  # nothing listens there
    )
    try:
        with pytest.raises(JWKSUnavailable):
            await verifier.verify(tokens["access_token"])
    finally:
        await verifier.aclose()


async def test_the_middleware_guards_a_starlette_service(broker_http):
    tokens = await _token(broker_http)
    verifier = _verifier(broker_http)

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"sub": access_token_claims(request)["sub"]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    service = Starlette(routes=[Route("/whoami", whoami), Route("/healthz", health)])
    service.add_middleware(AccessTokenMiddleware, verifier=verifier, public_paths=["/healthz"])
    transport = httpx2.ASGITransport(app=service)
    async with httpx2.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/healthz")).status_code == 200
        missing = await client.get("/whoami")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        forged = await client.get("/whoami", headers={"Authorization": "Bearer a.b.c"})
        assert forged.status_code == 401
        ok = await client.get(
            "/whoami", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert ok.status_code == 200
        payload = claims_of(tokens["access_token"])
        assert ok.json() == {"sub": payload["sub"]}


def test_the_verifier_imports_without_database_or_redis_libraries():
    code = (
        "import sys, oidc_broker_verifier; "
        "heavy = [m for m in ('sqlalchemy', 'psycopg', 'redis', 'arq', 'shared.settings') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
