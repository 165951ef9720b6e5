"""The admin dashboard in a real headless Chromium against a real ``broker serve`` process.

Debian's ``chromium`` driven by Playwright's Python client (its bundled driver; no browser
download). The broker runs under uvicorn with the ``dev`` provider only and one admin,
``user:<id>``: the dev provider cannot grant admin by ``dev:<subject>`` (its subject is whatever
address someone types), so the admin's account is created first by the broker's own sign-in
code (as if they had signed in once before) and named by its user id. Then, in Chromium:

1. an ordinary user signs in to a relying party twice through the dev form (two broker
   sessions; the relying party's callback is answered by Playwright);
2. the admin opens ``/admin``, signs in through the dev form, finds that user by email,
   revokes one of their sessions, and finds the ``session.revoked`` entry naming the admin in
   the audit log;
3. another browser context signs in as a non-admin and gets the 403 page.

Full-page screenshots go to ``var/test-artifacts/`` (``admin-dashboard.png`` is the overview).
Without ``/usr/bin/chromium`` the test is skipped, except on CI (``CI`` set), where
``.ci/run`` installs it and the test must run.
"""

from __future__ import annotations

import os
import re
import secrets
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from broker.login.identity import Context, UpstreamIdentity, sign_in
from shared.clock import SystemClock
from shared.crypto.keyring import Keyring
from shared.db.database import create_engine
from shared.providers.base import UpstreamLogin, UpstreamProfile

from tests.support.flows import pkce_pair
from tests.support.processes import broker_process, free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "var" / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RELYING_PARTY = "http://127.0.0.1:3000/callback"

pytestmark = pytest.mark.e2e

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium); CI installs it and runs this test",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, Route, async_playwright, expect  # noqa: E402


async def _create_admin(database_url: str, keyring: Keyring, issuer: str, email: str) -> str:
    """The admin's account, made by the broker's own sign-in code for a dev login of ``email``."""
    engine = create_engine(database_url, pool_size=1)
    profile = UpstreamProfile(
        subject=email,
        issuer=issuer,
        email=email,
        name="Ada Admin",
        preferred_username=email.split("@")[0],
        claims={"email": email, "name": "Ada Admin"},
    )
    identity = UpstreamIdentity(
        provider_id="dev", provider_type="dev", login=UpstreamLogin(profile=profile, tokens=None)
    )
    context = Context(
        keyring=keyring, issuer=issuer, now=SystemClock().now(), client_id="portal", ip=None
    )
    try:
        async with engine.begin() as connection:
            signed_in = await sign_in(connection, identity, context)
    finally:
        await engine.dispose()
    return str(signed_in.user_id)


def _write_config(path: Path, admin_id: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            providers:
              - id: dev
                type: dev
                display_name: Development login
            clients:
              - id: portal
                name: Portal
                redirect_uris: [{RELYING_PARTY}]
            admins:
              - user:{admin_id}
            """
        )
    )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _dev_sign_in(page: Page, email: str, name: str) -> None:
    """Fill the broker's dev login form that ``page`` shows, and submit it."""
    await expect(page.get_by_role("heading", name="Development login")).to_be_visible()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Sign in").click()


async def _relying_party_sign_in(browser: Browser, issuer: str, email: str) -> str:
    """One sign-in of the ``portal`` relying party in Chromium through the dev form, its code
    redeemed at ``/token``: a new broker session of the user; returns the user id.

    The relying party's callback is answered by Playwright (``route``): the redirect to it
    leaves the broker's origin right after the dev form, which the page's CSP must allow
    (Chromium applies ``form-action`` to the redirects that answer a form).
    """
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": RELYING_PARTY,
        "scope": "openid email profile",
        "state": state,
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    context = await browser.new_context()
    arrived: list[str] = []

    async def relying_party(route: Route) -> None:
        arrived.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<h1>Signed in</h1>")

    await context.route(f"{RELYING_PARTY}**", relying_party)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"{issuer}/authorize?{urlencode(query)}")
    await _dev_sign_in(page, email, "Grace Hopper")
    await expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
    await context.close()
    (location,) = arrived
    back = parse_qs(urlsplit(location).query)
    assert back["state"] == [state]
    async with httpx2.AsyncClient(base_url=issuer) as http:
        tokens = await http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": back["code"][0],
                "redirect_uri": RELYING_PARTY,
                "client_id": "portal",
                "code_verifier": verifier,
            },
        )
        assert tokens.status_code == 200, tokens.text
        userinfo = await http.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"}
        )
    assert userinfo.json()["email"] == email
    return str(userinfo.json()["sub"])


async def test_an_admin_revokes_a_users_session_in_chromium_and_a_non_admin_is_refused(
    tmp_path: Path, database_url: str, keyring: Keyring, browser: Browser
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    marker = uuid.uuid4().hex[:8]
    admin_email = f"ada-{marker}@admin.example"
    user_email = f"grace-{marker}@example.com"
    admin_id = await _create_admin(database_url, keyring, issuer, admin_email)
    config = tmp_path / "broker.yaml"
    _write_config(config, admin_id)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with broker_process(
        config,
        database_url=database_url,
        keyring=keyring,
        port=port,
        cwd=str(ROOT),
        BROKER_AUDIT_ROLLUP_INTERVAL="1",  # the overview's counts catch up within a second
    ) as broker:
        # 1. An ordinary user signs in to the relying party, twice: two broker sessions.
        user_id = await _relying_party_sign_in(browser, issuer, user_email)
        assert await _relying_party_sign_in(browser, issuer, user_email) == user_id

        # 2. The admin signs in to the dashboard through the broker's own dev form.
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(10_000)
        await page.goto(f"{issuer}/admin")
        assert "/auth/oauth2/dev/dev-login" in page.url  # sent through /authorize
        await _dev_sign_in(page, admin_email, "Ada Admin")
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert page.url == f"{issuer}/admin"
        await expect(page.get_by_text(admin_email)).to_be_visible()
        for _ in range(20):  # the rollup counts the sign-ins within about a second
            if await page.locator("svg.chart rect").count():
                break
            await page.wait_for_timeout(250)
            await page.reload()
        await expect(page.locator("svg.chart rect").first).to_be_attached()
        await page.screenshot(path=str(ARTIFACTS / "admin-dashboard.png"), full_page=True)

        # ... finds the user by email ...
        await page.get_by_role("link", name="Users").click()
        await page.get_by_label("Email contains").fill(user_email)
        await page.get_by_role("button", name="Search").click()
        await expect(page.get_by_role("link", name=user_email)).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "admin-dashboard-users.png"), full_page=True)
        await page.get_by_role("link", name=user_email).click()
        await expect(page.get_by_role("heading", name=user_email)).to_be_visible()
        sessions = page.locator("table").first.locator("tbody tr")
        await expect(sessions).to_have_count(2)
        await expect(page.get_by_role("button", name=re.compile("^Revoke session"))).to_have_count(
            2
        )

        # ... revokes one of their sessions ...
        first = sessions.first
        revoked_sid = (await first.locator("code").inner_text()).strip()
        await first.get_by_role("button", name=re.compile("^Revoke session")).click()
        await expect(page.get_by_role("status")).to_contain_text("Revoked.")
        row = page.locator("tbody tr", has_text=revoked_sid)
        await expect(row.locator(".badge")).to_have_text("revoked")
        await expect(page.get_by_role("button", name=re.compile("^Revoke session"))).to_have_count(
            1
        )
        await page.screenshot(path=str(ARTIFACTS / "admin-dashboard-user.png"), full_page=True)

        # ... and sees the audit entry that names the admin.
        await page.get_by_role("link", name="Audit log").click()
        await page.get_by_label("Action").fill("session.revoked")
        await page.get_by_label("Subject (user id)").fill(user_id)
        await page.get_by_role("button", name="Filter").click()
        entry = page.locator("tbody tr", has_text="session.revoked")
        await expect(entry).to_have_count(1)
        await expect(entry).to_contain_text(f"user:{admin_id}")
        await expect(entry).to_contain_text(revoked_sid)
        await page.screenshot(path=str(ARTIFACTS / "admin-dashboard-audit.png"), full_page=True)
        await context.close()

        # 3. A non-admin, in a fresh context, signs in and gets the 403 page, nothing else.
        outsider = await browser.new_context()
        outsider_page = await outsider.new_page()
        outsider_page.set_default_timeout(10_000)
        await outsider_page.goto(f"{issuer}/admin")
        await _dev_sign_in(outsider_page, f"mallory-{marker}@example.com", "Mallory")
        await expect(outsider_page.get_by_role("heading", name="Not allowed")).to_be_visible()
        await expect(outsider_page.get_by_text("not an admin")).to_be_visible()
        assert await outsider_page.get_by_role("link", name="Users").count() == 0
        response = await outsider_page.goto(f"{issuer}/admin/users")
        assert response is not None and "/dev-login" in response.url  # still not signed in
        await outsider.close()
        assert "Traceback" not in broker.process.read_log()
