"""The broker's JWTs: RFC 9068 access tokens, ID tokens, verification (docs/security.md
"Access-token format", "ID-token claims", "Token verification")."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest
from broker.oauth.tokens import (
    CLOCK_LEEWAY,
    TokenInvalid,
    UserClaims,
    is_service_token,
    mint_access_token,
    mint_id_token,
    service_token_claims,
    sign_service_token,
    verify_access_token,
)
from joserfc import jwt
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.settings import ClientConfig, Settings, make_settings
from shared.signing_keys import KeySnapshot, build_snapshot, generate_signing_key

from tests.support.jwts import claims_of, header_of

ISSUER = "http://127.0.0.1:8000"
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

WEB = {
    "id": "web",
    "secret": "web-secret-at-least-32-characters-long",
    "redirect_uris": ["http://127.0.0.1:3000/callback"],
}
API_BOUND = {
    "id": "api-bound",
    "secret": "a-test-secret-of-at-least-32-characters",
    "redirect_uris": ["http://127.0.0.1:3001/callback"],
    "audience": ["https://api.example.com"],
}
MULTI_AUD = {
    "id": "multi",
    "secret": "a-test-secret-of-at-least-32-characters",
    "redirect_uris": ["http://127.0.0.1:3002/callback"],
    "audience": ["https://a.example.com", "https://b.example.com"],
}
ES256_CLIENT = {
    "id": "compact",
    "secret": "a-test-secret-of-at-least-32-characters",
    "redirect_uris": ["http://127.0.0.1:3003/callback"],
    "id_token_signed_response_alg": "ES256",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, read without verifying."""
    return header_of(token), claims_of(token)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate("unit")


@pytest.fixture(scope="module")
def keys(keyring: Keyring) -> KeySnapshot:
    rows = [
        generate_signing_key("ES256", keyring, NOW - dt.timedelta(days=1)),
        generate_signing_key("RS256", keyring, NOW - dt.timedelta(days=1)),
    ]
    return build_snapshot(rows, keyring, NOW)


@pytest.fixture(scope="module")
def other_keys(keyring: Keyring) -> KeySnapshot:
    """A key pair the broker never published."""
    rows = [generate_signing_key("ES256", keyring, NOW - dt.timedelta(days=1))]
    return build_snapshot(rows, keyring, NOW)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(issuer=ISSUER, clients=[WEB, API_BOUND, MULTI_AUD, ES256_CLIENT])


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


def client(settings: Settings, client_id: str) -> ClientConfig:
    found = settings.client(client_id)
    assert found is not None
    return found


def access_token(
    keys: KeySnapshot,
    settings: Settings,
    now: dt.datetime,
    client_id: str = "web",
    **overrides: Any,
) -> str:
    arguments: dict[str, Any] = {
        "client": client(settings, client_id),
        "subject": "user-123",
        "session_id": "sid-1",
        "scope": "openid email",
        "auth_time": now - dt.timedelta(minutes=1),
        "now": now,
    }
    arguments.update(overrides)
    return mint_access_token(keys, settings, **arguments)


def id_token(
    keys: KeySnapshot,
    settings: Settings,
    now: dt.datetime,
    *,
    client_id: str = "web",
    at: str = "the-access-token",
    nonce: str | None = "n-0S6_WzA2Mj",
) -> str:
    return mint_id_token(
        keys,
        settings,
        client=client(settings, client_id),
        user=UserClaims(sub="user-123", email="a@example.com", email_verified=True, name="A"),
        session_id="sid-1",
        scope="openid email profile",
        auth_time=now - dt.timedelta(minutes=1),
        now=now,
        access_token=at,
        nonce=nonce,
    )


# --- access tokens ------------------------------------------------------------------------------


def test_access_token_header_is_at_jwt_es256_with_a_published_kid(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    header, _ = segments(access_token(keys, settings, clock.now()))

    published = json.loads(keys.jwks_body)["keys"]
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] in {key["kid"] for key in published}
    assert all("d" not in key for key in published)


def test_access_token_carries_the_rfc9068_claims(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    token = access_token(keys, settings, clock.now(), scope="openid email")

    claims = jwt.decode(token, keys.verification, algorithms=["ES256"]).claims

    issued = int(clock.now().timestamp())
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "user-123"
    assert claims["aud"] == ISSUER
    assert claims["iat"] == issued
    assert claims["exp"] == issued + settings.access_token_ttl
    assert claims["client_id"] == "web"
    assert claims["scope"] == "openid email"
    assert claims["sid"] == "sid-1"
    assert isinstance(claims["jti"], str) and claims["jti"]


def test_access_token_ids_are_unique(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    first = segments(access_token(keys, settings, clock.now()))[1]
    second = segments(access_token(keys, settings, clock.now()))[1]

    assert first["jti"] != second["jti"]


def test_default_access_token_audience_is_the_resource_never_the_client_id(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    _, claims = segments(access_token(keys, settings, clock.now(), client_id="web"))

    assert claims["aud"] == settings.audience == ISSUER
    assert "web" not in (claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]])


def test_configured_access_token_audience_replaces_the_issuer(
    keys: KeySnapshot, clock: FrozenClock
) -> None:
    settings = make_settings(
        issuer=ISSUER, clients=[WEB], access_token_audience="https://api.example.com"
    )

    _, claims = segments(access_token(keys, settings, clock.now()))

    assert claims["aud"] == "https://api.example.com"


def test_per_client_audience_is_honoured(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    _, single = segments(access_token(keys, settings, clock.now(), client_id="api-bound"))
    _, multi = segments(access_token(keys, settings, clock.now(), client_id="multi"))

    assert single["aud"] == "https://api.example.com"
    assert multi["aud"] == ["https://a.example.com", "https://b.example.com"]


# --- ID tokens ----------------------------------------------------------------------------------


def test_id_token_is_for_the_client_with_nonce_auth_time_and_sid(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    token = id_token(keys, settings, clock.now(), nonce="n-0S6_WzA2Mj")

    header, claims = segments(token)
    jwt.decode(token, keys.verification, algorithms=["RS256"])  # signature is ours
    assert header["alg"] == "RS256"  # the default for a client that registered none
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "web"
    assert claims["sub"] == "user-123"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["auth_time"] == int((clock.now() - dt.timedelta(minutes=1)).timestamp())
    assert claims["sid"] == "sid-1"
    assert claims["email"] == "a@example.com"


def test_id_token_at_hash_is_the_left_half_of_the_sha256_of_the_access_token(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    at = access_token(keys, settings, clock.now())

    _, claims = segments(id_token(keys, settings, clock.now(), at=at))

    assert claims["at_hash"] == b64url(hashlib.sha256(at.encode()).digest()[:16])


def test_id_token_has_no_nonce_when_none_was_sent(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    _, claims = segments(id_token(keys, settings, clock.now(), nonce=None))

    assert "nonce" not in claims


def test_id_token_is_signed_es256_when_the_client_registered_it(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    at = access_token(keys, settings, clock.now(), client_id="compact")

    token = id_token(keys, settings, clock.now(), client_id="compact", at=at)

    header, claims = segments(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == keys.signer("ES256").kid
    assert jwt.decode(token, keys.verification, algorithms=["ES256"]).claims["aud"] == "compact"
    assert claims["at_hash"] == b64url(hashlib.sha256(at.encode()).digest()[:16])


def test_id_token_is_rs256_and_access_token_es256_by_default(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    at = access_token(keys, settings, clock.now(), client_id="web")

    token = id_token(keys, settings, clock.now(), client_id="web", at=at)

    assert segments(at)[0]["alg"] == "ES256"
    header, claims = segments(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == keys.signer("RS256").kid
    assert claims["at_hash"] == b64url(hashlib.sha256(at.encode()).digest()[:16])


# --- verification -------------------------------------------------------------------------------


def test_valid_access_token_is_accepted(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    token = access_token(keys, settings, clock.now())

    claims = verify_access_token(token, keys, settings, clock.now())

    assert claims["sub"] == "user-123"
    assert claims["client_id"] == "web"


def test_access_token_with_alg_none_is_rejected(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    header, claims = segments(access_token(keys, settings, clock.now()))
    forged = f"{b64json({**header, 'alg': 'none'})}.{b64json(claims)}."

    with pytest.raises(TokenInvalid):
        verify_access_token(forged, keys, settings, clock.now())


@pytest.mark.parametrize("material", ["pem", "jwk-json"])
def test_access_token_hmac_signed_with_the_public_key_is_rejected(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock, material: str
) -> None:
    header, claims = segments(access_token(keys, settings, clock.now()))
    public = keys.signer("ES256").key
    secret = (
        public.as_pem(private=False)
        if material == "pem"
        else json.dumps(public.as_dict(private=False)).encode()
    )
    signing_input = f"{b64json({**header, 'alg': 'HS256'})}.{b64json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64url(signature)}"

    with pytest.raises(TokenInvalid):
        verify_access_token(forged, keys, settings, clock.now())


def test_access_token_signed_by_an_unpublished_key_is_rejected(
    keys: KeySnapshot, other_keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    forged = access_token(other_keys, settings, clock.now())

    with pytest.raises(TokenInvalid):
        verify_access_token(forged, keys, settings, clock.now())


def test_access_token_with_a_published_kid_but_foreign_signature_is_rejected(
    keys: KeySnapshot, other_keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    foreign = access_token(other_keys, settings, clock.now())
    header, claims = segments(foreign)
    signature = foreign.rsplit(".", 1)[1]
    relabelled = f"{b64json({**header, 'kid': keys.signer('ES256').kid})}.{b64json(claims)}"

    with pytest.raises(TokenInvalid):
        verify_access_token(f"{relabelled}.{signature}", keys, settings, clock.now())


def test_id_token_is_not_accepted_as_an_access_token(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    # Same algorithm as access tokens: only typ tells them apart (RFC 9068 §4).
    same_alg = id_token(keys, settings, clock.now(), client_id="compact")
    default = id_token(keys, settings, clock.now())  # RS256: refused by the pinned alg

    with pytest.raises(TokenInvalid, match="not an access token"):
        verify_access_token(same_alg, keys, settings, clock.now())
    with pytest.raises(TokenInvalid):
        verify_access_token(default, keys, settings, clock.now())


def test_access_token_from_a_foreign_issuer_is_rejected(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    foreign = make_settings(issuer="http://127.0.0.1:9999", clients=[WEB])
    token = access_token(keys, foreign, clock.now())

    with pytest.raises(TokenInvalid):
        verify_access_token(token, keys, settings, clock.now())


def test_access_token_is_rejected_after_expiry_plus_leeway(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    token = access_token(keys, settings, clock.now())
    clock.advance(settings.access_token_ttl + CLOCK_LEEWAY - 5)
    verify_access_token(token, keys, settings, clock.now())  # still inside the leeway

    clock.advance(10)

    with pytest.raises(TokenInvalid):
        verify_access_token(token, keys, settings, clock.now())


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJFUzI1NiJ9..", "...."])
def test_garbage_is_rejected(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock, garbage: str
) -> None:
    with pytest.raises(TokenInvalid):
        verify_access_token(garbage, keys, settings, clock.now())


# --- service tokens (client_credentials) --------------------------------------------------------


def service_token(
    keys: KeySnapshot, settings: Settings, now: dt.datetime, **claims: Any
) -> tuple[str, dict[str, Any]]:
    values = service_token_claims(
        settings,
        client=client(settings, "api-bound"),
        scope="ledger.read",
        audience=("https://api.example.com",),
        now=now,
    )
    values.update(claims)
    return sign_service_token(keys, settings, values), values


def test_a_service_token_is_an_rfc9068_token_about_its_client_without_a_session(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    token, _ = service_token(keys, settings, clock.now())

    header, claims = segments(token)

    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    assert claims["sub"] == claims["client_id"] == "api-bound"
    assert claims["aud"] == "https://api.example.com"
    assert claims["scope"] == "ledger.read"
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    assert {"iss", "jti", "nbf"} <= claims.keys()
    assert "sid" not in claims and "auth_time" not in claims
    verified = verify_access_token(token, keys, settings, clock.now())
    assert is_service_token(verified)


def test_a_service_token_without_scope_carries_no_scope_claim(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    claims = service_token_claims(
        settings, client=client(settings, "multi"), scope="", audience=("a", "b"), now=clock.now()
    )

    assert "scope" not in claims
    assert claims["aud"] == ["a", "b"]


def test_a_token_without_a_session_whose_subject_is_not_its_client_is_rejected(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    # The broker signs no such token: a user's token always has its sid.
    token, _ = service_token(keys, settings, clock.now(), sub="user-123")

    with pytest.raises(TokenInvalid):
        verify_access_token(token, keys, settings, clock.now())


def test_a_users_token_is_not_a_service_token(
    keys: KeySnapshot, settings: Settings, clock: FrozenClock
) -> None:
    claims = verify_access_token(
        access_token(keys, settings, clock.now()), keys, settings, clock.now()
    )

    assert not is_service_token(claims)
