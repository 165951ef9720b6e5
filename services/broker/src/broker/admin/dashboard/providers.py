"""``/admin/providers``: the configured providers (state, health, links, sign-ins), one
provider's page, and switching it off (after a confirmation page) or on again — through
``broker.admin.providers`` and ``broker.admin.provider_switch``, as the JSON API does."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from broker.admin.dashboard.guard import View
from broker.admin.dashboard.params import notice_of
from broker.admin.provider_switch import ProviderChange, switch_provider
from broker.admin.providers import provider_entry, providers_listing
from broker.http.errors import OAuthError

# The form's ``state`` field: what the admin chose, as the API's ``enabled``.
STATES: Mapping[str, bool | None] = {"disabled": False, "enabled": True, "default": None}
CONFIRMED = "yes"


async def providers_page(request: Request, view: View) -> Response:
    listing = await providers_listing(view.runtime)
    return view.render(
        "providers.html",
        section="providers",
        listed=listing["providers"],
        notice=notice_of(request),
    )


async def provider_page(request: Request, view: View) -> Response:
    try:
        provider = await provider_entry(view.runtime, request.path_params["provider_id"])
    except OAuthError as exc:
        return view.message("Not found", exc.description or exc.error, status_code=404)
    return view.render(
        "provider.html", section="providers", provider=provider, notice=notice_of(request)
    )


async def confirm_disable(request: Request, view: View) -> Response:
    """The confirmation step before disabling: why, and whether to end its sessions too."""
    try:
        provider = await provider_entry(view.runtime, request.path_params["provider_id"])
    except OAuthError as exc:
        return view.message("Not found", exc.description or exc.error, status_code=404)
    if not provider["configured_enabled"]:
        return view.message(
            "Not changed",
            "This provider is disabled in the configuration; it can only be enabled there.",
            status_code=409,
        )
    return view.render("provider_disable.html", section="providers", provider=provider)


async def set_state(request: Request, view: View, form: Mapping[str, str]) -> Response:
    provider_id = request.path_params["provider_id"]
    state = form.get("state", "")
    if state not in STATES:
        return view.message("Not changed", "Choose disable, enable or default.", status_code=400)
    if state == "disabled" and form.get("confirm") != CONFIRMED:
        # Disabling stops sign-ins at once: only from the confirmation page.
        return view.message(
            "Not changed", "Confirm on the provider's disable page.", status_code=400
        )
    try:
        change = ProviderChange.parse(
            {
                "enabled": STATES[state],
                "reason": form.get("reason") or None,
                "revoke_sessions": state == "disabled" and form.get("revoke_sessions") == "on",
            }
        )
        result = await switch_provider(view.runtime, view.admin.user_id, provider_id, change)
    except OAuthError as exc:
        return view.message(
            "Not changed", exc.description or exc.error, status_code=exc.status_code
        )
    done = "provider_unchanged"
    if result["changed"] or result["revoked_sessions"]:
        done = f"provider_{state}" + ("_sessions" if result["revoked_sessions"] else "")
    return view.redirect(f"/providers/{provider_id}", done=done)
