"""``/admin``: the server-rendered dashboard — sign-in through the broker, the role, CSRF, pages.

The browser is an httpx client with a cookie jar against the in-process app; the upstream IdP
is the real OpenID Provider process. ``tests/browser/`` drives the same pages in Chromium.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from broker.admin.tokens import tokens_listing
from broker.admin.users import users_listing
from broker.app import create_app
from shared.config_file import ConfigError
from shared.crypto.keyring import Keyring
from shared.runtime import Runtime, build_runtime

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.accounts import audit_rows, corp_profile, sign_in
from tests.support.flows import query_of, relative
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

ADMIN = f"{BROKER_ISSUER}/admin"


@dataclass
class Dashboard:
    runtime: Runtime
    broker: httpx2.AsyncClient
    idp: httpx2.AsyncClient
    admin_subject: str


@pytest.fixture
async def dashboard(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> AsyncIterator[Dashboard]:
    """A broker whose admin is ``corp:<subject>``; nobody signed in yet."""
    admin_subject = f"admin-{uuid.uuid4().hex[:10]}"
    settings = broker_settings(
        database_url, upstream_idp, keyring, admins=[f"corp:{admin_subject}"]
    )
    async with running_broker(settings) as (runtime, broker):
        yield Dashboard(runtime, broker, idp, admin_subject)


def _browser(dashboard: Dashboard) -> httpx2.AsyncClient:
    """Another browser (its own cookie jar) on the same in-process broker."""
    transport = httpx2.ASGITransport(app=create_app(dashboard.runtime))
    return httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER)


async def _to_callback(
    browser: httpx2.AsyncClient, idp: httpx2.AsyncClient, subject: str, provider: str = "corp"
) -> str:
    """/admin/login through the chooser's ``provider`` and upstream, up to (not into) the
    broker's redirect to ``/admin/callback``; returns that URL."""
    await idp.post(
        "/_control/user",
        json={
            "sub": subject,
            "email": f"{subject}@corp.example",
            "email_verified": True,
            "name": subject.title(),
        },
    )
    login = await browser.get("/admin/login")
    assert login.status_code == 303, login.text
    authorize = login.headers["location"]
    assert authorize.startswith(f"{BROKER_ISSUER}/authorize?")
    chooser = await browser.get(relative(authorize))
    assert chooser.status_code == 200 and "Corp SSO" in chooser.text  # the provider chooser
    response = await browser.get(relative(authorize) + f"&provider={provider}")
    async with httpx2.AsyncClient() as upstream:
        for _ in range(6):
            assert response.status_code in (302, 303), response.text[:500]
            location = response.headers["location"]
            if location.startswith(f"{ADMIN}/callback"):
                return location
            if location.startswith(BROKER_ISSUER):
                response = await browser.get(relative(location))
            else:
                response = await upstream.get(location)
    raise AssertionError("the sign-in did not come back to /admin/callback")


async def _sign_in(
    dashboard: Dashboard, browser: httpx2.AsyncClient | None = None, subject: str | None = None
) -> httpx2.Response:
    """Sign in to the dashboard (as its admin unless ``subject`` says otherwise)."""
    browser = browser or dashboard.broker
    callback = await _to_callback(browser, dashboard.idp, subject or dashboard.admin_subject)
    return await browser.get(relative(callback))


def _csrf(page: httpx2.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:2000]
    return html.unescape(found.group(1))


async def _admin_page(dashboard: Dashboard) -> httpx2.Response:
    signed_in = await _sign_in(dashboard)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == ADMIN
    page = await dashboard.broker.get("/admin")
    assert page.status_code == 200, page.text[:2000]
    return page


async def _user_with_session(dashboard: Dashboard) -> tuple[str, str, str]:
    """An ordinary user signed in to the ``web`` client: (user id, email, sid)."""
    email = f"user-{uuid.uuid4().hex[:10]}@corp.example"
    async with _browser(dashboard) as other:
        _subject, headers = await sign_in(other, dashboard.idp, email=email)
        user_id = (await corp_profile(other, headers))["user"]["id"]
    listing = await tokens_listing(dashboard.runtime, {"user": user_id, "kind": "session"})
    (session,) = listing["tokens"]
    return user_id, email, session["id"]


async def _session_state(dashboard: Dashboard, sid: str) -> str:
    listing = await tokens_listing(dashboard.runtime, {"kind": "session", "limit": "500"})
    (session,) = [token for token in listing["tokens"] if token["id"] == sid]
    state: str = session["state"]
    return state


async def test_without_a_dashboard_session_admin_pages_send_the_browser_to_sign_in(
    dashboard: Dashboard,
) -> None:
    for path in ("/admin", "/admin/users", "/admin/tokens", "/admin/audit"):
        response = await dashboard.broker.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == f"{ADMIN}/login"
    login = await dashboard.broker.get("/admin/login")
    assert login.status_code == 303
    params = query_of(login.headers["location"])
    assert params["client_id"] == "broker-admin"
    assert params["redirect_uri"] == f"{ADMIN}/callback"
    assert params["code_challenge_method"] == "S256"
    assert params["state"] and params["nonce"] and params["code_challenge"]
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("broker_admin_login=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    for secret in (params["state"], params["nonce"]):
        assert secret not in cookie  # sealed, not readable


async def test_an_admin_signs_in_through_the_broker_and_gets_a_sealed_httponly_cookie(
    dashboard: Dashboard,
) -> None:
    signed_in = await _sign_in(dashboard)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == ADMIN
    cookies = signed_in.headers.get_list("set-cookie")
    (session_cookie,) = [c for c in cookies if c.startswith("broker_admin=")]
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    assert "Max-Age=28800" in session_cookie
    assert any(c.startswith("broker_admin_login=") and "Max-Age=0" in c for c in cookies)
    page = await dashboard.broker.get("/admin")
    assert page.status_code == 200
    assert "Sign-ins per provider per day" in page.text and "<svg" in page.text
    assert f"{dashboard.admin_subject}@corp.example" in page.text
    # The dashboard's session is a broker session of the built-in client, named by its sid.
    profile_sessions = await tokens_listing(
        dashboard.runtime, {"client": "broker-admin", "state": "active", "limit": "500"}
    )
    sids = {token["id"] for token in profile_sessions["tokens"]}
    assert sids and not any(sid in session_cookie for sid in sids)


async def test_pages_send_the_security_headers(dashboard: Dashboard) -> None:
    await _admin_page(dashboard)
    user_id, _email, _sid = await _user_with_session(dashboard)
    for path in (
        "/admin",
        "/admin/users",
        f"/admin/users/{user_id}",
        "/admin/tokens",
        "/admin/audit",
        "/admin/users?status=deleted",
    ):
        response = await dashboard.broker.get(path)
        assert response.headers["content-type"].startswith("text/html"), path
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "<script" not in response.text
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


async def test_a_non_admin_gets_a_403_page_no_cookie_and_no_live_session(
    dashboard: Dashboard,
) -> None:
    subject = f"plain-{uuid.uuid4().hex[:10]}"
    refused = await _sign_in(dashboard, subject=subject)
    assert refused.status_code == 403
    assert "not an admin" in refused.text
    assert "Users" not in refused.text and "Sign out" not in refused.text  # nothing else
    assert not any(c.startswith("broker_admin=") for c in refused.headers.get_list("set-cookie"))
    assert (await dashboard.broker.get("/admin")).status_code == 303
    listing = await tokens_listing(
        dashboard.runtime, {"client": "broker-admin", "state": "revoked", "limit": "500"}
    )
    refused_sessions = [t for t in listing["tokens"] if t["revoked_reason"] == "not_an_admin"]
    assert refused_sessions  # the session its sign-in created did not stay alive
    live = await tokens_listing(
        dashboard.runtime,
        {"user": refused_sessions[0]["user_id"], "kind": "session", "state": "active"},
    )
    assert live["tokens"] == []


async def test_a_callback_with_another_browsers_state_is_refused_before_the_code_is_used(
    dashboard: Dashboard,
) -> None:
    callback = await _to_callback(dashboard.broker, dashboard.idp, dashboard.admin_subject)
    async with _browser(dashboard) as attacker:
        # The other browser has a sign-in of its own in flight: its state differs.
        await attacker.get("/admin/login")
        foreign = await attacker.get(relative(callback))
        assert foreign.status_code == 400
        assert "another browser" in foreign.text
        assert (await attacker.get("/admin")).status_code == 303
    async with _browser(dashboard) as without_cookie:
        assert (await without_cookie.get(relative(callback))).status_code == 400
    params = query_of(callback)
    tampered = {**params, "state": params["state"][:-2] + "xx"}
    wrong_state = await dashboard.broker.get(f"/admin/callback?{urlencode(tampered)}")
    assert wrong_state.status_code == 400
    assert (await dashboard.broker.get("/admin")).status_code == 303
    # The code was never touched: the browser that started the sign-in still completes it.
    signed_in = await dashboard.broker.get(relative(callback))
    assert signed_in.status_code == 303
    assert (await dashboard.broker.get("/admin")).status_code == 200


async def test_a_dashboard_code_is_single_use_and_not_redeemable_at_the_token_endpoint(
    dashboard: Dashboard,
) -> None:
    callback = await _to_callback(dashboard.broker, dashboard.idp, dashboard.admin_subject)
    code = query_of(callback)["code"]
    over_http = await dashboard.broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{ADMIN}/callback",
            "client_id": "broker-admin",
            "code_verifier": "x" * 43,
        },
    )
    assert over_http.status_code == 401
    assert over_http.json()["error"] == "invalid_client"
    signed_in = await dashboard.broker.get(relative(callback))
    assert signed_in.status_code == 303  # the code was still unused
    # The same response again (its login cookie is gone): refused.
    assert (await dashboard.broker.get(relative(callback))).status_code == 400


async def test_a_callback_without_iss_or_with_an_error_signs_nobody_in(
    dashboard: Dashboard,
) -> None:
    callback = await _to_callback(dashboard.broker, dashboard.idp, dashboard.admin_subject)
    params = query_of(callback)
    without_iss = {key: value for key, value in params.items() if key != "iss"}
    response = await dashboard.broker.get(f"/admin/callback?{urlencode(without_iss)}")
    assert response.status_code == 400
    assert (await dashboard.broker.get("/admin")).status_code == 303
    await dashboard.broker.get("/admin/login")
    login = await dashboard.broker.get("/admin/login")
    state = query_of(login.headers["location"])["state"]
    denied = {
        "error": "access_denied",
        "error_description": "<b>this account is disabled</b>",
        "state": state,
        "iss": BROKER_ISSUER,
    }
    response = await dashboard.broker.get(f"/admin/callback?{urlencode(denied)}")
    assert response.status_code == 403
    assert "&lt;b&gt;this account is disabled&lt;/b&gt;" in response.text  # escaped
    assert (await dashboard.broker.get("/admin")).status_code == 303


async def test_forms_without_the_right_csrf_token_or_from_another_origin_change_nothing(
    dashboard: Dashboard,
) -> None:
    page = await _admin_page(dashboard)
    token = _csrf(page)
    user_id, _email, sid = await _user_with_session(dashboard)
    revoke = f"/admin/tokens/{sid}/revoke"
    attempts = [
        ({}, {}),
        ({"csrf": ""}, {}),
        ({"csrf": "A" * 43}, {}),
        ({"csrf": token + "x"}, {}),
        ({"csrf": token}, {"origin": "https://evil.example"}),
        ({"csrf": token}, {"origin": "null", "sec-fetch-site": "cross-site"}),
        ({"csrf": token}, {"origin": f"{BROKER_ISSUER}.evil.example"}),
        ({"csrf": token}, {"sec-fetch-site": "cross-site"}),
        ({"csrf": token}, {"sec-fetch-site": "same-site"}),
    ]
    for form, headers in attempts:
        response = await dashboard.broker.post(revoke, data=form, headers=headers)
        assert response.status_code == 403, (form, headers)
        assert "Not allowed" in response.text
        status = await dashboard.broker.post(
            f"/admin/users/{user_id}/status",
            data={**form, "status": "disabled"},
            headers=headers,
        )
        assert status.status_code == 403, (form, headers)
    assert await _session_state(dashboard, sid) == "active"
    # A token bound to another dashboard session does not pass either.
    async with _browser(dashboard) as second:
        await _sign_in(dashboard, browser=second)
        other_token = _csrf(await second.get("/admin"))
        assert other_token != token
        response = await dashboard.broker.post(revoke, data={"csrf": other_token})
        assert response.status_code == 403
    assert await _session_state(dashboard, sid) == "active"
    # Without a dashboard session, a form is refused as well (and not redirected).
    async with _browser(dashboard) as anonymous:
        response = await anonymous.post(revoke, data={"csrf": token})
        assert response.status_code == 403
    # The right token, same origin, as Chromium sends it from a no-referrer page: done.
    done = await dashboard.broker.post(
        revoke,
        data={"csrf": token},
        headers={"origin": "null", "sec-fetch-site": "same-origin"},
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"{ADMIN}/tokens?done=revoked"
    assert await _session_state(dashboard, sid) == "revoked"


async def test_an_admin_finds_a_user_revokes_a_session_and_sees_the_audit_entry(
    dashboard: Dashboard,
) -> None:
    page = await _admin_page(dashboard)
    token = _csrf(page)
    user_id, email, sid = await _user_with_session(dashboard)
    found = await dashboard.broker.get("/admin/users", params={"email": email})
    assert found.status_code == 200
    assert f"/admin/users/{user_id}?email=" in found.text
    detail = await dashboard.broker.get(f"/admin/users/{user_id}", params={"email": email})
    assert detail.status_code == 200
    assert email in detail.text and sid in detail.text and "Disable user" in detail.text
    revoked = await dashboard.broker.post(
        f"/admin/tokens/{sid}/revoke", data={"csrf": token, "user": user_id, "email": email}
    )
    assert revoked.status_code == 303
    location = revoked.headers["location"]
    assert location.startswith(f"{ADMIN}/users/{user_id}?")
    after = await dashboard.broker.get(relative(location))
    assert "Revoked." in after.text
    assert await _session_state(dashboard, sid) == "revoked"
    admin_id = await _admin_id(dashboard)
    audit = await dashboard.broker.get(
        "/admin/audit", params={"action": "session.revoked", "subject": user_id}
    )
    assert audit.status_code == 200
    assert f"user:{admin_id}" in audit.text and "admin_revoked" in audit.text
    (row,) = await audit_rows(dashboard.runtime, user_id, "session.revoked")
    assert row.actor == f"user:{admin_id}"


async def _admin_id(dashboard: Dashboard) -> str:
    email = f"{dashboard.admin_subject}@corp.example"
    (admin,) = (await users_listing(dashboard.runtime, {"email": email}))["users"]
    admin_id: str = admin["id"]
    return admin_id


async def test_an_admin_disables_and_enables_a_user(dashboard: Dashboard) -> None:
    token = _csrf(await _admin_page(dashboard))
    user_id, email, sid = await _user_with_session(dashboard)
    disabled = await dashboard.broker.post(
        f"/admin/users/{user_id}/status", data={"csrf": token, "status": "disabled", "email": email}
    )
    assert disabled.status_code == 303
    page = await dashboard.broker.get(relative(disabled.headers["location"]))
    assert "The user is disabled" in page.text and "Enable user" in page.text
    assert await _session_state(dashboard, sid) == "revoked"
    enabled = await dashboard.broker.post(
        f"/admin/users/{user_id}/status", data={"csrf": token, "status": "active", "email": email}
    )
    page = await dashboard.broker.get(relative(enabled.headers["location"]))
    assert "enabled again" in page.text and "Disable user" in page.text
    # An admin cannot disable themselves: a message, nothing changed, no 500.
    admin_id = await _admin_id(dashboard)
    own = await dashboard.broker.post(
        f"/admin/users/{admin_id}/status", data={"csrf": token, "status": "disabled"}
    )
    assert own.status_code == 400
    assert "cannot disable their own account" in own.text
    assert (await dashboard.broker.get("/admin")).status_code == 200


async def test_bad_filters_are_a_message_on_the_page_never_a_500(dashboard: Dashboard) -> None:
    await _admin_page(dashboard)
    for path, text in (
        ("/admin/users?status=deleted", "status must be one of"),
        ("/admin/users?cursor=garbage", "cursor"),
        ("/admin/tokens?user=not-a-uuid", "user must be a user id"),
        ("/admin/tokens?state=melted", "state must be one of"),
        ("/admin/audit?after=yesterday", "after must be an RFC 3339"),
        ("/admin?from=2026-13-01", ""),
        ("/admin/users/not-a-uuid", "no such user"),
        ("/admin/audit/export?format=xml", "Choose CSV"),
    ):
        response = await dashboard.broker.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert response.headers["content-type"].startswith("text/html"), path
        assert text.lower() in response.text.lower(), (path, response.text[:1500])


async def test_the_audit_export_is_the_apis_csv_and_json_lines(dashboard: Dashboard) -> None:
    token = _csrf(await _admin_page(dashboard))
    user_id, _email, sid = await _user_with_session(dashboard)
    await dashboard.broker.post(f"/admin/tokens/{sid}/revoke", data={"csrf": token})
    csv_export = await dashboard.broker.get(
        "/admin/audit/export", params={"format": "csv", "subject": user_id}
    )
    assert csv_export.status_code == 200
    assert csv_export.headers["content-type"].startswith("text/csv")
    assert 'filename="audit.csv"' in csv_export.headers["content-disposition"]
    assert csv_export.text.splitlines()[0].startswith("id,event_id,occurred_at,action")
    assert "session.revoked" in csv_export.text
    lines = await dashboard.broker.get(
        "/admin/audit/export", params={"format": "jsonl", "action": "session.revoked"}
    )
    assert lines.status_code == 200
    assert sid in lines.text
    # Without a dashboard session there is no export.
    async with _browser(dashboard) as anonymous:
        response = await anonymous.get("/admin/audit/export", params={"format": "csv"})
        assert response.status_code == 303


async def test_logout_revokes_the_dashboards_session(dashboard: Dashboard) -> None:
    page = await _admin_page(dashboard)
    token = _csrf(page)
    cookie = dashboard.broker.cookies.get("broker_admin")
    assert cookie
    refused = await dashboard.broker.post("/admin/logout", data={})
    assert refused.status_code == 403
    assert (await dashboard.broker.get("/admin")).status_code == 200
    signed_out = await dashboard.broker.post("/admin/logout", data={"csrf": token})
    assert signed_out.status_code == 200 and "signed out" in signed_out.text
    assert any(
        c.startswith("broker_admin=") and "Max-Age=0" in c
        for c in signed_out.headers.get_list("set-cookie")
    )
    assert (await dashboard.broker.get("/admin")).status_code == 303
    # The old cookie, replayed, names a revoked session: no way back in.
    async with _browser(dashboard) as replay:
        replay.cookies.set("broker_admin", cookie)
        assert (await replay.get("/admin")).status_code == 303
    listing = await tokens_listing(
        dashboard.runtime, {"client": "broker-admin", "state": "revoked", "limit": "500"}
    )
    assert any(token["revoked_reason"] == "logout" for token in listing["tokens"])


async def test_a_forged_or_foreign_cookie_is_no_session(dashboard: Dashboard) -> None:
    await _admin_page(dashboard)
    session_cookie = dashboard.broker.cookies.get("broker_admin")
    async with _browser(dashboard) as other:
        await other.get("/admin/login")
        login_cookie = other.cookies.get("broker_admin_login")
    assert session_cookie and login_cookie
    async with _browser(dashboard) as forger:
        # A sealed login-state cookie cannot pass for a session cookie, nor can junk.
        for value in (login_cookie, "x" * 60, session_cookie[:-2] + "xx"):
            forger.cookies.set("broker_admin", value)
            assert (await forger.get("/admin")).status_code == 303


async def test_a_configured_client_may_not_take_the_built_in_id(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> None:
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        clients=[{"id": "broker-admin", "redirect_uris": ["https://evil.example/cb"]}],
    )
    with pytest.raises(ConfigError, match="reserved for the built-in admin dashboard"):
        create_app(build_runtime(settings))


async def test_the_built_in_client_accepts_only_its_own_redirect_uri(
    dashboard: Dashboard,
) -> None:
    login = await dashboard.broker.get("/admin/login")
    params = query_of(login.headers["location"])
    for uri in (f"{ADMIN}/callback/", "https://evil.example/admin/callback", f"{ADMIN}/Callback"):
        response = await dashboard.broker.get(
            "/authorize", params={**params, "redirect_uri": uri, "provider": "corp"}
        )
        assert response.status_code == 400
        assert "location" not in response.headers
    without_pkce = {
        k: v for k, v in params.items() if k not in ("code_challenge", "code_challenge_method")
    }
    response = await dashboard.broker.get("/authorize", params={**without_pkce, "provider": "corp"})
    assert response.status_code in (302, 303)
    error = parse_qs(urlsplit(response.headers["location"]).query)
    assert error["error"] == ["invalid_request"]  # a public client: PKCE is mandatory
