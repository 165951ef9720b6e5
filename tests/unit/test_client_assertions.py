"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, OIDC Core §9;
docs/security.md "Client assertions"): what an assertion must be to prove its client. The
``jti`` record (replay) is tested against the database in
``tests/integration/test_service_tokens.py``."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from broker.http.errors import InvalidClient, InvalidRequest
from broker.oauth.client_assertions import assertion_audiences
from broker.oauth.clients import AuthenticatedClient, presented_credentials, verify_client
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey
from shared.settings import Settings, make_settings

from tests.support.client_assertions import (
    DROP,
    JWT_BEARER,
    assertion,
    assertion_params,
    ec_key,
    public_jwks,
    rsa_key,
)
from tests.support.properties import any_text, budget, nesting_depths

ISSUER = "http://127.0.0.1:8000"
TOKEN_ENDPOINT = f"{ISSUER}/token"
SECRET = "billing-secret-at-least-32-characters"
EC = ec_key("ec1")
RSA = rsa_key("rsa1")
PSS = rsa_key("pss1", alg="PS256")
LONE = ec_key("lone")
STRANGER = ec_key("ec1")  # the same kid as EC, another key
# The PS256-only key's private half without its alg, to sign what its owner should not.
PSS_UNRESTRICTED = RSAKey.import_key(
    {name: value for name, value in PSS.as_dict(private=True).items() if name != "alg"}
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(
        issuer=ISSUER,
        clients=[
            {
                "id": "signer",
                "grant_types": ["client_credentials"],
                "jwks": public_jwks(EC, RSA, PSS),
                "scopes": ["ledger.read"],
            },
            {
                # One key without a kid: an assertion needs none either.
                "id": "lone",
                "grant_types": ["client_credentials"],
                "jwks": {"keys": [_without_kid(LONE)]},
            },
            {
                "id": "billing",
                "secret": SECRET,
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            {"id": "spa", "redirect_uris": ["http://127.0.0.1:3000/callback"]},
        ],
    )


def _without_kid(key: ECKey) -> dict[str, Any]:
    public = key.as_dict(private=False)
    public.pop("kid", None)
    return public


def _authenticate(
    settings: Settings, params: dict[str, str], authorization: str | None = None
) -> AuthenticatedClient:
    credentials = presented_credentials(authorization, params)
    return verify_client(
        settings,
        credentials,
        now=dt.datetime.now(dt.UTC),
        audiences=assertion_audiences(settings),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _claims(client_id: str = "signer") -> dict[str, Any]:
    now = int(time.time())
    return {"iss": client_id, "sub": client_id, "aud": TOKEN_ENDPOINT, "exp": now + 60, "jti": "j1"}


@pytest.mark.parametrize(
    ("key", "alg"), [(EC, "ES256"), (RSA, "RS256"), (RSA, "PS256"), (PSS, "PS256")]
)
def test_an_assertion_signed_with_a_registered_key_authenticates_its_client(
    settings: Settings, key: ECKey | RSAKey, alg: str
):
    signed = assertion(key, "signer", TOKEN_ENDPOINT, alg=alg, jti="once")

    authenticated = _authenticate(settings, assertion_params(signed))

    assert authenticated.client.id == "signer"
    assert authenticated.assertion is not None
    assert authenticated.assertion.jti == "once"
    assert authenticated.assertion.client_id == "signer"


@pytest.mark.parametrize(
    "audience",
    [ISSUER, TOKEN_ENDPOINT, f"{ISSUER}/revoke", f"{ISSUER}/introspect", [TOKEN_ENDPOINT, "x"]],
)
def test_the_audience_may_be_the_issuer_or_an_endpoint_that_authenticates_clients(
    settings: Settings, audience: Any
):
    signed = assertion(EC, "signer", TOKEN_ENDPOINT, aud=audience)

    assert _authenticate(settings, assertion_params(signed)).client.id == "signer"


def test_a_client_with_one_key_needs_no_kid(settings: Settings):
    signed = assertion(LONE, "lone", ISSUER, header={"kid": DROP})

    assert _authenticate(settings, assertion_params(signed)).client.id == "lone"


def test_the_client_id_parameter_may_name_the_asserted_client(settings: Settings):
    params = {**assertion_params(assertion(EC, "signer", ISSUER)), "client_id": "signer"}

    assert _authenticate(settings, params).client.id == "signer"


REFUSED_ASSERTIONS = {
    "expired": lambda: assertion(EC, "signer", ISSUER, exp=int(time.time()) - 120),
    "exp-too-far-ahead": lambda: assertion(EC, "signer", ISSUER, exp=int(time.time()) + 3700),
    "no-exp": lambda: assertion(EC, "signer", ISSUER, exp=DROP),
    "no-jti": lambda: assertion(EC, "signer", ISSUER, jti=DROP),
    "empty-jti": lambda: assertion(EC, "signer", ISSUER, jti=""),
    "jti-too-long": lambda: assertion(EC, "signer", ISSUER, jti="j" * 257),
    "another-audience": lambda: assertion(EC, "signer", "https://elsewhere.example/token"),
    "no-audience": lambda: assertion(EC, "signer", ISSUER, aud=DROP),
    "iss-not-the-client": lambda: assertion(EC, "signer", ISSUER, iss="billing"),
    "not-yet-valid": lambda: assertion(EC, "signer", ISSUER, nbf=int(time.time()) + 600),
    "issued-in-the-future": lambda: assertion(EC, "signer", ISSUER, iat=int(time.time()) + 600),
    "unknown-kid": lambda: assertion(EC, "signer", ISSUER, header={"kid": "nope"}),
    "no-kid-among-several-keys": lambda: assertion(EC, "signer", ISSUER, header={"kid": DROP}),
    "another-key-same-kid": lambda: assertion(STRANGER, "signer", ISSUER),
    "rs256-with-a-ps256-only-key": lambda: assertion(
        PSS_UNRESTRICTED, "signer", ISSUER, alg="RS256"
    ),
    "ec-kid-with-an-rsa-alg": lambda: assertion(RSA, "signer", ISSUER, header={"kid": "ec1"}),
    "alg-none": lambda: _unsigned({"alg": "none", "kid": "ec1"}, _claims()),
    "hs256-keyed-with-the-public-key": lambda: _hs256_with_public_key(),
    "signed-by-another-client": lambda: assertion(EC, "billing", ISSUER),
    "not-a-jwt": lambda: "not-a-jwt",
    "payload-not-json": lambda: "e30.bm90IGpzb24.e30",
    "no-sub": lambda: assertion(EC, "signer", ISSUER, sub=DROP),
}


def _hs256_with_public_key() -> str:
    header = {"alg": "HS256", "kid": "ec1"}
    head, body = _b64(json.dumps(header).encode()), _b64(json.dumps(_claims()).encode())
    secret = json.dumps(EC.as_dict(private=False)).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


@pytest.mark.parametrize("case", sorted(REFUSED_ASSERTIONS))
def test_an_assertion_that_fails_a_check_is_invalid_client(settings: Settings, case: str):
    signed = REFUSED_ASSERTIONS[case]()

    with pytest.raises(InvalidClient) as caught:
        _authenticate(settings, assertion_params(signed))

    assert caught.value.status_code == 401
    assert caught.value.headers()["WWW-Authenticate"].startswith("Basic ")


def test_an_assertion_type_other_than_jwt_bearer_is_invalid_client(settings: Settings):
    params = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
        "client_assertion": assertion(EC, "signer", ISSUER),
    }

    with pytest.raises(InvalidClient, match="client_assertion_type"):
        _authenticate(settings, params)


@pytest.mark.parametrize(
    ("params", "authorization"),
    [
        ({"client_assertion": "x.y.z"}, None),
        ({"client_assertion_type": JWT_BEARER}, None),
        ({**assertion_params("x.y.z"), "client_secret": SECRET, "client_id": "billing"}, None),
        (assertion_params("x.y.z"), "Basic " + base64.b64encode(b"billing:x").decode()),
    ],
    ids=["assertion-without-type", "type-without-assertion", "with-a-secret", "with-basic"],
)
def test_an_assertion_with_another_method_or_half_missing_is_invalid_request(
    settings: Settings, params: dict[str, str], authorization: str | None
):
    with pytest.raises(InvalidRequest):
        _authenticate(settings, params, authorization)


def test_a_client_id_parameter_naming_another_client_is_invalid_request(settings: Settings):
    params = {**assertion_params(assertion(EC, "signer", ISSUER)), "client_id": "billing"}

    with pytest.raises(InvalidRequest, match="client_id"):
        _authenticate(settings, params)


def test_each_client_authenticates_only_the_way_it_registered(settings: Settings):
    basic = "Basic " + base64.b64encode(f"billing:{SECRET}".encode()).decode()
    assert _authenticate(settings, {}, basic).client.id == "billing"

    with pytest.raises(InvalidClient, match="client_secret_basic, not client_secret_post"):
        _authenticate(settings, {"client_id": "billing", "client_secret": SECRET})
    with pytest.raises(InvalidClient, match="private_key_jwt, not client_secret_post"):
        _authenticate(settings, {"client_id": "signer", "client_secret": SECRET})
    with pytest.raises(InvalidClient, match="private_key_jwt, not none"):
        _authenticate(settings, {"client_id": "signer"})
    # An assertion naming a client that registered a secret.
    with pytest.raises(InvalidClient, match="client_secret_basic, not private_key_jwt"):
        _authenticate(settings, assertion_params(assertion(EC, "billing", ISSUER)))
    # A public client has no keys to sign with.
    with pytest.raises(InvalidClient, match="public client"):
        _authenticate(settings, assertion_params(assertion(EC, "spa", ISSUER)))


def test_the_lifetime_bound_is_the_deployments_setting(settings: Settings):
    strict = settings.model_copy(update={"client_assertion_max_lifetime": 300})
    ten_minutes = assertion(EC, "signer", ISSUER, exp=int(time.time()) + 600)

    assert _authenticate(settings, assertion_params(ten_minutes)).client.id == "signer"
    with pytest.raises(InvalidClient, match="within 300 seconds"):
        _authenticate(
            strict, assertion_params(assertion(EC, "signer", ISSUER, exp=int(time.time()) + 600))
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
segments = st.one_of(
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "iss", "sub", "aud", "exp", "jti", "crit"]),
        json_values | st.sampled_from(["signer", "ec1", "ES256", "none", "HS256"]),
    ).map(lambda value: _b64(json.dumps(value).encode())),
    json_values.map(lambda value: _b64(json.dumps(value).encode())),
    nesting_depths.map(lambda depth: _b64(b"[" * depth)),
    st.binary(max_size=60).map(_b64),
    any_text,
)


@budget(150)
@given(segments, segments, segments)
def test_any_assertion_is_its_client_or_the_documented_error(
    settings: Settings, header: str, payload: str, signature: str
):
    try:
        _authenticate(settings, assertion_params(f"{header}.{payload}.{signature}"))
    except InvalidClient as exc:
        assert exc.status_code == 401
        exc.response()  # renders: a 401, never a 500
        return
    raise AssertionError("an unsigned assertion authenticated a client")
