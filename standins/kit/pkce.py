"""PKCE as an authorization server checks it (RFC 7636): S256 only."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def s256(verifier: str) -> str:
    """The S256 challenge for ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_verifier(value: str | None) -> bool:
    """Whether ``value`` is a well-formed ``code_verifier`` (RFC 7636 §4.1: 43-128 characters)."""
    return value is not None and _VERIFIER.fullmatch(value) is not None


def is_s256_challenge(value: str) -> bool:
    """Whether ``value`` has the shape of an S256 ``code_challenge`` (43 base64url characters)."""
    return _S256_CHALLENGE.fullmatch(value) is not None


def verifier_matches(verifier: str | None, challenge: str) -> bool:
    """Whether ``verifier`` hashes to ``challenge`` (compared in constant time)."""
    return verifier is not None and secrets.compare_digest(s256(verifier), challenge)
