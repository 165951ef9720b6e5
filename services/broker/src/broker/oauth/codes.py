"""Authorization codes: issued after login, redeemed once at the token endpoint.

RFC 6749 §4.1.2 / §10.5 and docs/security.md "PKCE", "Single-use authorization codes": single use,
short-lived, bound to the client,
the redirect URI and the PKCE challenge. A code presented twice revokes the session its first
exchange created.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from shared.audit import record_audit_core
from shared.auth_sessions import revoke_session
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.tables import CODES
from shared.revocations import Revocation
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.http.errors import InvalidGrant, InvalidRequest


@dataclass(frozen=True)
class RedeemedCode:
    code_hash: bytes
    user_id: uuid.UUID
    profile_id: uuid.UUID | None
    provider: str
    scope: str
    nonce: str | None
    auth_time: dt.datetime
    user_agent: str | None
    ip: str | None
    browser_hash: bytes | None


async def issue_code(
    connection: AsyncConnection, *, ttl: int, now: dt.datetime, **values: Any
) -> str:
    """Store a new code (hashed) and return its value for the redirect."""
    code = new_opaque_token()
    await connection.execute(
        insert(CODES).values(
            code_hash=token_hash(code),
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl),
            **values,
        )
    )
    return code


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_verifier(verifier: str) -> None:
    # RFC 7636 §4.1: 43-128 characters of [A-Z a-z 0-9 - . _ ~].
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    if not 43 <= len(verifier) <= 128 or not set(verifier) <= allowed:
        raise InvalidGrant("code_verifier is malformed")


class CodeUnusable(InvalidGrant):
    """The code is unknown or was used; a replay revoked the session of its first exchange."""

    def __init__(self, revocation: Revocation | None) -> None:
        super().__init__("the authorization code is invalid, expired or already used")
        self.revocation = revocation  # publish after commit


async def redeem_code(
    connection: AsyncConnection,
    *,
    code: str,
    client_id: str,
    redirect_uri: str | None,
    code_verifier: str | None,
    now: dt.datetime,
) -> RedeemedCode:
    """Consume the code or raise ``InvalidGrant``; a replay revokes the first exchange's session."""
    hashed = token_hash(code)
    row = (
        await connection.execute(
            update(CODES)
            .where(CODES.c.code_hash == hashed, CODES.c.used_at.is_(None))
            .values(used_at=now)
            .returning(*CODES.c)
        )
    ).first()
    if row is None:
        replayed = (
            await connection.execute(
                select(CODES.c.session_id, CODES.c.client_id, CODES.c.user_id).where(
                    CODES.c.code_hash == hashed
                )
            )
        ).first()
        revocation = None
        if replayed is not None and replayed.session_id is not None:
            # RFC 6749 §4.1.2: revoke the tokens issued from the first use of this code.
            revocation = await revoke_session(
                connection,
                replayed.session_id,
                now=now,
                reason="authorization_code_reuse",
                actor=f"client:{client_id}",
            )
            await record_audit_core(
                connection,
                action="authorization_code.reused",
                actor=f"client:{client_id}",
                subject=str(replayed.user_id),
                client_id=replayed.client_id,
                data={"sid": str(replayed.session_id)},
                now=now,
            )
        raise CodeUnusable(revocation)
    if row.expires_at <= now:
        raise InvalidGrant("the authorization code is invalid, expired or already used")
    if row.client_id != client_id:
        raise InvalidGrant("the authorization code was issued to another client")
    # RFC 6749 §4.1.3: redirect_uri must be identical to the one of the authorization request.
    if redirect_uri is None:
        raise InvalidRequest("redirect_uri is required")
    if redirect_uri != row.redirect_uri:
        raise InvalidGrant("redirect_uri does not match the authorization request")
    if row.code_challenge is not None:
        if not code_verifier:
            raise InvalidGrant("code_verifier is required")
        _check_verifier(code_verifier)
        if not hmac.compare_digest(s256(code_verifier), row.code_challenge):
            raise InvalidGrant("code_verifier does not match the code_challenge")
    elif code_verifier is not None:
        # RFC 9700 §4.8.2: a verifier without a challenge is a PKCE downgrade attempt.
        raise InvalidGrant("code_verifier sent, but the authorization request had no challenge")
    return RedeemedCode(
        code_hash=hashed,
        user_id=row.user_id,
        profile_id=row.profile_id,
        provider=row.provider,
        scope=row.scope,
        nonce=row.nonce,
        auth_time=row.auth_time,
        user_agent=row.user_agent,
        ip=row.ip,
        browser_hash=row.browser_hash,
    )


async def attach_session(
    connection: AsyncConnection, code_hash: bytes, session_id: uuid.UUID
) -> None:
    await connection.execute(
        update(CODES).where(CODES.c.code_hash == code_hash).values(session_id=session_id)
    )
