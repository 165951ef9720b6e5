"""``/admin/oauth2/audit``: audit events, a page or an export (``broker.admin.audit``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.audit import audit_export, audit_listing
from broker.admin.audit_export import EXPORT_FORMATS
from broker.admin.callers import authenticated_admin
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidRequest

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
