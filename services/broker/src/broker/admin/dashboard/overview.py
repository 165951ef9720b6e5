"""``/admin``: the overview — active users and sessions, totals, sign-ins per provider per day."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.admin.dashboard.chart import sign_in_chart
from broker.admin.dashboard.guard import View
from broker.admin.dashboard.params import filters_of
from broker.admin.stats import stats_summary
from broker.http.errors import OAuthError


async def overview(request: Request, view: View) -> Response:
    filters = filters_of(request, ("from", "to"))
    error = None
    try:
        stats = await stats_summary(view.runtime, filters)
    except OAuthError as exc:
        error = exc.description
        stats = await stats_summary(view.runtime, {})
    chart = sign_in_chart(
        stats["from"], stats["to"], stats["sign_ins"], view.pages.globals["providers"]
    )
    return view.render(
        "overview.html",
        status_code=400 if error else 200,
        section="overview",
        stats=stats,
        chart=chart,
        filters=filters,
        error=error,
    )
