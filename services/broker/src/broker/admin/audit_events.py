"""Audit events as the admin API shows them: the columns, the newest-first order and its keyset
step, and one event as a JSON document (the listing, the dashboard and the exports share them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.clock import rfc3339
from shared.db.tables import AUDIT_TABLE
from sqlalchemy import Select, literal, tuple_

COLUMNS = ("id", "event_id", "occurred_at", "action", "actor", "subject", "client_id", "ip", "data")
NEWEST_FIRST = (AUDIT_TABLE.c.occurred_at.desc(), AUDIT_TABLE.c.id.desc())


def older_than(statement: Select[Any], at: dt.datetime, row_id: int) -> Select[Any]:
    """The rows after ``(at, row_id)`` in the newest-first order."""
    return statement.where(
        tuple_(AUDIT_TABLE.c.occurred_at, AUDIT_TABLE.c.id) < tuple_(literal(at), literal(row_id))
    )


def event_document(row: Any) -> dict[str, Any]:
    """One audit row (with the ``COLUMNS``) as the API shows it."""
    return {
        "id": row.id,
        "event_id": str(row.event_id),
        "occurred_at": rfc3339(row.occurred_at),
        "action": row.action,
        "actor": row.actor,
        "subject": row.subject,
        "client_id": row.client_id,
        "ip": row.ip,
        "data": row.data or {},
    }
