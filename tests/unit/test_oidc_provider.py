"""The broker as a relying party: upstream ID-token and callback checks (docs/security.md "Upstream
state and mix-up defence", "Upstream ID-token validation", "Upstream issuer and UserInfo subject").

The upstream IdP is played by an ``httpx2.MockTransport`` serving discovery, a JWKS, a token
endpoint and UserInfo; the keys are real RSA keys made with joserfc.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from shared.clock import FrozenClock
from shared.providers import oidc as oidc_module
from shared.providers.base import LoginStart
from shared.providers.errors import ProviderDenied, ProviderInvalidResponse
from shared.providers.oauth2 import OAuth2Credentials, OAuth2Flow, check_callback
from shared.providers.oidc import JWKS_REFETCH_INTERVAL, OIDCProvider

ISSUER = "https://idp.example.com"
CLIENT_ID = "broker"
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
NONCE = "n-0S6_WzA2Mj"
START = LoginStart(
    redirect_uri="http://127.0.0.1:8000/upstream/corp/callback",
    state="upstream-state-1",
    nonce=NONCE,
    code_verifier="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def left_half_sha256(value: str) -> str:
    return b64url(hashlib.sha256(value.encode()).digest()[:16])


@pytest.fixture(scope="module")
def key_a() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-a", "alg": "RS256", "use": "sig"})


@pytest.fixture(scope="module")
def key_b() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-b", "alg": "RS256", "use": "sig"})


@dataclass
class Upstream:
    """A scriptable stand-in IdP: what it publishes and what reached it."""

    keys: list[RSAKey]
    issuer_in_discovery: str = ISSUER
    discovery_extra: dict[str, Any] = field(default_factory=dict)
    token_response: dict[str, Any] = field(default_factory=dict)
    userinfo: dict[str, Any] | None = None
    requests: list[str] = field(default_factory=list)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append(path)
        if path == "/.well-known/openid-configuration":
            document = {
                "issuer": self.issuer_in_discovery,
                "authorization_endpoint": f"{ISSUER}/authorize",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
                **self.discovery_extra,
            }
            if self.userinfo is not None:
                document["userinfo_endpoint"] = f"{ISSUER}/userinfo"
            return httpx2.Response(200, json=document)
        if path == "/jwks":
            return httpx2.Response(
                200, json={"keys": [key.as_dict(private=False) for key in self.keys]}
            )
        if path == "/token":
            return httpx2.Response(200, json=self.token_response)
        if path == "/userinfo" and self.userinfo is not None:
            return httpx2.Response(200, json=self.userinfo)
        return httpx2.Response(404)

    def count(self, path: str) -> int:
        return self.requests.count(path)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def upstream(key_a: RSAKey) -> Upstream:
    return Upstream(keys=[key_a])


@pytest.fixture
async def http(upstream: Upstream) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(upstream.handler)) as client:
        yield client


@pytest.fixture
def provider(upstream: Upstream, http: httpx2.AsyncClient, clock: FrozenClock) -> OIDCProvider:
    flow = OAuth2Flow(
        OAuth2Credentials(
            client_id=CLIENT_ID, client_secret="s", auth_method="client_secret_basic"
        ),
        scopes=("openid",),
        clock=clock,
        transport=httpx2.MockTransport(upstream.handler),
    )
    return OIDCProvider(
        provider_id="corp",
        provider_type="oidc",
        display_name="Corp",
        issuer=ISSUER,
        flow=flow,
        http=http,
        clock=clock,
    )


def claims(**overrides: Any) -> dict[str, Any]:
    issued = int(NOW.timestamp())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice-sub",
        "aud": CLIENT_ID,
        "exp": issued + 300,
        "iat": issued,
        "nonce": NONCE,
        "email": "alice@example.com",
        "email_verified": True,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: RSAKey, payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, payload, key)


# --- validate_id_token: accepted ----------------------------------------------------------------


async def test_valid_id_token_is_accepted(provider: OIDCProvider, key_a: RSAKey) -> None:
    result = await provider.validate_id_token(sign(key_a, claims()), nonce=NONCE)

    assert result["sub"] == "alice-sub"
    assert result["email"] == "alice@example.com"


async def test_id_token_with_several_audiences_and_our_azp_is_accepted(
    provider: OIDCProvider, key_a: RSAKey
) -> None:
    token = sign(key_a, claims(aud=[CLIENT_ID, "api"], azp=CLIENT_ID))

    assert (await provider.validate_id_token(token, nonce=NONCE))["azp"] == CLIENT_ID


async def test_id_token_with_the_right_at_hash_is_accepted(
    provider: OIDCProvider, key_a: RSAKey
) -> None:
    token = sign(key_a, claims(at_hash=left_half_sha256("upstream-at")))

    result = await provider.validate_id_token(token, nonce=NONCE, access_token="upstream-at")

    assert result["sub"] == "alice-sub"


async def test_expiry_within_the_clock_leeway_is_accepted(
    provider: OIDCProvider, key_a: RSAKey, clock: FrozenClock
) -> None:
    token = sign(key_a, claims())
    clock.advance(300 + oidc_module.CLOCK_LEEWAY - 5)

    assert (await provider.validate_id_token(token, nonce=NONCE))["sub"] == "alice-sub"


# --- validate_id_token: rejected ----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "another-client"},
        {"aud": ["another-client", "api"]},
        {"aud": [CLIENT_ID, "another-client"], "azp": "another-client"},
        {"aud": [CLIENT_ID, "another-client"]},
        {"aud": CLIENT_ID, "azp": "another-client"},
        {"iss": "https://evil.example.com"},
        {"iss": ISSUER + "/"},
        {"nonce": "another-nonce"},
        {"nonce": None},
        {"exp": int(NOW.timestamp()) - 120},
        {"iat": int(NOW.timestamp()) + 3600, "exp": int(NOW.timestamp()) + 7200},
        {"sub": None},
        {"exp": None},
        {"iat": None},
        {"aud": None},
    ],
    ids=[
        "wrong-aud",
        "aud-list-without-us",
        "aud-list-with-us-but-azp-another-party",
        "aud-list-with-us-but-no-azp",
        "azp-another-party",
        "wrong-iss",
        "iss-with-trailing-slash",
        "nonce-mismatch",
        "nonce-missing",
        "expired",
        "iat-far-in-the-future",
        "sub-missing",
        "exp-missing",
        "iat-missing",
        "aud-missing",
    ],
)
async def test_id_token_failing_a_claim_check_is_rejected(
    provider: OIDCProvider, key_a: RSAKey, overrides: dict[str, Any]
) -> None:
    token = sign(key_a, claims(**overrides))

    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(token, nonce=NONCE)


async def test_id_token_with_alg_none_is_rejected(provider: OIDCProvider) -> None:
    token = f"{b64json({'alg': 'none', 'kid': 'key-a'})}.{b64json(claims())}."

    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(token, nonce=NONCE)


@pytest.mark.parametrize("material", ["pem", "jwk-json"])
async def test_id_token_hmac_signed_with_the_public_key_is_rejected(
    provider: OIDCProvider, key_a: RSAKey, material: str
) -> None:
    secret = (
        key_a.as_pem(private=False)
        if material == "pem"
        else json.dumps(key_a.as_dict(private=False)).encode()
    )
    signing_input = f"{b64json({'alg': 'HS256', 'kid': 'key-a'})}.{b64json(claims())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(f"{signing_input}.{b64url(signature)}", nonce=NONCE)


async def test_id_token_signed_by_an_unknown_key_is_rejected(
    provider: OIDCProvider, key_b: RSAKey
) -> None:
    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(sign(key_b, claims()), nonce=NONCE)


async def test_id_token_signed_by_another_key_under_a_published_kid_is_rejected(
    provider: OIDCProvider, key_b: RSAKey
) -> None:
    token = sign(key_b, claims(), kid="key-a")

    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(token, nonce=NONCE)


async def test_id_token_with_a_wrong_at_hash_is_rejected(
    provider: OIDCProvider, key_a: RSAKey
) -> None:
    token = sign(key_a, claims(at_hash=left_half_sha256("another-access-token")))

    with pytest.raises(ProviderInvalidResponse, match="at_hash"):
        await provider.validate_id_token(token, nonce=NONCE, access_token="upstream-at")


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c"])
async def test_garbage_id_token_is_rejected(provider: OIDCProvider, garbage: str) -> None:
    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(garbage, nonce=NONCE)


async def test_upstream_advertising_only_symmetric_or_none_algorithms_is_rejected(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    upstream.discovery_extra["id_token_signing_alg_values_supported"] = ["none", "HS256"]

    with pytest.raises(ProviderInvalidResponse):
        await provider.validate_id_token(sign(key_a, claims()), nonce=NONCE)


# --- discovery and key rotation -----------------------------------------------------------------


async def test_discovery_issuer_differing_from_the_configured_one_is_rejected(
    provider: OIDCProvider, upstream: Upstream
) -> None:
    upstream.issuer_in_discovery = "https://evil.example.com"

    with pytest.raises(ProviderInvalidResponse, match="issuer"):
        await provider.metadata()


async def test_discovery_issuer_with_an_extra_trailing_slash_is_rejected(
    provider: OIDCProvider, upstream: Upstream
) -> None:
    upstream.issuer_in_discovery = ISSUER + "/"

    with pytest.raises(ProviderInvalidResponse):
        await provider.metadata()


async def test_upstream_key_rotation_is_accepted_after_a_jwks_refetch(
    provider: OIDCProvider,
    upstream: Upstream,
    key_a: RSAKey,
    key_b: RSAKey,
    clock: FrozenClock,
) -> None:
    await provider.validate_id_token(sign(key_a, claims()), nonce=NONCE)
    assert upstream.count("/jwks") == 1
    # The upstream rotates: key-b appears in its JWKS only after our first fetch.
    upstream.keys = [key_b, key_a]
    clock.advance(JWKS_REFETCH_INTERVAL + 1)

    result = await provider.validate_id_token(sign(key_b, claims()), nonce=NONCE)

    assert result["sub"] == "alice-sub"
    assert upstream.count("/jwks") == 2


async def test_unknown_kids_refetch_the_jwks_at_most_once_per_interval(
    provider: OIDCProvider,
    upstream: Upstream,
    key_a: RSAKey,
    key_b: RSAKey,
    clock: FrozenClock,
) -> None:
    await provider.validate_id_token(sign(key_a, claims()), nonce=NONCE)
    clock.advance(JWKS_REFETCH_INTERVAL + 1)

    for _ in range(5):
        with pytest.raises(ProviderInvalidResponse):
            await provider.validate_id_token(sign(key_b, claims()), nonce=NONCE)

    assert upstream.count("/jwks") == 2


async def test_discovery_and_jwks_are_cached_between_validations(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    for _ in range(3):
        await provider.validate_id_token(sign(key_a, claims()), nonce=NONCE)

    assert upstream.count("/.well-known/openid-configuration") == 1
    assert upstream.count("/jwks") == 1


# --- complete_login -----------------------------------------------------------------------------


def token_response(key: RSAKey, **claim_overrides: Any) -> dict[str, Any]:
    access_token = "upstream-access-token"
    id_token = sign(key, claims(at_hash=left_half_sha256(access_token), **claim_overrides))
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "upstream-refresh-token",
        "id_token": id_token,
    }


async def test_complete_login_returns_the_verified_profile_and_tokens(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    upstream.token_response = token_response(key_a)
    upstream.userinfo = {"sub": "alice-sub", "name": "Alice"}

    login = await provider.complete_login(START, {"code": "c-1", "state": START.state})

    assert login.profile.subject == "alice-sub"
    assert login.profile.issuer == ISSUER
    assert login.profile.name == "Alice"
    assert login.profile.email == "alice@example.com"
    assert login.profile.email_verified is True
    assert login.tokens is not None
    assert login.tokens.access_token == "upstream-access-token"
    assert login.tokens.refresh_token == "upstream-refresh-token"
    assert login.tokens.expires_at == NOW + dt.timedelta(seconds=3600)


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "another-client"}, {"nonce": "replayed-nonce"}, {"iss": "https://evil.example"}],
    ids=["wrong-aud", "wrong-nonce", "wrong-iss"],
)
async def test_complete_login_with_an_invalid_id_token_fails(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey, overrides: dict[str, Any]
) -> None:
    upstream.token_response = token_response(key_a, **overrides)

    with pytest.raises(ProviderInvalidResponse):
        await provider.complete_login(START, {"code": "c-1", "state": START.state})


async def test_complete_login_without_an_id_token_fails(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    response = token_response(key_a)
    del response["id_token"]
    upstream.token_response = response

    with pytest.raises(ProviderInvalidResponse, match="id_token"):
        await provider.complete_login(START, {"code": "c-1", "state": START.state})


async def test_complete_login_with_a_userinfo_for_another_subject_fails(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    upstream.token_response = token_response(key_a)
    upstream.userinfo = {"sub": "mallory-sub", "email": "mallory@example.com"}

    with pytest.raises(ProviderInvalidResponse, match="sub"):
        await provider.complete_login(START, {"code": "c-1", "state": START.state})


async def test_userinfo_email_is_not_verified_by_the_id_tokens_email_verified(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    # The ID token vouches for alice@example.com; UserInfo names another address and says
    # nothing about its verification. The pair must come from one source (docs/security.md
    # "Auto-linking is off by default").
    upstream.token_response = token_response(key_a)
    upstream.userinfo = {"sub": "alice-sub", "email": "mallory@example.com"}

    login = await provider.complete_login(START, {"code": "c-1", "state": START.state})

    assert (login.profile.email, login.profile.email_verified) in {
        ("alice@example.com", True),
        ("mallory@example.com", False),
    }


async def test_callback_from_another_issuer_fails_before_any_token_request(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    upstream.token_response = token_response(key_a)
    params = {"code": "c-1", "state": START.state, "iss": "https://evil.example.com"}

    with pytest.raises(ProviderInvalidResponse):
        await provider.complete_login(START, params)

    assert upstream.count("/token") == 0


async def test_callback_without_iss_fails_when_the_upstream_promises_it(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    upstream.discovery_extra["authorization_response_iss_parameter_supported"] = True
    upstream.token_response = token_response(key_a)

    with pytest.raises(ProviderInvalidResponse):
        await provider.complete_login(START, {"code": "c-1", "state": START.state})

    assert upstream.count("/token") == 0


async def test_callback_with_the_right_iss_completes_when_the_upstream_promises_it(
    provider: OIDCProvider, upstream: Upstream, key_a: RSAKey
) -> None:
    upstream.discovery_extra["authorization_response_iss_parameter_supported"] = True
    upstream.token_response = token_response(key_a)

    login = await provider.complete_login(
        START, {"code": "c-1", "state": START.state, "iss": ISSUER}
    )

    assert login.profile.subject == "alice-sub"


# --- check_callback -----------------------------------------------------------------------------


def test_callback_code_is_returned() -> None:
    params = {"code": "c-1", "state": "s", "iss": ISSUER}

    assert check_callback(params, expected_issuer=ISSUER, iss_required=True) == "c-1"


def test_callback_without_iss_is_accepted_when_not_required() -> None:
    assert check_callback({"code": "c-1"}, expected_issuer=ISSUER, iss_required=False) == "c-1"


def test_callback_error_is_provider_denied() -> None:
    params = {"error": "access_denied", "error_description": "the user said no"}

    with pytest.raises(ProviderDenied) as caught:
        check_callback(params, expected_issuer=ISSUER, iss_required=False)

    assert caught.value.error == "access_denied"
    assert caught.value.description == "the user said no"


def test_callback_with_a_different_iss_is_refused_even_for_an_error() -> None:
    params = {"error": "access_denied", "iss": "https://evil.example.com"}

    with pytest.raises(ProviderInvalidResponse):
        check_callback(params, expected_issuer=ISSUER, iss_required=False)


def test_callback_with_a_different_iss_is_refused() -> None:
    params = {"code": "c-1", "iss": "https://evil.example.com"}

    with pytest.raises(ProviderInvalidResponse):
        check_callback(params, expected_issuer=ISSUER, iss_required=False)


def test_callback_with_iss_when_no_issuer_is_known_is_refused() -> None:
    with pytest.raises(ProviderInvalidResponse):
        check_callback({"code": "c-1", "iss": ISSUER}, expected_issuer=None, iss_required=False)


def test_callback_missing_a_required_iss_is_refused() -> None:
    with pytest.raises(ProviderInvalidResponse):
        check_callback({"code": "c-1"}, expected_issuer=ISSUER, iss_required=True)


@pytest.mark.parametrize("params", [{"state": "s"}, {"code": "", "state": "s"}])
def test_callback_without_a_code_is_refused(params: dict[str, str]) -> None:
    with pytest.raises(ProviderInvalidResponse, match="no code"):
        check_callback(params, expected_issuer=ISSUER, iss_required=False)
