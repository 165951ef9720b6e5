"""Reading tokens the broker minted in the same test: their claims, unverified."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, read without checking the signature (tests that check
    signatures use the verifier)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def session_of(access_token: str) -> uuid.UUID:
    """The broker session (``sid``) an access token belongs to."""
    return uuid.UUID(claims_of(access_token)["sid"])
