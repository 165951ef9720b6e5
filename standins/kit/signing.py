"""Keys and JWTs for stand-in ID tokens: signing keys, public JWKs, ``at_hash``, unsigned JWTs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, RSAKey

SigningKey = RSAKey | ECKey

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_HASHES: dict[str, Callable[[bytes], Any]] = {
    "256": hashlib.sha256,
    "384": hashlib.sha384,
    "512": hashlib.sha512,
}


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def is_supported(alg: str) -> bool:
    """Whether :func:`generate_key` can make a key for ``alg``."""
    return alg in RSA_ALGORITHMS or alg in EC_CURVES


def generate_key(alg: str, kid: str) -> SigningKey:
    """A fresh private signing key for ``alg`` (RS*/PS* 2048-bit RSA, ES* on its curve)."""
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    if alg in RSA_ALGORITHMS:
        return RSAKey.generate_key(2048, parameters=parameters)
    return ECKey.generate_key(EC_CURVES[alg], parameters=parameters)


def public_jwk(key: SigningKey, *, kid: str, alg: str) -> dict[str, Any]:
    """The public half of ``key`` as a JWK with ``kid``, ``alg`` and ``use: sig``."""
    public = key.as_dict(private=False)
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    return public


def sign(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    """A JWS compact JWT signed with ``key`` using the header's ``alg``."""
    return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """An unsecured JWT (``alg: none``, empty signature), as a broken provider would send."""
    segments = [
        b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
        for part in ({"alg": "none", "typ": "JWT"}, claims)
    ]
    return ".".join([*segments, ""])


def left_half_hash(value: str, alg: str) -> str:
    """An OIDC ``at_hash``: the left half of the alg's hash of ``value``, base64url."""
    digest = _HASHES[alg[-3:]](value.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2])


def certified_rsa_key(common_name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh RSA key and a self-signed certificate for it (DER), valid for a year."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(private, hashes.SHA256())
    )
    return private, certificate.public_bytes(serialization.Encoding.DER)
