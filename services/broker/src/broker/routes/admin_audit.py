"""``/admin/oauth2/audit``: audit events, a page or an export (``broker.admin.audit``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.audit import audit_export, audit_listing
from broker.admin.audit_export import EXPORT_FORMATS, MEDIA_TYPES
from broker.admin.callers import authenticated_admin
from broker.admin.pagination import MAX_LIMIT
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidRequest
from broker.http.openapi import (
    ADMIN,
    TIMESTAMP,
    UUID,
    Answer,
    Contract,
    Operation,
    Schema,
    nullable,
    query,
    ref,
    strict_object,
)

FORMATS = ("json", *EXPORT_FORMATS)


async def list_audit(request: Request) -> Response:
    await authenticated_admin(request)
    runtime = runtime_of(request)
    query = request.query_params
    export = query.get("format", "json")
    if export not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}")
    if export == "json":
        return JSONResponse(await audit_listing(runtime, query), headers=NO_STORE)
    return audit_export(runtime, query)


_TEXT: Schema = {"type": "string"}
_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
_MAYBE_TEXT = nullable(_TEXT)

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/admin/oauth2/audit",
            "admin_audit",
            "Audit events newest first, filtered and keyset-paged, or exported",
            "Admin API",
            description="format=csv or format=jsonl streams every matching event as a download "
            "(no limit or cursor).",
            parameters=(
                query("actor", {"type": "string", "minLength": 1, "maxLength": 330}, "exact"),
                query("action", {"type": "string", "minLength": 1, "maxLength": 64}, "exact"),
                query("subject", {"type": "string", "minLength": 1, "maxLength": 160}, "exact"),
                query("after", TIMESTAMP, "occurred at or after (RFC 3339)"),
                query("before", TIMESTAMP, "occurred before (RFC 3339)"),
                query("cursor", _TEXT, "the previous page's next_cursor"),
                query(
                    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size"
                ),
                query(
                    "format", {"enum": list(FORMATS)}, "json (a page, the default) or a download"
                ),
            ),
            answers=(
                Answer(
                    200,
                    "a page of events, or the export",
                    {
                        "application/json": ref("AuditPage"),
                        **{MEDIA_TYPES[name].split(";")[0]: _TEXT for name in EXPORT_FORMATS},
                    },
                ),
            ),
            errors=(InvalidRequest,),
            security=ADMIN,
        ),
    ),
    schemas={
        "AuditPage": strict_object(
            {
                "events": {"type": "array", "items": ref("AuditEvent")},
                "next_cursor": _MAYBE_TEXT,
            },
            required=["events", "next_cursor"],
        ),
        "AuditEvent": strict_object(
            {
                "id": {"type": "integer"},
                "event_id": UUID,
                "occurred_at": TIMESTAMP,
                "action": _TEXT,
                "actor": _TEXT,
                "subject": _MAYBE_TEXT,
                "client_id": _MAYBE_TEXT,
                "ip": _MAYBE_TEXT,
                "data": {"type": "object"},
            },
            required=["id", "event_id", "occurred_at", "action", "actor", "data"],
        ),
    },
)
