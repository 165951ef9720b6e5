"""``/admin/providers``: the dashboard's providers pages, and switching a provider off (after a
confirmation page) or on again through CSRF-protected forms.

The browser is an httpx client with a cookie jar against the in-process app (as in
tests/integration/test_dashboard.py, whose sign-in helpers these tests use); the upstream is
the real OpenID Provider process. The providers switched here have ids of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx2
import pytest
from broker.admin.providers import provider_entry
from shared.crypto.keyring import Keyring

from tests.conftest import BROKER_ISSUER
from tests.integration.test_admin_providers import admin_settings, partner_config
from tests.integration.test_dashboard import Dashboard, _admin_page, _browser, _csrf, _sign_in
from tests.support.flows import relative
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

ADMIN = f"{BROKER_ISSUER}/admin"
SECRET = f"partner-secret-{uuid.uuid4().hex}"


@pytest.fixture
async def dashboard(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> AsyncIterator[tuple[Dashboard, str, str]]:
    """A dashboard with corp (its admin's), a partner provider, and one the YAML disables:
    (the dashboard, the partner's id, the disabled one's id)."""
    suffix = uuid.uuid4().hex[:8]
    partner, retired = f"partner-{suffix}", f"retired-{suffix}"
    admin_subject = f"admin-{suffix}"
    settings = admin_settings(
        database_url,
        upstream_idp,
        keyring,
        admin_subject,
        partner_config(partner, upstream_idp),
        {**partner_config(retired, upstream_idp), "client_secret": SECRET, "disabled": True},
    )
    async with running_broker(settings) as (runtime, broker):
        yield Dashboard(runtime, broker, idp, admin_subject), partner, retired


async def test_the_providers_page_lists_each_provider_with_its_state_and_health(
    dashboard: tuple[Dashboard, str, str],
) -> None:
    board, partner, retired = dashboard
    overview = await _admin_page(board)
    assert f'href="{ADMIN}/providers"' in overview.text  # in the navigation

    listing = await board.broker.get("/admin/providers")

    assert listing.status_code == 200
    assert listing.headers["content-security-policy"].startswith("default-src 'none'")
    assert f'href="{ADMIN}/providers/{partner}"' in listing.text
    assert f"Partner {partner}" in listing.text and "reachable" in listing.text
    assert "in the configuration" in listing.text  # the one the YAML disables
    detail = await board.broker.get(f"/admin/providers/{partner}")
    assert detail.status_code == 200
    assert "discovery" in detail.text and "jwks" in detail.text
    assert f'href="{ADMIN}/providers/{partner}/disable"' in detail.text
    retired_page = await board.broker.get(f"/admin/providers/{retired}")
    assert "can only be enabled there" in retired_page.text
    for page in (listing, detail, retired_page):
        assert SECRET not in page.text and "broker-secret" not in page.text
    missing = await board.broker.get("/admin/providers/nope")
    assert missing.status_code == 404 and "no provider" in missing.text
    confirm = await board.broker.get(f"/admin/providers/{retired}/disable")
    assert confirm.status_code == 409


async def test_disabling_goes_through_the_confirmation_page_and_enabling_back(
    dashboard: tuple[Dashboard, str, str],
) -> None:
    board, partner, _retired = dashboard
    await _admin_page(board)
    state = f"/admin/providers/{partner}/state"

    confirm = await board.broker.get(f"/admin/providers/{partner}/disable")
    assert confirm.status_code == 200
    assert f"Disable Partner {partner}" in confirm.text and 'name="confirm"' in confirm.text
    token = _csrf(confirm)
    # Straight to the form without the confirmation step: nothing changes.
    unconfirmed = await board.broker.post(state, data={"csrf": token, "state": "disabled"})
    assert unconfirmed.status_code == 400 and "Confirm" in unconfirmed.text
    assert (await provider_entry(board.runtime, partner))["enabled"] is True

    disabled = await board.broker.post(
        state,
        data={
            "csrf": token,
            "state": "disabled",
            "confirm": "yes",
            "reason": "upstream <b>compromised</b>",
            "revoke_sessions": "on",
        },
    )

    assert disabled.status_code == 303
    assert disabled.headers["location"] == (
        f"{ADMIN}/providers/{partner}?done=provider_disabled"
    )  # no session was signed in through it, so none revoked
    page = await board.broker.get(relative(disabled.headers["location"]))
    assert "sign-ins through it are refused now" in page.text
    assert "upstream &lt;b&gt;compromised&lt;/b&gt;" in page.text  # escaped
    assert "Enable" in page.text and "Back to the configuration" in page.text
    entry = await provider_entry(board.runtime, partner)
    assert (entry["enabled"], entry["source"]) == (False, "runtime")
    assert entry["override"]["reason"] == "upstream <b>compromised</b>"

    enabled = await board.broker.post(state, data={"csrf": token, "state": "enabled"})
    assert enabled.headers["location"].endswith("done=provider_enabled")
    default = await board.broker.post(state, data={"csrf": token, "state": "default"})
    page = await board.broker.get(relative(default.headers["location"]))
    assert "follows the configuration again" in page.text
    entry = await provider_entry(board.runtime, partner)
    assert (entry["enabled"], entry["source"], entry["override"]) == (True, "config", None)


async def test_the_state_form_needs_the_csrf_token_and_this_origin(
    dashboard: tuple[Dashboard, str, str],
) -> None:
    board, partner, retired = dashboard
    token = _csrf(await _admin_page(board))
    state = f"/admin/providers/{partner}/state"
    form = {"state": "disabled", "confirm": "yes"}
    for data, headers in (
        (form, {}),
        ({**form, "csrf": token + "x"}, {}),
        ({**form, "csrf": token}, {"origin": "https://evil.example"}),
        ({**form, "csrf": token}, {"sec-fetch-site": "cross-site"}),
    ):
        refused = await board.broker.post(state, data=data, headers=headers)
        assert refused.status_code == 403, (data, headers)
    async with _browser(board) as anonymous:
        assert (await anonymous.post(state, data={**form, "csrf": token})).status_code == 403
    async with _browser(board) as other_admin:
        await _sign_in(board, browser=other_admin)
        foreign = await board.broker.post(
            state, data={**form, "csrf": _csrf(await other_admin.get("/admin"))}
        )
        assert foreign.status_code == 403
    assert (await provider_entry(board.runtime, partner))["enabled"] is True
    # A bad choice or the YAML's disabled provider: a message, never a 500.
    odd = await board.broker.post(state, data={"csrf": token, "state": "melted"})
    assert odd.status_code == 400
    conflict = await board.broker.post(
        f"/admin/providers/{retired}/state", data={"csrf": token, "state": "enabled"}
    )
    assert conflict.status_code == 409 and "disabled in the configuration" in conflict.text
