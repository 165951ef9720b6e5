"""A client's public keys for ``private_key_jwt`` (RFC 7523 §2.2, OIDC Core §9): its ``jwks``.

The key set is checked when the settings load, so a bad one stops startup naming the client:
public keys only (a private member in the broker's configuration means a private key was
pasted where it does not belong), RSA of at least 2048 bits or EC P-256, every key with a
``kid`` once there is more than one (a client assertion names its key by ``kid``), no ``kid``
twice, and a key's ``alg``, when it has one, among the algorithms the broker accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

# The JWS algorithms a client assertion may use (discovery's
# token_endpoint_auth_signing_alg_values_supported): asymmetric only.
ASSERTION_ALGORITHMS = ("ES256", "PS256", "RS256")
_ALGORITHMS_BY_KEY_TYPE = {"EC": ("ES256",), "RSA": ("PS256", "RS256")}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MIN_RSA_BITS = 2048


def import_client_keys(jwks: Mapping[str, Any]) -> KeySet:
    """The client's key set, or ``ValueError`` saying what is wrong with it."""
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ValueError("jwks must be a JSON Web Key Set with at least one key: {keys: [...]}")
    for index, key in enumerate(keys):
        if not isinstance(key, dict):
            raise ValueError(f"jwks.keys[{index}] is not a JSON object")
        if key.get("kty") not in _ALGORITHMS_BY_KEY_TYPE:
            raise ValueError(f"jwks.keys[{index}]: kty must be RSA or EC")
        private = [name for name in _PRIVATE_MEMBERS if name in key]
        if private:
            raise ValueError(
                f"jwks.keys[{index}] has the private member {private[0]!r}: configure the "
                "client's public keys only"
            )
        if "alg" in key and key["alg"] not in _ALGORITHMS_BY_KEY_TYPE[key["kty"]]:
            allowed = ", ".join(_ALGORITHMS_BY_KEY_TYPE[key["kty"]])
            raise ValueError(f"jwks.keys[{index}]: alg must be one of {allowed} for this key")
        if key.get("use", "sig") != "sig":
            raise ValueError(f"jwks.keys[{index}]: use must be sig")
    kids = [key.get("kid") for key in keys]
    if len(keys) > 1 and not all(isinstance(kid, str) and kid for kid in kids):
        raise ValueError("jwks: every key needs a kid when there is more than one")
    if len(set(kids)) != len(kids):
        raise ValueError("jwks: a kid appears twice")
    try:
        key_set = KeySet.import_key_set({"keys": keys})  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"jwks: a key cannot be read ({type(exc).__name__})") from None
    for index, imported in enumerate(key_set.keys):
        if isinstance(imported, RSAKey) and imported.raw_value.key_size < MIN_RSA_BITS:
            raise ValueError(f"jwks.keys[{index}]: RSA keys need at least {MIN_RSA_BITS} bits")
        if isinstance(imported, ECKey) and imported.curve_name != "P-256":
            raise ValueError(f"jwks.keys[{index}]: EC keys must be on P-256 (ES256)")
    return key_set


def key_algorithms(key: RSAKey | ECKey) -> tuple[str, ...]:
    """The assertion algorithms this key may verify: its ``alg`` if it names one, else those of
    its type (RFC 7517 §4.4: a key's ``alg`` restricts what it is used with)."""
    alg = key.get("alg")
    if isinstance(alg, str):
        return (alg,)
    return _ALGORITHMS_BY_KEY_TYPE[key.key_type]
