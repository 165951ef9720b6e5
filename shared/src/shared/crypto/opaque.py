"""Opaque bearer values (refresh tokens, codes, states): 256 random bits, stored only as SHA-256."""

from __future__ import annotations

import base64
import hashlib
import secrets


def b64url(data: bytes) -> bytes:
    """Base64url without padding (RFC 4648 §5; RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def new_opaque_token() -> str:
    """32 random bytes, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """The SHA-256 digest that is stored in place of the token (docs/security.md "Refresh-token
    rotation and reuse")."""
    return hashlib.sha256(token.encode()).digest()
