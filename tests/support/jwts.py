"""Reading tokens the broker minted in the same test: their header and claims, unverified."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any


def _segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def header_of(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS, read without checking the signature."""
    return _segment(token, 0)


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, read without checking the signature (tests that check
    signatures use the verifier)."""
    return _segment(token, 1)


def session_of(access_token: str) -> uuid.UUID:
    """The broker session (``sid``) an access token belongs to."""
    return uuid.UUID(claims_of(access_token)["sid"])
