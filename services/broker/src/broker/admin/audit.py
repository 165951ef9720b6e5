"""The audit listing: events newest first, filtered, keyset-paginated, exportable.

Serves ``/admin/oauth2/audit`` and the dashboard's audit page.

Filters: ``actor``, ``action``, ``subject`` (exact), ``after`` / ``before`` (RFC 3339, on
``occurred_at``), ``limit``, ``cursor``. Newest first by ``(occurred_at, id)``; the cursor is
the last row's pair, so pages neither repeat nor skip while new events arrive.

``format=csv`` or ``format=jsonl`` exports every matching event (no ``limit``/``cursor``) as a
streamed download (``broker.admin.audit_export``).

Indexes. ``occurred_at`` serves the order (PostgreSQL sorts ties by id incrementally), the
cursor and time windows. ``action`` and ``actor`` have partial ``(…, occurred_at, id)`` indexes
that leave out ``refresh_token.rotated``, the event of every token rotation, which the hot path
then never writes to. A filter that cannot match a rotation (any other action; an actor that is
not a client — ``shared.refresh_rotation`` writes rotations with actor ``client:<id>``) says so
in its WHERE clause, so PostgreSQL can use the partial index; a query for rotations themselves
walks ``occurred_at`` backwards, quick because they are the bulk of the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.db.tables import AUDIT_TABLE
from shared.models.audit_action import ROTATED
from shared.runtime import Runtime
from sqlalchemy import Select, select
from starlette.responses import StreamingResponse

from broker.admin.audit_events import COLUMNS, NEWEST_FIRST, event_document, older_than
from broker.admin.audit_export import EXPORT_FORMATS, MEDIA_TYPES, export_lines
from broker.admin.pagination import Cursor, page_limit, parse_instant, refuse_nul, refuse_unknown
from broker.http.errors import NO_STORE, InvalidRequest
from broker.http.forms import decimal

_FILTERS = {"actor", "action", "subject", "after", "before", "cursor", "limit", "format"}
_TEXT_LIMITS = {"actor": 330, "action": 64, "subject": 160}
MAX_ROW_ID = 2**63 - 1  # audit ids are bigint: a larger one is no row's (and SQLite's overflow)


def audit_export(runtime: Runtime, query: Mapping[str, str]) -> StreamingResponse:
    """Every event matching ``query`` as a streamed CSV or JSON-lines download (``format``)."""
    export = query.get("format", "")
    if export not in EXPORT_FORMATS:
        raise InvalidRequest("an export is format=csv or format=jsonl")
    if "cursor" in query or "limit" in query:
        raise InvalidRequest("an export has every matching event: no cursor or limit")
    statement = filtered_events(query)  # checked before the response starts
    return StreamingResponse(
        export_lines(runtime.engine, statement, export),
        media_type=MEDIA_TYPES[export],
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="audit.{export}"'},
    )


async def audit_listing(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    """One page of audit events for these query parameters (the JSON body; the dashboard's too)."""
    limit = page_limit(query.get("limit"))
    statement = filtered_events(query)
    if (cursor := query.get("cursor")) is not None:
        last = Cursor.decode(cursor)
        row_id = decimal(last.id)
        if row_id is None or row_id > MAX_ROW_ID:
            raise InvalidRequest("cursor is not one this listing returned")
        statement = older_than(statement, last.at, row_id)
    statement = statement.order_by(*NEWEST_FIRST).limit(limit + 1)
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    page = rows[:limit]
    return {
        "events": [event_document(row) for row in page],
        "next_cursor": (
            Cursor(at=page[-1].occurred_at, id=str(page[-1].id)).encode()
            if len(rows) > limit
            else None
        ),
    }


def filtered_events(query: Mapping[str, str]) -> Select[Any]:
    """The events these query parameters select (``InvalidRequest`` for a bad one), unordered."""
    refuse_unknown(query, _FILTERS)
    refuse_nul(query)
    statement = select(*(AUDIT_TABLE.c[name] for name in COLUMNS))
    for name, limit in _TEXT_LIMITS.items():
        value = query.get(name)
        if value is None:
            continue
        if not value or len(value) > limit:
            raise InvalidRequest(f"{name} must be 1 to {limit} characters")
        statement = statement.where(AUDIT_TABLE.c[name] == value)
    action, actor = query.get("action"), query.get("actor")
    if (action is not None and action != ROTATED) or (
        actor is not None and not actor.startswith("client:")
    ):
        # Implied by the filter already; stated so the partial indexes apply (module doc).
        statement = statement.where(AUDIT_TABLE.c.action != ROTATED)
    if (after := parse_instant("after", query.get("after"))) is not None:
        statement = statement.where(AUDIT_TABLE.c.occurred_at >= after)
    if (before := parse_instant("before", query.get("before"))) is not None:
        statement = statement.where(AUDIT_TABLE.c.occurred_at < before)
    if after is not None and before is not None and before <= after:
        raise InvalidRequest("before must be later than after")
    return statement
