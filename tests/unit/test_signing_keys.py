"""Signing with a loaded key: the compact JWS it makes is the one joserfc makes (RFC 7515 §7.1)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, RSAKey
from shared.crypto.keyring import Keyring
from shared.signing_keys import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    LoadedKey,
    build_snapshot,
    generate_signing_key,
)

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
CLAIMS = {
    "iss": "http://127.0.0.1:8000",
    "sub": "6f1c2d1e-0000-4000-8000-000000000001",
    "aud": ["https://a.example", "https://b.example"],
    "exp": 1893499200,
    "iat": 1893498300,
    "name": "Zoë Ünicode",
    "email_verified": True,
}


def _loaded(alg: str) -> LoadedKey:
    keyring = Keyring.generate("k1")
    snapshot = build_snapshot([generate_signing_key(alg, keyring, NOW)], keyring, NOW)
    return snapshot.signer(alg)


def _segment(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
@pytest.mark.parametrize("typ", [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE])
def test_signed_jwt_verifies_with_joserfc_and_carries_the_protected_header(alg, typ):
    signer = _loaded(alg)
    token = signer.sign_jwt(typ, CLAIMS)
    public = signer.key.as_dict(private=False)
    key = (ECKey if alg == "ES256" else RSAKey).import_key(public)
    decoded = jwt.decode(token, key, algorithms=[alg])
    assert decoded.header == {"typ": typ, "alg": alg, "kid": signer.kid}
    assert decoded.claims == CLAIMS


@pytest.mark.parametrize("typ", [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE])
def test_signed_jwt_is_byte_for_byte_what_joserfc_encodes(typ):
    # RS256 (PKCS #1 v1.5) signatures are deterministic, so the whole token can be compared.
    signer = _loaded("RS256")
    header = {"alg": "RS256", "kid": signer.kid, "typ": typ}
    assert signer.sign_jwt(typ, CLAIMS) == jwt.encode(
        header, CLAIMS, signer.key, algorithms=["RS256"]
    )


def test_es256_signature_is_raw_r_and_s_and_bound_to_the_signing_input():
    signer = _loaded("ES256")
    token = signer.sign_jwt(ACCESS_TOKEN_TYPE, CLAIMS)
    header, _, signature = token.split(".")
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64  # RFC 7518 §3.4: R || S
    assert _segment(token, 1) == CLAIMS
    public = ECKey.import_key(signer.key.as_dict(private=False))
    other = signer.sign_jwt(ACCESS_TOKEN_TYPE, {**CLAIMS, "sub": "someone-else"})
    forged = ".".join([header, other.split(".")[1], signature])
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, public, algorithms=["ES256"])
