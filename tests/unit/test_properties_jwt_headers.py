"""Properties of JWT verification against hostile JOSE headers (docs/security.md "Token
verification"): the broker's own checks (``broker.oauth.tokens``) and the shipped verifier
(``oidc_broker_verifier``) answer any header — ``alg``, ``kid``, ``typ``, ``crit`` of any type,
non-Latin-1, huge, nested, not JSON, not base64 — with ``TokenInvalid`` / ``TokenRejected`` or,
for the header the broker writes, the claims. Headers are signed with the broker's real key, so
only the header decides."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import httpx2
import pytest
from broker.oauth.tokens import TokenInvalid, verify_access_token, verify_id_token_hint
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from oidc_broker_verifier import AccessTokenVerifier, TokenRejected
from oidc_broker_verifier.middleware import AccessTokenMiddleware
from shared.crypto.keyring import Keyring
from shared.settings import Settings, make_settings
from shared.signing_keys import KeySnapshot, build_snapshot, generate_signing_key

from tests.support.properties import any_text, budget, nesting_depths

ISSUER = "http://127.0.0.1:8000"
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
JWKS_URI = "http://broker.test/jwks.json"
AUDIENCE = "https://api.example"


@pytest.fixture(scope="module")
def keys() -> KeySnapshot:
    keyring = Keyring.generate("unit")
    rows = [generate_signing_key("ES256", keyring, NOW - dt.timedelta(days=1))]
    return build_snapshot(rows, keyring, NOW)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(issuer=ISSUER)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(keys: KeySnapshot, header_segment: str, claims: dict[str, Any]) -> str:
    """A compact JWS with this exact header segment, signed ES256 by the broker's key."""
    signing_input = f"{header_segment}.{b64(json.dumps(claims).encode())}".encode()
    private = keys.signer("ES256").key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{signing_input.decode()}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def claims(**overrides: Any) -> dict[str, Any]:
    issued = int(NOW.timestamp())
    return {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": issued + 600,
        "iat": issued,
        "jti": "j",
        "client_id": "web",
        "sid": "00000000-0000-4000-8000-000000000001",
        **overrides,
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
HEADER_NAMES = ["alg", "kid", "typ", "crit", "b64", "zip", "cty", "jku", "jwk", "x5u", "x5c", "enc"]


@st.composite
def headers(draw: st.DrawFn, kid: str) -> dict[str, Any]:
    """The header the broker writes, with members changed, removed or added."""
    header: dict[str, Any] = {"typ": "at+jwt", "alg": "ES256", "kid": kid}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES) | any_text, max_size=4)):
        if draw(st.booleans()) and name in header:
            del header[name]
            continue
        header[name] = draw(
            st.one_of(
                json_values,
                st.sampled_from(["none", "HS256", "RS256", "ES384", "ES256", "AT+JWT", "JWT"]),
                st.sampled_from([kid.upper(), kid + "\x00", kid + "é", "ü" * 3, "\U0001f511"]),
                st.lists(st.sampled_from(["b64", "exp", "alg", ""]), max_size=3),
                st.integers(1000, 5000).map(lambda n: "k" * n),
            )
        )
    return header


def header_segments(kid: str) -> st.SearchStrategy[str]:
    return st.one_of(
        headers(kid).map(lambda header: b64(json.dumps(header).encode())),
        # Not Latin-1, not JSON, not an object, nested deep, not UTF-8, raw JSON text.
        headers(kid).map(lambda header: b64(json.dumps(header, ensure_ascii=False).encode())),
        st.binary(max_size=200).map(b64),
        json_values.map(lambda value: b64(json.dumps(value).encode())),
        nesting_depths.map(lambda depth: b64(b"[" * depth)),
        nesting_depths.map(lambda depth: b64(b'{"a":' * depth)),
        # Not base64url: padding, the standard alphabet, whitespace, non-ASCII, empty.
        st.text(max_size=80),
        headers(kid).map(lambda header: base64.b64encode(json.dumps(header).encode()).decode()),
    )


@budget(150)
@given(st.data())
def test_any_header_is_an_access_token_or_token_invalid(
    keys: KeySnapshot, settings: Settings, data: st.DataObject
):
    kid = keys.signer("ES256").kid
    token = signed(keys, data.draw(header_segments(kid)), claims())
    try:
        verified = verify_access_token(token, keys, settings, NOW)
    except TokenInvalid:
        return
    assert verified["sub"] == "user-1"


@budget(100)
@given(st.data())
def test_any_header_is_an_id_token_hint_or_token_invalid(
    keys: KeySnapshot, settings: Settings, data: st.DataObject
):
    kid = keys.signer("ES256").kid
    token = signed(keys, data.draw(header_segments(kid)), claims(aud="web"))
    try:
        verify_id_token_hint(token, keys, settings)
    except TokenInvalid:
        return


@budget(100)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda raw: raw.decode("latin-1")))
def test_any_string_is_a_token_or_token_invalid(keys: KeySnapshot, settings: Settings, token: str):
    for verify in (
        lambda: verify_access_token(token, keys, settings, NOW),
        lambda: verify_id_token_hint(token, keys, settings),
    ):
        with pytest.raises(TokenInvalid):
            verify()


def serving(keys: KeySnapshot) -> httpx2.AsyncClient:
    """The broker's JWKS, served in memory to the verifier."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert str(request.url) == JWKS_URI
        return httpx2.Response(200, content=keys.jwks_body, headers={"cache-control": "max-age=60"})

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


@budget(150)
@given(st.data())
async def test_the_verifier_answers_any_header_with_token_rejected_or_claims(
    keys: KeySnapshot, data: st.DataObject
):
    kid = keys.signer("ES256").kid
    token = signed(keys, data.draw(header_segments(kid)), claims())
    async with serving(keys) as http:
        verifier = AccessTokenVerifier(
            ISSUER, audience=AUDIENCE, jwks_uri=JWKS_URI, http=http, clock=NOW.timestamp
        )
        try:
            verified = await verifier.verify(token)
        except TokenRejected as exc:
            str(exc).encode("utf-8", "backslashreplace")
            return
    assert verified["sub"] == "user-1"


@budget(100)
@given(st.text(max_size=300))
async def test_the_verifier_answers_any_string_with_token_rejected(keys: KeySnapshot, token: str):
    async with serving(keys) as http:
        verifier = AccessTokenVerifier(
            ISSUER, audience=AUDIENCE, jwks_uri=JWKS_URI, http=http, clock=NOW.timestamp
        )
        with pytest.raises(TokenRejected):
            await verifier.verify(token)


@budget(100)
@given(st.data())
async def test_the_middleware_answers_any_authorization_header_with_401_or_passes_it_on(
    keys: KeySnapshot, data: st.DataObject
):
    kid = keys.signer("ES256").kid
    value = data.draw(
        st.binary(max_size=200)
        | header_segments(kid).map(
            lambda segment: f"Bearer {signed(keys, segment, claims())}".encode()
        )
    )
    reached: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(True)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async with serving(keys) as http:
        verifier = AccessTokenVerifier(
            ISSUER, audience=AUDIENCE, jwks_uri=JWKS_URI, http=http, clock=NOW.timestamp
        )
        middleware = AccessTokenMiddleware(app, verifier=verifier)
        scope = {"type": "http", "path": "/api", "headers": [(b"authorization", value)]}
        await middleware(scope, receive, send)
    if reached:
        assert not sent
        return
    assert sent[0]["status"] == 401
    for _name, header in sent[0]["headers"]:
        header.decode("ascii")


# Regressions these properties found, one plain example each.


async def test_the_verifier_rejects_a_header_nested_past_the_json_depth_limit(keys: KeySnapshot):
    # Was a RecursionError out of verify(): the resource server's middleware answered 500.
    token = signed(keys, b64(b"[" * 3000), claims())
    async with serving(keys) as http:
        verifier = AccessTokenVerifier(ISSUER, audience=AUDIENCE, jwks_uri=JWKS_URI, http=http)
        with pytest.raises(TokenRejected, match="not JSON"):
            await verifier.verify(token)
