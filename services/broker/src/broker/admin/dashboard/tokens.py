"""``/admin/tokens``: broker sessions and upstream links with their state (filtered, paged), and
revoking one — through ``broker.admin.tokens``, as the JSON API does."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from broker.admin.dashboard.guard import View
from broker.admin.dashboard.params import filters_of, notice_of, uuid_or_none
from broker.admin.tokens import KINDS, SESSION_STATES, UPSTREAM_STATES, revoke_token, tokens_listing
from broker.http.errors import OAuthError

FILTERS = ("kind", "state", "provider", "client", "user", "cursor")
PAGE_SIZE = "25"


async def tokens_page(request: Request, view: View) -> Response:
    filters = filters_of(request, FILTERS)
    error = None
    try:
        listing = await tokens_listing(view.runtime, {**filters, "limit": PAGE_SIZE})
    except OAuthError as exc:
        error = exc.description
        listing = {"tokens": [], "next_cursor": None}
    return view.render(
        "tokens.html",
        status_code=400 if error else 200,
        section="tokens",
        tokens=listing["tokens"],
        next_cursor=listing["next_cursor"],
        filters={name: value for name, value in filters.items() if name != "cursor"},
        paged="cursor" in filters,
        kinds=KINDS,
        states=tuple(dict.fromkeys(SESSION_STATES + UPSTREAM_STATES)),
        error=error,
        notice=notice_of(request),
    )


async def revoke(request: Request, view: View, form: Mapping[str, str]) -> Response:
    token_id = uuid_or_none(request.path_params["token_id"])
    if token_id is None:
        return view.message("Not found", "There is no such session or link.", status_code=404)
    try:
        result = await revoke_token(view.runtime, view.admin.user_id, token_id)
    except OAuthError as exc:
        return view.message(
            "Not revoked", exc.description or exc.error, status_code=exc.status_code
        )
    done = "revoked" if result["changed"] else "already_revoked"
    # Back to the user's page when the form came from there (a user id, so never elsewhere).
    owner = uuid_or_none(form.get("user"))
    if owner is not None:
        return view.redirect(f"/users/{owner}", done=done, email=form.get("email"))
    return view.redirect("/tokens", done=done)
