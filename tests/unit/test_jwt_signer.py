"""The broker's JWT signer: exactly the compact JWS joserfc makes (RFC 7515 §7.1, RFC 7518)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, RSAKey
from shared.crypto.jwt_signer import ACCESS_TOKEN_TYPE, JWT_TYPES, JWTSigner
from shared.crypto.keyring import Keyring
from shared.signing_keys import build_snapshot, generate_signing_key

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
# Non-ASCII, quotes, a backslash and control characters: the payload's JSON escaping matters.
CLAIMS = {
    "iss": "http://127.0.0.1:8000",
    "sub": "6f1c2d1e-0000-4000-8000-000000000001",
    "aud": ["https://a.example", "https://b.example"],
    "exp": 1893499200,
    "iat": 1893498300,
    "name": 'Zoë "Ünicode" \\ O\'Brien\t\n\x01\u2028',
    "email_verified": True,
    "picture": None,
}


def _signer(alg: str) -> JWTSigner:
    keyring = Keyring.generate("k1")
    snapshot = build_snapshot([generate_signing_key(alg, keyring, NOW)], keyring, NOW)
    return snapshot.signer(alg)


def _public(signer: JWTSigner) -> ECKey | RSAKey:
    kind = ECKey if signer.alg == "ES256" else RSAKey
    return kind.import_key(signer.key.as_dict(private=False))


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
@pytest.mark.parametrize("typ", JWT_TYPES)
def test_signed_jwt_verifies_with_joserfc_and_carries_the_protected_header(alg, typ):
    signer = _signer(alg)
    decoded = jwt.decode(signer.sign(typ, dict(CLAIMS)), _public(signer), algorithms=[alg])
    assert decoded.header == {"typ": typ, "alg": alg, "kid": signer.kid}
    assert decoded.claims == CLAIMS


@pytest.mark.parametrize("typ", JWT_TYPES)
def test_signed_jwt_is_byte_for_byte_what_joserfc_encodes(typ):
    # RS256 (PKCS #1 v1.5) signatures are deterministic, so whole tokens can be compared.
    signer = _signer("RS256")
    header = {"alg": "RS256", "kid": signer.kid, "typ": typ}
    expected = jwt.encode(header, dict(CLAIMS), signer.key, algorithms=["RS256"])
    assert signer.sign(typ, dict(CLAIMS)) == expected


def test_es256_signing_input_matches_joserfc_and_the_signature_is_raw_r_and_s():
    signer = _signer("ES256")
    token = signer.sign(ACCESS_TOKEN_TYPE, dict(CLAIMS))
    header = {"alg": "ES256", "kid": signer.kid, "typ": ACCESS_TOKEN_TYPE}
    reference = jwt.encode(header, dict(CLAIMS), signer.key, algorithms=["ES256"])
    # ECDSA is randomised: the signing inputs are equal, the signatures differ but both verify.
    assert token.rsplit(".", 1)[0] == reference.rsplit(".", 1)[0]
    signature = token.rsplit(".", 1)[1]
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64  # RFC 7518 §3.4: R || S


def test_a_signature_does_not_verify_over_other_claims():
    signer = _signer("ES256")
    header, _, signature = signer.sign(ACCESS_TOKEN_TYPE, dict(CLAIMS)).split(".")
    other = signer.sign(ACCESS_TOKEN_TYPE, {**CLAIMS, "sub": "someone-else"}).split(".")[1]
    with pytest.raises(BadSignatureError):
        jwt.decode(".".join([header, other, signature]), _public(signer), algorithms=["ES256"])


def test_a_key_that_does_not_fit_the_algorithm_is_refused():
    ec_key = ECKey.generate_key("P-256")
    with pytest.raises(ValueError, match="RS256"):
        JWTSigner("k", "RS256", ec_key)
    with pytest.raises(ValueError, match="P-256"):
        JWTSigner("k", "ES256", ECKey.generate_key("P-384"))
    with pytest.raises(ValueError, match="HS256"):
        JWTSigner("k", "HS256", ec_key)
