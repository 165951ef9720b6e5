"""Audit events: one ``audit_actions`` row added inside the transaction that made the change.

Actions are named ``noun.past_tense`` (``user.created``, ``refresh_token.rotated``). ``data``
holds identifiers and changed field names, never a token, code or secret value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db.tables import AUDIT_TABLE
from shared.models import AuditAction


def audit_values(
    *,
    action: str,
    actor: str,
    subject: str | None,
    now: dt.datetime,
    client_id: str | None = None,
    ip: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Column values of one audit row (for callers that build their own statement)."""
    return {
        "event_id": uuid.uuid4(),
        "action": action,
        "actor": actor,
        "subject": subject,
        "client_id": client_id,
        "ip": ip,
        "data": data or {},
        "occurred_at": now,
    }


def record_audit(session: AsyncSession, **values: Any) -> None:
    """Add an audit row to the session's current unit of work (flushed with the change)."""
    session.add(AuditAction(**audit_values(**values)))


async def record_audit_core(connection: AsyncConnection, **values: Any) -> None:
    """The same for code on a Core connection (the token hot path)."""
    await connection.execute(insert(AUDIT_TABLE).values(**audit_values(**values)))
