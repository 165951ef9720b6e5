"""RP-initiated logout (``GET/POST /logout``): id_token_hint, confirmation with CSRF, exact
post-logout redirect URIs, and the browser-session cookie (docs/security.md "Logout needs
proof")."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from broker.app import create_app
from shared.clock import FrozenClock
from shared.runtime import Runtime, build_runtime

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.flows import login, query_of, refresh

pytestmark = pytest.mark.integration

SIGNED_OUT = "http://127.0.0.1:3000/signed-out"


async def _alive(broker: httpx2.AsyncClient, tokens: dict[str, Any]) -> bool:
    info = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    return info.status_code == 200


@pytest.fixture
async def second_browser(runtime: Runtime) -> AsyncIterator[httpx2.AsyncClient]:
    """Another browser (its own cookie jar) on the same broker."""
    transport = httpx2.ASGITransport(app=create_app(runtime))
    async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
        yield client


async def test_a_valid_id_token_hint_ends_that_session_and_redirects_with_state(broker, idp):
    tokens, other = await login(broker), await login(broker)
    response = await broker.get(
        "/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": SIGNED_OUT,
            "state": "bye-123",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{SIGNED_OUT}?state=bye-123"
    assert not await _alive(broker, tokens)
    assert (await refresh(broker, tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert await _alive(broker, other)  # only the hinted session ended


async def test_without_a_redirect_uri_the_broker_shows_a_signed_out_page(broker, idp):
    tokens = await login(broker)
    response = await broker.get("/logout", params={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200
    assert "signed out" in response.text
    assert response.headers["content-security-policy"].count("frame-ancestors 'none'") == 1
    assert not await _alive(broker, tokens)


@pytest.mark.parametrize(
    "uri",
    [
        f"{SIGNED_OUT}/",
        SIGNED_OUT.upper(),
        f"{SIGNED_OUT}?x=1",
        "http://127.0.0.1:3001/signed-out",
        "https://evil.example/",
        "http://127.0.0.1:3000/callback",  # a redirect_uri, not a post-logout one
    ],
)
async def test_an_unregistered_post_logout_redirect_uri_is_a_400_page_and_ends_nothing(
    broker, idp, uri
):
    tokens = await login(broker)
    response = await broker.get(
        "/logout", params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": uri}
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert await _alive(broker, tokens)


async def test_a_redirect_uri_needs_a_known_client_and_the_hint_must_match_it(broker, idp):
    tokens = await login(broker)
    anonymous = await broker.get("/logout", params={"post_logout_redirect_uri": SIGNED_OUT})
    assert anonymous.status_code == 400
    unknown = await broker.get("/logout", params={"client_id": "nope"})
    assert unknown.status_code == 400
    mismatch = await broker.get(
        "/logout", params={"id_token_hint": tokens["id_token"], "client_id": "backend"}
    )
    assert mismatch.status_code == 400
    assert await _alive(broker, tokens)


@pytest.mark.parametrize("hint", ["garbage", "a.b.c", "access_token"])
async def test_an_invalid_hint_is_refused_and_ends_nothing(broker, idp, hint):
    tokens = await login(broker)
    value = (
        tokens["access_token"] if hint == "access_token" else hint
    )  # typ at+jwt, not an ID token
    response = await broker.get("/logout", params={"id_token_hint": value})
    assert response.status_code == 400
    assert await _alive(broker, tokens)


async def test_an_expired_id_token_is_still_a_valid_hint(database_url, upstream_idp, keyring, idp):
    clock = FrozenClock(dt.datetime.now(dt.UTC))
    runtime = build_runtime(broker_settings(database_url, upstream_idp, keyring), clock=clock)
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as broker:
            tokens = await login(broker)
            clock.advance(2 * 3600)  # past the ID token's hour (and the access token's 15 min)
            response = await broker.get("/logout", params={"id_token_hint": tokens["id_token"]})
            assert response.status_code == 200
            clock.advance(-2 * 3600 + 60)
            assert not await _alive(broker, tokens)
    finally:
        await runtime.stop()


def _form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))


async def test_without_a_hint_the_user_confirms_and_this_browsers_sessions_end(
    broker, second_browser, idp
):
    mine = await login(broker)
    theirs = await login(second_browser)  # the same user, signed in from another browser
    page = await broker.get(
        "/logout", params={"client_id": "web", "post_logout_redirect_uri": SIGNED_OUT, "state": "s"}
    )
    assert page.status_code == 200
    assert "<form" in page.text
    # The form's answer redirects to the client: its origin is an allowed form target.
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(SIGNED_OUT))
    assert f"form-action 'self' {origin};" in page.headers["content-security-policy"]
    assert await _alive(broker, mine)  # a GET alone ends nothing (no cross-site logout)
    fields = _form_fields(page.text)
    assert fields.keys() == {"csrf", "client_id", "post_logout_redirect_uri", "state"}
    confirmed = await broker.post("/logout", data=fields)
    assert confirmed.status_code == 303
    assert query_of(confirmed.headers["location"]) == {"state": "s"}
    assert not await _alive(broker, mine)
    assert await _alive(second_browser, theirs)


async def test_the_confirmation_needs_this_browsers_csrf_token(broker, second_browser, idp):
    mine = await login(broker)
    await login(second_browser)
    fields = _form_fields((await broker.get("/logout")).text)
    missing = await broker.post("/logout", data={k: v for k, v in fields.items() if k != "csrf"})
    assert missing.status_code == 400
    forged = await broker.post("/logout", data={**fields, "csrf": "x" * 43})
    assert forged.status_code == 400
    # Another browser (another site posting the form cross-site sends no cookie either).
    elsewhere = await second_browser.post("/logout", data=fields)
    assert elsewhere.status_code == 400
    assert await _alive(broker, mine)
    signed_out = await broker.post("/logout", data=fields)
    assert signed_out.status_code == 200
    assert not await _alive(broker, mine)
    assert "broker_browser=" in signed_out.headers["set-cookie"]  # cleared: nothing left


async def test_a_browser_that_signed_nothing_in_is_sent_back_at_once(second_browser):
    response = await second_browser.get(
        "/logout", params={"client_id": "web", "post_logout_redirect_uri": SIGNED_OUT, "state": "z"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{SIGNED_OUT}?state=z"


async def test_the_browser_cookie_is_httponly_and_outlives_the_login(broker, idp):
    await login(broker)
    first = next(c for c in broker.cookies.jar if c.name == "broker_browser")
    assert first.has_nonstandard_attr("HttpOnly")
    assert first.expires is not None
    assert first.expires - dt.datetime.now(dt.UTC).timestamp() > 29 * 86400
    await login(broker)  # a second sign-in keeps the browser's value: logout finds both
    again = next(c for c in broker.cookies.jar if c.name == "broker_browser")
    assert again.value == first.value


async def test_discovery_advertises_the_end_session_endpoint(broker):
    document = (await broker.get("/.well-known/openid-configuration")).json()
    assert document["end_session_endpoint"] == f"{BROKER_ISSUER}/logout"
