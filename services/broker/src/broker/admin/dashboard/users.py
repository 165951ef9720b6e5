"""``/admin/users``: find users (email, provider, status; paged), one user's sessions and links,
and disable or enable a user — through ``broker.admin.users``, as the JSON API does."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from shared.runtime import Runtime
from starlette.requests import Request
from starlette.responses import Response

from broker.admin.dashboard.guard import View
from broker.admin.dashboard.params import filters_of, notice_of, uuid_or_none
from broker.admin.tokens import tokens_listing
from broker.admin.users import STATUSES, set_user_status, users_listing
from broker.http.errors import OAuthError

FILTERS = ("email", "provider", "status", "cursor")
PAGE_SIZE = "25"
TOKENS_SHOWN = "100"


async def users_page(request: Request, view: View) -> Response:
    filters = filters_of(request, FILTERS)
    error = None
    try:
        listing = await users_listing(view.runtime, {**filters, "limit": PAGE_SIZE})
    except OAuthError as exc:
        error = exc.description
        listing = {"users": [], "next_cursor": None}
    return view.render(
        "users.html",
        status_code=400 if error else 200,
        section="users",
        users=listing["users"],
        next_cursor=listing["next_cursor"],
        filters={name: value for name, value in filters.items() if name != "cursor"},
        paged="cursor" in filters,
        statuses=STATUSES,
        error=error,
        notice=notice_of(request),
    )


async def _find_user(runtime: Runtime, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The listing's row for this user."""
    listing = await users_listing(runtime, {"user": str(user_id)})
    found: list[dict[str, Any]] = listing["users"]
    return found[0] if found else None


async def user_page(request: Request, view: View) -> Response:
    user_id = uuid_or_none(request.path_params["user_id"])
    if user_id is None:
        return view.message("Not found", "There is no such user.", status_code=404)
    email = request.query_params.get("email")
    user = await _find_user(view.runtime, user_id)
    listing = await tokens_listing(view.runtime, {"user": str(user_id), "limit": TOKENS_SHOWN})
    tokens = listing["tokens"]
    return view.render(
        "user.html",
        section="users",
        user_id=str(user_id),
        user=user,
        email=email or "",
        sessions=[token for token in tokens if token["kind"] == "session"],
        links=[token for token in tokens if token["kind"] == "upstream"],
        more_tokens=listing["next_cursor"] is not None,
        notice=notice_of(request),
    )


async def set_status(request: Request, view: View, form: Mapping[str, str]) -> Response:
    user_id = uuid_or_none(request.path_params["user_id"])
    status = form.get("status")
    if user_id is None:
        return view.message("Not found", "There is no such user.", status_code=404)
    if status not in STATUSES:
        return view.message("Not changed", "Choose disable or enable.", status_code=400)
    try:
        result = await set_user_status(view.runtime, view.admin.user_id, user_id, status)
    except OAuthError as exc:
        return view.message(
            "Not changed", exc.description or exc.error, status_code=exc.status_code
        )
    done = "unchanged"
    if result["changed"]:
        done = "disabled" if status == "disabled" else "enabled"
    return view.redirect(f"/users/{user_id}", done=done, email=form.get("email"))
