"""What a rotation answers: the successor's grant, or ``RotationError`` saying why there is none."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import Enum
from typing import Any

from sqlalchemy import select

from shared.auth_sessions import USER_CLAIM_COLUMNS, SessionGrant
from shared.db.tables import SESSIONS, USERS
from shared.revocations import Revocation
from shared.upstream_tokens import RevokedGrant


class RotationFailure(Enum):
    UNKNOWN = "unknown"  # never issued, or purged
    EXPIRED = "expired"
    WRONG_CLIENT = "wrong_client"
    REVOKED = "revoked"  # the session was revoked or the user disabled
    REUSED = "reused"  # an already rotated token: the family is now revoked
    LINK_REVOKED = "link_revoked"  # the upstream link behind the session was revoked
    REAUTH_REQUIRED = "reauth_required"  # the upstream link needs the user to sign in again


class RotationError(Exception):
    def __init__(
        self,
        failure: RotationFailure,
        session_id: Any = None,
        revocations: Sequence[Revocation] = (),
        upstream_grants: Sequence[RevokedGrant] = (),
    ) -> None:
        super().__init__(failure.value)
        self.failure = failure
        self.session_id = session_id
        # What a replay revoked, for the caller to act on after the commit: publish the
        # sessions' revocations; revoke the links' grants at their providers.
        self.revocations = list(revocations)
        self.upstream_grants = list(upstream_grants)


def session_and_claims() -> Any:
    """A select of (session_id, user_id, provider, scope, auth_time, *claims): a grant's row."""
    return select(
        SESSIONS.c.id,
        SESSIONS.c.user_id,
        SESSIONS.c.provider,
        SESSIONS.c.scope,
        SESSIONS.c.auth_time,
        *(USERS.c[name] for name in USER_CLAIM_COLUMNS),
    ).join(USERS, USERS.c.id == SESSIONS.c.user_id)


def session_grant(
    row: Sequence[Any], client_id: str, successor: str, expires_at: dt.datetime
) -> SessionGrant:
    """A grant from a row of (session_id, user_id, provider, scope, auth_time, *claims)."""
    return SessionGrant(
        session_id=row[0],
        user_id=row[1],
        client_id=client_id,
        provider=row[2],
        scope=row[3],
        auth_time=row[4],
        refresh_token=successor,
        refresh_expires_at=expires_at,
        user=dict(zip(USER_CLAIM_COLUMNS, row[5:], strict=True)),
    )
