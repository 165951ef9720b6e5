"""Signing the broker's own JWTs: JWS compact serialization (RFC 7515 §7.1), ES256 or RS256.

The refresh grant signs two tokens per request and is CPU-bound, and ``joserfc.jwt.encode``
re-validates the header, the key and its permitted operations on every call. A ``JWTSigner`` is
built once per signing key: its protected headers are serialised up front, the claims are
serialised with orjson, and the signature is made by ``cryptography`` and encoded as JWA says
(RFC 7518 §3.3 RSASSA-PKCS1-v1_5; §3.4 ECDSA as the 32-byte R and S concatenated). No primitive
is implemented here. The output is byte for byte what ``joserfc.jwt.encode`` makes (the tests
compare them), and everything that reads JWTs — the broker's own verification, relying parties,
the verifier — goes through joserfc.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, RSAKey

from shared.crypto.opaque import b64url

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
ID_TOKEN_TYPE = "JWT"
LOGOUT_TOKEN_TYPE = "logout+jwt"  # OpenID Connect Back-Channel Logout 1.0 §2.4
JWT_TYPES = (ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, LOGOUT_TOKEN_TYPE)


def _protected_header(typ: str, alg: str, kid: str) -> bytes:
    # As joserfc.jwt.encode writes it: typ first, compact, ASCII.
    header = json.dumps({"typ": typ, "alg": alg, "kid": kid}, separators=(",", ":"))
    return b64url(header.encode("ascii"))


def _es256(key: ECKey) -> Callable[[bytes], bytes]:
    private = key.private_key
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise ValueError("ES256 needs a private P-256 key")
    algorithm = ec.ECDSA(hashes.SHA256())

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private.sign(data, algorithm))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def _rs256(key: RSAKey) -> Callable[[bytes], bytes]:
    private = key.private_key
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("RS256 needs a private RSA key")
    pkcs1v15, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def sign(data: bytes) -> bytes:
        return private.sign(data, pkcs1v15, sha256)

    return sign


class JWTSigner:
    """Signs JWTs with one private key; ``kid`` and ``alg`` go into every protected header."""

    def __init__(self, kid: str, alg: str, key: ECKey | RSAKey) -> None:
        self.kid = kid
        self.alg = alg
        self.key = key
        if alg == "ES256" and isinstance(key, ECKey):
            self._sign = _es256(key)
        elif alg == "RS256" and isinstance(key, RSAKey):
            self._sign = _rs256(key)
        else:
            raise ValueError(f"cannot sign {alg} with a {type(key).__name__}")
        self._headers = {typ: _protected_header(typ, alg, kid) for typ in JWT_TYPES}

    def sign(self, typ: str, claims: dict[str, Any]) -> str:
        """The compact JWS of ``claims`` with ``{typ, alg, kid}`` as the protected header."""
        signing_input = self._headers[typ] + b"." + b64url(orjson.dumps(claims))
        return (signing_input + b"." + b64url(self._sign(signing_input))).decode("ascii")
