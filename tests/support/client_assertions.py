"""A client's side of ``private_key_jwt`` (RFC 7523 §2.2): its key pairs and the assertions it
signs, with any claim or header changed to play a broken or hostile client."""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DROP = object()  # a claim or header value that removes the member


def ec_key(kid: str = "ec1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid})


def rsa_key(kid: str = "rsa1", alg: str | None = None) -> RSAKey:
    parameters: dict[str, Any] = {"kid": kid}
    if alg:
        parameters["alg"] = alg
    return RSAKey.generate_key(2048, parameters=parameters)


def public_jwks(*keys: ECKey | RSAKey) -> dict[str, Any]:
    """What the client registers in the broker's configuration: public halves only."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def assertion(
    key: ECKey | RSAKey,
    client_id: str,
    audience: str,
    *,
    alg: str | None = None,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A client assertion signed with ``key`` (``ES256`` for EC keys, else ``RS256`` unless
    ``alg``); ``claims`` and ``header`` override or (with ``DROP``) remove members."""
    alg = alg or ("ES256" if isinstance(key, ECKey) else "RS256")
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    payload.update(claims)
    protected: dict[str, Any] = {"alg": alg, "kid": key.kid}
    protected.update(header or {})
    payload = {name: value for name, value in payload.items() if value is not DROP}
    protected = {name: value for name, value in protected.items() if value is not DROP}
    return jwt.encode(protected, payload, key, algorithms=[alg])


def assertion_params(signed: str) -> dict[str, str]:
    """The body parameters of ``private_key_jwt``."""
    return {"client_assertion_type": JWT_BEARER, "client_assertion": signed}
