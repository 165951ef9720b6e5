"""``/admin/oauth2/stats``: sign-ins, refreshes, upstream trouble (``broker.admin.stats``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.stats import stats_summary
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE


async def get_stats(request: Request) -> Response:
    await authenticated_admin(request)
    body = await stats_summary(runtime_of(request), request.query_params)
    return JSONResponse(body, headers=NO_STORE)
