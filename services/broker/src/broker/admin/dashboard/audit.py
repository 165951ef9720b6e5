"""``/admin/audit``: audit events newest first (actor, action, subject, time; paged), and the
API's CSV and JSON-lines exports of the same filters — through ``broker.admin.audit``.

The export is the API's own streamed download (``GET /admin/oauth2/audit?format=csv|jsonl``,
``broker.admin.audit.audit_export``) for the dashboard's signed-in admin.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.admin.audit import audit_export, audit_listing
from broker.admin.dashboard.guard import View
from broker.admin.dashboard.params import filters_of
from broker.http.errors import OAuthError

FILTERS = ("actor", "action", "subject", "after", "before")
EXPORTS = ("csv", "jsonl")
PAGE_SIZE = "50"


async def audit_page(request: Request, view: View) -> Response:
    filters = filters_of(request, FILTERS)
    cursor = filters_of(request, ("cursor",))
    error = None
    try:
        listing = await audit_listing(view.runtime, {**filters, **cursor, "limit": PAGE_SIZE})
    except OAuthError as exc:
        error = exc.description
        listing = {"events": [], "next_cursor": None}
    return view.render(
        "audit.html",
        status_code=400 if error else 200,
        section="audit",
        events=listing["events"],
        next_cursor=listing["next_cursor"],
        filters=filters,
        paged=bool(cursor),
        error=error,
    )


async def export(request: Request, view: View) -> Response:
    export_format = request.query_params.get("format", "")
    if export_format not in EXPORTS:
        return view.message("Not exported", "Choose CSV or JSON lines.", status_code=400)
    query = {**filters_of(request, FILTERS), "format": export_format}
    try:
        return audit_export(view.runtime, query)
    except OAuthError as exc:
        return view.message(
            "Not exported", exc.description or exc.error, status_code=exc.status_code
        )
