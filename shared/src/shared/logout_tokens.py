"""Logout Tokens: what the broker tells a relying party when one of its sessions ends
(OpenID Connect Back-Channel Logout 1.0 §2.4; docs/security.md "Back-channel Logout Tokens").

Claims: ``iss``; ``aud`` the client id; ``iat`` and ``exp`` (``LOGOUT_TOKEN_TTL`` later) of the
attempt that sends it; ``jti`` fixed per delivery; ``sub`` the broker user id and ``sid`` the
broker session, always both; ``events`` naming the back-channel logout event; never a ``nonce``.
Header ``typ: logout+jwt``, signed with the algorithm of the client's ID tokens by the key that
signs them now, so the relying party checks it against the JWKS it already uses.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from shared.crypto.jwt_signer import LOGOUT_TOKEN_TYPE
from shared.signing_keys import KeySnapshot

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Seconds a Logout Token is valid: it is signed at each attempt and used at once, so only
# clock skew and the request's own time need to fit; a copy of it is worthless soon after.
LOGOUT_TOKEN_TTL = 120


@dataclass(frozen=True)
class EndedSession:
    """A broker session that ended, as one relying party is told about it."""

    client_id: str
    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: str


def logout_token_claims(issuer: str, ended: EndedSession, now: dt.datetime) -> dict[str, Any]:
    """§2.4: the claims of a Logout Token for ``ended``, issued ``now``."""
    issued = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": ended.client_id,
        "iat": issued,
        "exp": issued + LOGOUT_TOKEN_TTL,
        "jti": ended.jti,
        "sub": str(ended.user_id),
        "sid": str(ended.session_id),
        "events": {LOGOUT_EVENT: {}},
    }


def sign_logout_token(keys: KeySnapshot, alg: str, claims: dict[str, Any]) -> str | None:
    """The compact JWS of ``claims`` (``typ: logout+jwt``) by the key signing ``alg`` now;
    None when no such key is loaded yet."""
    signer = keys.signing.get(alg)
    return None if signer is None else signer.sign(LOGOUT_TOKEN_TYPE, claims)
