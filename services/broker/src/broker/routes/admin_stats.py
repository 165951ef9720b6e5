"""``/admin/oauth2/stats``: sign-ins, refreshes, upstream trouble (``broker.admin.stats``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.stats import ACTIVE_WINDOWS, COUNTED, MAX_DAYS, stats_summary
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidRequest
from broker.http.openapi import (
    ADMIN,
    COUNT,
    TIMESTAMP,
    Contract,
    Operation,
    Schema,
    json_answer,
    nullable,
    query,
    ref,
    strict_object,
)


async def get_stats(request: Request) -> Response:
    await authenticated_admin(request)
    body = await stats_summary(runtime_of(request), request.query_params)
    return JSONResponse(body, headers=NO_STORE)


_DAY: Schema = {"type": "string", "format": "date"}
_LINK_COUNTS = ("links_refresh_failing", "links_need_reauth", "links_sync_failing")
_DAILY = {
    "type": "array",
    "items": strict_object(
        {"day": _DAY, "provider": {"type": "string"}, "count": COUNT},
        required=["day", "provider", "count"],
    ),
}


def _counts(*names: str) -> Schema:
    return strict_object(dict.fromkeys(names, COUNT), required=names)


CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/admin/oauth2/stats",
            "admin_stats",
            "Sign-ins, new users, refreshes and upstream trouble per provider per day, and now",
            "Admin API",
            parameters=(
                query("from", _DAY, "the first UTC day (default: 29 days before to)"),
                query("to", _DAY, f"the last UTC day (default: today); at most {MAX_DAYS} days"),
            ),
            answers=(json_answer(200, "the statistics", ref("Stats")),),
            errors=(InvalidRequest,),
            security=ADMIN,
        ),
    ),
    schemas={
        "Stats": strict_object(
            {
                "from": _DAY,
                "to": _DAY,
                "sign_ins": _DAILY,
                "new_users": _DAILY,
                "active_users": _counts(*ACTIVE_WINDOWS),
                "active_sessions": COUNT,
                "state_as_of": TIMESTAMP,
                "totals": _counts(*COUNTED, *_LINK_COUNTS),
                "by_provider": {
                    "type": "object",
                    "additionalProperties": _counts(*COUNTED, "active_sessions", *_LINK_COUNTS),
                },
                "rollup": strict_object(
                    {
                        "updated_at": nullable(TIMESTAMP),
                        "events_counted": COUNT,
                        "events_pending": COUNT,
                    },
                    required=["updated_at", "events_counted", "events_pending"],
                ),
            },
            required=[
                "from",
                "to",
                "sign_ins",
                "new_users",
                "active_users",
                "active_sessions",
                "state_as_of",
                "totals",
                "by_provider",
                "rollup",
            ],
        )
    },
)
