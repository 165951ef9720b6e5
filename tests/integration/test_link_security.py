"""Who may start a link flow (docs/security.md "Linking needs a fresh browser sign-in").

A link adds a way into an account. It starts only from the browser that holds the user's broker
session, only within ``link_max_auth_age`` of that session's sign-in (else the browser signs in
again first and the link continues), and never from a Bearer token alone: whoever holds a
leaked access token must not attach their own identity to its user.
"""

from __future__ import annotations

import html
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from broker.app import create_app
from shared.db.tables import AUDIT_TABLE as AUDIT
from shared.db.tables import LOGIN_STATES, PROFILES, SESSIONS
from shared.runtime import Runtime
from sqlalchemy import func, select, update

from tests.support.flows import (
    LINK_CONTINUE,
    AuthorizationResult,
    authorize,
    exchange,
    link_continue_url,
    login,
    pkce_pair,
)
from tests.support.provider_broker import BROKER_ISSUER, unique_email

pytestmark = pytest.mark.integration


def browser(runtime: Runtime) -> httpx2.AsyncClient:
    """A browser of its own (empty cookie jar) reaching the same broker."""
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)), base_url=BROKER_ISSUER
    )


def link_params(**extra: str) -> dict[str, str]:
    _verifier, challenge = pkce_pair()
    return {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": "http://127.0.0.1:3000/callback",
        "scope": "openid email",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def corp_person(idp: httpx2.AsyncClient) -> dict[str, Any]:
    person = {"sub": uuid.uuid4().hex, "email": unique_email("corp"), "email_verified": True}
    await idp.post("/_control/user", json=person)
    return person


async def github_person(gh: httpx2.AsyncClient) -> dict[str, Any]:
    account_id = uuid.uuid4().int % 90_000_000 + 10_000_000
    account = {
        "id": account_id,
        "login": f"gh{account_id}",
        "name": "GitHub Person",
        "email": None,
        "emails": [
            {"email": unique_email("gh"), "primary": True, "verified": True, "visibility": None}
        ],
        "orgs": [],
        "teams": [],
    }
    await gh.post("/_control/user", json=account)
    return account


async def whoami(client: httpx2.AsyncClient, tokens: dict[str, Any]) -> str:
    response = await client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["sub"])


async def linked_providers(runtime: Runtime, user_id: str) -> list[str]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(PROFILES.c.provider)
            .where(PROFILES.c.user_id == uuid.UUID(user_id))
            .order_by(PROFILES.c.created_at)
        )
        return list(rows.scalars())


async def owner_of(runtime: Runtime, provider: str, subject: str) -> uuid.UUID | None:
    async with runtime.engine.connect() as connection:
        return await connection.scalar(
            select(PROFILES.c.user_id).where(
                PROFILES.c.provider == provider, PROFILES.c.subject == subject
            )
        )


async def login_state_count(runtime: Runtime) -> int:
    async with runtime.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(LOGIN_STATES)) or 0)


async def link_audits(runtime: Runtime, user_id: str) -> list[Any]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT.c.action, AUDIT.c.data).where(
                AUDIT.c.subject == user_id, AUDIT.c.action == "link.created"
            )
        )
        return list(rows)


def upstream_hosts(result: AuthorizationResult, corp: str, github: str) -> list[str]:
    """Which upstreams the browser was sent to, in order (by a redirect, or by the person
    confirming a link)."""
    sent = []
    for hop in result.hops:
        target = hop.headers.get("location", "")
        if hop.status_code == 200 and LINK_CONTINUE in hop.text:
            target = link_continue_url(hop.text)
        for name, base in (("corp", corp), ("github", github)):
            if target.startswith(base):
                sent.append(name)
    return sent


async def test_a_bearer_token_never_starts_a_link(provider_broker, idp):
    runtime, victim_browser = provider_broker
    await corp_person(idp)
    victim = await login(victim_browser, provider="corp")
    before = await login_state_count(runtime)

    async with browser(runtime) as attacker_browser:
        from_elsewhere = await attacker_browser.get(
            "/auth/oauth2/github/link",
            params=link_params(),
            headers={"Authorization": f"Bearer {victim['access_token']}"},
        )
    # Even from the victim's own browser: a link is a navigation, never an API call.
    from_own_browser = await victim_browser.get(
        "/auth/oauth2/github/link",
        params=link_params(id_token_hint=victim["id_token"]),
        headers={"Authorization": f"Bearer {victim['access_token']}"},
    )

    for refused in (from_elsewhere, from_own_browser):
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_request"
        assert "never from an access token" in refused.json()["error_description"]
        assert "location" not in refused.headers
    assert await login_state_count(runtime) == before  # nothing was started


async def test_a_leaked_access_and_id_token_cannot_attach_a_strangers_identity(
    provider_broker, idp, gh, upstream_idp, github_upstream
):
    """The attack: the victim's tokens leak to someone who, in their own browser, tries to link
    their own GitHub account to the victim's broker user. Every way in fails."""
    runtime, victim_browser = provider_broker
    await corp_person(idp)
    victim = await login(victim_browser, provider="corp")
    victim_id = await whoami(victim_browser, victim)
    attacker_github = await github_person(gh)  # the GitHub account signed in upstream now

    async with browser(runtime) as attacker_browser:
        # 1. The access token as a Bearer token.
        bearer = await attacker_browser.get(
            "/auth/oauth2/github/link",
            params=link_params(),
            headers={"Authorization": f"Bearer {victim['access_token']}"},
        )
        assert bearer.status_code == 400
        # 2. The ID token as a hint: this browser holds no session of the victim, so it must
        # sign in first, and not through the provider being linked.
        via_github = await authorize(
            attacker_browser,
            provider="github",
            start_path="/auth/oauth2/github/link",
            extra={"id_token_hint": victim["id_token"]},
        )
        assert via_github.params.get("error") == "invalid_request", via_github.location
        assert upstream_hosts(via_github, upstream_idp, github_upstream) == []
        # 3. Signing in first with the attacker's own corp account is not the victim.
        await corp_person(idp)
        via_corp = await authorize(
            attacker_browser,
            provider="corp",
            start_path="/auth/oauth2/github/link",
            extra={"id_token_hint": victim["id_token"]},
        )
        assert via_corp.params.get("error") == "access_denied", via_corp.location
        assert upstream_hosts(via_corp, upstream_idp, github_upstream) == ["corp"]

    assert await linked_providers(runtime, victim_id) == ["corp"]
    assert await owner_of(runtime, "github", str(attacker_github["id"])) is None
    assert [data["provider"] for _action, data in await link_audits(runtime, victim_id)] == [
        "corp"  # the victim's own first sign-in; nothing since
    ]
    assert await whoami(victim_browser, victim) == victim_id  # the victim is untouched


async def test_a_fresh_sign_in_in_this_browser_links_at_once(
    provider_broker, idp, gh, upstream_idp, github_upstream
):
    runtime, client = provider_broker
    await corp_person(idp)
    tokens = await login(client, provider="corp")
    user_id = await whoami(client, tokens)
    account = await github_person(gh)

    result = await authorize(client, provider=None, start_path="/auth/oauth2/github/link")

    assert "code" in result.params, result.location
    assert upstream_hosts(result, upstream_idp, github_upstream) == ["github"]  # no sign-in
    assert await whoami(client, (await exchange(client, result)).json()) == user_id
    assert await owner_of(runtime, "github", str(account["id"])) == uuid.UUID(user_id)


async def test_a_stale_sign_in_signs_in_again_first_then_links(
    provider_broker, idp, gh, upstream_idp, github_upstream
):
    runtime, client = provider_broker
    await corp_person(idp)
    tokens = await login(client, provider="corp")
    user_id = await whoami(client, tokens)
    await _age_sessions(runtime, user_id, runtime.settings.link_max_auth_age + 1)
    account = await github_person(gh)

    result = await authorize(
        client,
        provider=None,
        start_path="/auth/oauth2/github/link",
        extra={"id_token_hint": tokens["id_token"]},
    )

    assert "code" in result.params, result.location
    # Through the provider the session signed in with, then on to GitHub.
    assert upstream_hosts(result, upstream_idp, github_upstream) == ["corp", "github"]
    assert await whoami(client, (await exchange(client, result)).json()) == user_id
    assert await owner_of(runtime, "github", str(account["id"])) == uuid.UUID(user_id)
    assert await linked_providers(runtime, user_id) == ["corp", "github"]


async def test_the_sign_in_before_a_link_must_be_the_same_user(provider_broker, idp, gh):
    runtime, client = provider_broker
    await corp_person(idp)
    tokens = await login(client, provider="corp")
    user_id = await whoami(client, tokens)
    await _age_sessions(runtime, user_id, runtime.settings.link_max_auth_age + 1)
    someone_else = await corp_person(idp)  # the upstream now signs in another person
    account = await github_person(gh)

    result = await authorize(client, provider=None, start_path="/auth/oauth2/github/link")

    assert result.params.get("error") == "access_denied", result.location
    assert await owner_of(runtime, "github", str(account["id"])) is None
    # The mismatched sign-in was rolled back: no user was created for that person.
    assert await owner_of(runtime, "corp", someone_else["sub"]) is None
    assert await linked_providers(runtime, user_id) == ["corp"]


async def test_a_browser_without_a_session_is_offered_a_sign_in_first(
    provider_broker, idp, gh, upstream_idp, github_upstream
):
    runtime, client = provider_broker
    await corp_person(idp)
    existing = await login(client, provider="corp")
    user_id = await whoami(client, existing)
    account = await github_person(gh)

    async with browser(runtime) as fresh:
        chooser = await fresh.get("/auth/oauth2/github/link", params=link_params())
        assert chooser.status_code == 200
        targets = [
            parse_qs(urlsplit(href).query).get("provider", [""])[0]
            for href in _hrefs(chooser.text)
            if "/auth/oauth2/github/link?" in href
        ]
        assert "corp" in targets and "github" not in targets  # not the provider being linked
        result = await authorize(fresh, provider="corp", start_path="/auth/oauth2/github/link")
        assert "code" in result.params, result.location
        assert upstream_hosts(result, upstream_idp, github_upstream) == ["corp", "github"]

    assert await owner_of(runtime, "github", str(account["id"])) == uuid.UUID(user_id)


async def _age_sessions(runtime: Runtime, user_id: str, seconds: int) -> None:
    """Move the user's sessions' sign-in back in time (as if signed in ``seconds`` ago)."""
    import datetime as dt

    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(SESSIONS)
            .where(SESSIONS.c.user_id == uuid.UUID(user_id))
            .values(auth_time=runtime.clock.now() - dt.timedelta(seconds=seconds))
        )


def _hrefs(html: str) -> list[str]:
    import html as html_lib
    import re

    return [html_lib.unescape(href) for href in re.findall(r'href="([^"]+)"', html)]


async def test_a_link_another_site_starts_waits_for_the_person_to_confirm_it(
    provider_broker, idp, gh, github_upstream
):
    """Login CSRF: another site navigates a signed-in browser to the link URL while the browser
    is signed in upstream as someone else. Nothing links without the person's click on a page
    that names the account, and that page cannot be framed."""
    runtime, client = provider_broker
    person = await corp_person(idp)
    tokens = await login(client, provider="corp")
    user_id = await whoami(client, tokens)
    stranger = await github_person(gh)  # whose GitHub session this browser holds

    navigated = await authorize(
        client, provider=None, start_path="/auth/oauth2/github/link", confirm_link=False
    )

    page = navigated.hops[-1]
    assert page.status_code == 200 and "code" not in navigated.params
    assert person["email"] in page.text and "GitHub" in page.text
    assert link_continue_url(page.text).startswith(github_upstream)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert await owner_of(runtime, "github", str(stranger["id"])) is None
    cancel = re.search(r'id="link-cancel" href="([^"]+)"', page.text)
    assert cancel and html.unescape(cancel.group(1)).startswith(
        "http://127.0.0.1:3000/callback?error=access_denied"
    )
    assert await linked_providers(runtime, user_id) == ["corp"]
