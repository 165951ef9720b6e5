"""Account linking: the explicit link flow, automatic linking by verified email, unlinking, the
profile and provider APIs (docs/security.md "Link state bound to the user", "Auto-linking is off
by default"). Who may start a link: tests/integration/test_link_security.py. Upstreams: the OIDC
double (`corp`) and the GitHub stand-in (`github` with link_by_email, `github-acme` without)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx2
from broker.app import create_app
from shared.db.tables import AUDIT_TABLE as AUDIT
from shared.db.tables import PROFILES
from shared.runtime import Runtime
from sqlalchemy import event, func, select

from tests.support.flows import (
    authorize,
    bearer,
    exchange,
    link_continue_url,
    login,
    query_of,
    refresh,
    relative,
)
from tests.support.jwts import session_of
from tests.support.provider_broker import (
    BROKER_ISSUER,
    unique_email,
)


def other_browser(runtime: Runtime) -> httpx2.AsyncClient:
    """The same broker, reached from a browser with its own (empty) cookie jar."""
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)), base_url=BROKER_ISSUER
    )


async def corp_user(idp: httpx2.AsyncClient, email: str | None = None) -> dict[str, Any]:
    user = {"sub": uuid.uuid4().hex, "email": email or unique_email("corp"),
            "email_verified": True, "name": "Corp Person"}  # fmt: skip
    await idp.post("/_control/user", json=user)
    return user


async def github_user(gh: httpx2.AsyncClient, email: str | None = None, **extra: Any) -> dict:
    account_id = random.randint(10_000_000, 99_999_999)
    account = {
        "id": account_id,
        "login": f"gh{account_id}",
        "name": "GitHub Person",
        "avatar_url": None,
        "email": None,
        "emails": [
            {
                "email": email or unique_email("gh"),
                "primary": True,
                "verified": True,
                "visibility": None,
            }
        ],
        "orgs": [],
        "teams": [],
        **extra,
    }
    await gh.post("/_control/user", json=account)
    return account


async def whoami(client: httpx2.AsyncClient, tokens: dict[str, Any]) -> str:
    response = await client.get("/userinfo", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    return str(response.json()["sub"])


async def link(client: httpx2.AsyncClient, tokens: dict[str, Any], provider: str) -> Any:
    """The link flow from the browser that signed in (its cookie), naming the session."""
    return await authorize(
        client,
        provider=None,
        start_path=f"/auth/oauth2/{provider}/link",
        extra={"id_token_hint": tokens["id_token"]},
    )


async def audit_actions(runtime: Runtime, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT.c.action, AUDIT.c.data)
            .where(AUDIT.c.subject == user_id)
            .order_by(AUDIT.c.id)
        )
        return [(row.action, row.data) for row in rows]


async def test_link_a_second_provider_list_it_and_unlink_it(provider_broker, idp, gh):
    runtime, client = provider_broker
    await corp_user(idp)
    first = await login(client, provider="corp")
    user_id = await whoami(client, first)
    account = await github_user(gh)

    result = await link(client, first, "github")
    assert "code" in result.params, result.location
    linked = (await exchange(client, result)).json()
    assert await whoami(client, linked) == user_id  # the same user, through GitHub now

    profile = (await client.get("/auth/oauth2/profile", headers=bearer(first))).json()
    assert profile["user"]["id"] == user_id
    assert [p["provider"] for p in profile["profiles"]] == ["corp", "github"]
    github_profile = profile["profiles"][1]
    assert github_profile["subject"] == str(account["id"])
    assert github_profile["email"] == account["emails"][0]["email"]
    assert github_profile["link_state"] == "ok" and github_profile["last_synced_at"]

    listing = (await client.get("/auth/oauth2/providers", headers=bearer(first))).json()
    by_id = {entry["id"]: entry for entry in listing["providers"]}
    assert by_id["corp"]["linked"] and by_id["github"]["linked"]
    assert not by_id["dev"]["linked"] and not by_id["microsoft"]["linked"]
    actions = await audit_actions(runtime, user_id)
    assert ("link.created", "link_flow") in [(a, d.get("method")) for a, d in actions]

    removed = await client.delete("/auth/oauth2/links/github", headers=bearer(first))
    assert removed.status_code == 200, removed.text
    assert removed.json()["unlinked"] == "github"
    assert str(session_of(linked["access_token"])) in removed.json()["revoked_sessions"]
    assert (await refresh(client, linked["refresh_token"])).status_code == 400
    assert (await refresh(client, first["refresh_token"])).status_code == 200
    profile = (await client.get("/auth/oauth2/profile", headers=bearer(first))).json()
    assert [p["provider"] for p in profile["profiles"]] == ["corp"]
    assert ("link.removed", "github") in [(a, d.get("provider")) for a, d in
                                          await audit_actions(runtime, user_id)]  # fmt: skip
    assert (
        await client.delete("/auth/oauth2/links/github", headers=bearer(first))
    ).status_code == 404


async def test_unlinking_the_last_login_method_is_refused(provider_broker, idp):
    _runtime, client = provider_broker
    await corp_user(idp)
    tokens = await login(client, provider="corp")
    refused = await client.delete("/auth/oauth2/links/corp", headers=bearer(tokens))
    assert refused.status_code == 409
    assert refused.json()["error"] == "invalid_request"
    assert "last" in refused.json()["error_description"]
    assert (await client.get("/userinfo", headers=bearer(tokens))).status_code == 200
    assert (await client.delete("/auth/oauth2/links/corp")).status_code == 401


async def test_a_link_callback_opened_in_another_browser_links_nothing(provider_broker, idp, gh):
    runtime, client = provider_broker
    await corp_user(idp)
    alice = await login(client, provider="corp")
    alice_id = await whoami(client, alice)
    account = await github_user(gh)
    start = await client.get(
        "/auth/oauth2/github/link",
        params={"response_type": "code", "client_id": "web", "state": "x",
                "redirect_uri": "http://127.0.0.1:3000/callback", "scope": "openid email",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                "code_challenge_method": "S256", "id_token_hint": alice["id_token"]},
    )  # fmt: skip
    assert start.status_code == 200  # the confirmation page; Alice clicks on
    async with httpx2.AsyncClient() as upstream_browser:
        upstream = await upstream_browser.get(link_continue_url(start.text))
    callback = relative(upstream.headers["location"])

    async with other_browser(runtime) as bob_browser:
        # Bob is signed in in his own browser, and opens Alice's callback URL there.
        await corp_user(idp)
        await login(bob_browser, provider="corp")
        answer = await bob_browser.get(callback)
    assert answer.status_code == 400 and "location" not in answer.headers
    async with runtime.engine.connect() as connection:
        stored = await connection.scalar(
            select(PROFILES.c.id).where(
                PROFILES.c.provider == "github", PROFILES.c.subject == str(account["id"])
            )
        )
    assert stored is None
    assert all(action != "link.created" or data.get("provider") != "github"
               for action, data in await audit_actions(runtime, alice_id))  # fmt: skip


async def test_an_identity_of_another_user_is_not_linked(provider_broker, idp, gh):
    runtime, client = provider_broker
    account = await github_user(gh)
    owner = await login(client, provider="github")  # the GitHub identity has its own user
    await corp_user(idp)
    alice = await login(client, provider="corp")
    alice_id = await whoami(client, alice)
    result = await link(client, alice, "github")
    assert result.params["error"] == "access_denied"
    actions = await audit_actions(runtime, alice_id)
    assert ("link.refused", "linked_to_another_user") in [
        (action, data.get("reason")) for action, data in actions
    ]
    assert await whoami(client, owner) != alice_id
    assert account


async def test_a_verified_email_auto_links_where_the_provider_allows_it(provider_broker, idp, gh):
    runtime, client = provider_broker
    email = unique_email("shared")
    await corp_user(idp, email=email)
    corp_tokens = await login(client, provider="corp")
    await github_user(gh, email=email.upper())  # case does not make another address
    github_tokens = await login(client, provider="github")  # link_by_email: true
    user_id = await whoami(client, corp_tokens)
    assert await whoami(client, github_tokens) == user_id
    actions = await audit_actions(runtime, user_id)
    assert ("link.created", "verified_email") in [(a, d.get("method")) for a, d in actions]
    async with runtime.engine.connect() as connection:
        stored = (
            await connection.execute(
                select(PROFILES.c.provider, PROFILES.c.email_authoritative).where(
                    PROFILES.c.user_id == uuid.UUID(user_id)
                )
            )
        ).all()
    assert sorted(stored) == [("corp", True), ("github", True)]  # both sides authoritative


async def test_a_stored_link_whose_provider_cannot_vouch_for_the_email_pulls_in_no_sign_in(
    provider_broker, google, gh
):
    """docs/security.md "Auto-linking needs both sides authoritative": someone makes a Google
    account on the victim's address
    (Google verifies it but is not its authority: no Gmail, no Workspace) before the victim
    arrives; the victim's GitHub sign-in, authoritative and verified, gets a user of its own."""
    runtime, client = provider_broker
    email = unique_email("prehijack")
    await google.post(
        "/_control/user",
        json={"sub": uuid.uuid4().hex[:21], "email": email, "email_verified": True,
              "name": "Squatter"},
    )  # fmt: skip
    squatter = await login(client, provider="google")
    squatter_id = await whoami(client, squatter)
    await github_user(gh, email=email)
    victim = await login(client, provider="github")  # link_by_email: true
    assert await whoami(client, victim) != squatter_id
    async with runtime.engine.connect() as connection:
        stored = await connection.scalar(
            select(PROFILES.c.email_authoritative).where(
                PROFILES.c.user_id == uuid.UUID(squatter_id)
            )
        )
    assert stored is False
    assert all(action != "link.created" or data.get("provider") != "github"
               for action, data in await audit_actions(runtime, squatter_id))  # fmt: skip


def _cookie_shapes(response: httpx2.Response) -> list[str]:
    """Each Set-Cookie without its value (and date): name and attributes."""
    shapes = []
    for header in response.headers.get_list("set-cookie"):
        name, *attributes = [part.strip() for part in header.split(";")]
        kept = sorted(a.lower() for a in attributes if not a.lower().startswith("expires="))
        shapes.append(";".join([name.split("=")[0], *kept]))
    return sorted(shapes)


def _answer_shape(result: Any) -> list[tuple[int, list[str], list[str], str]]:
    """What a caller sees of a sign-in: each hop's status, cookies, redirect parameters, body."""
    return [
        (
            hop.status_code,
            _cookie_shapes(hop),
            sorted(query_of(hop.headers.get("location", ""))),
            hop.text.replace(result.state, "STATE"),
        )
        for hop in result.hops
        if str(hop.url).startswith(BROKER_ISSUER)  # the broker's answers, not the upstream's
    ]


async def test_an_unverified_email_of_an_existing_account_answers_as_an_unknown_one(
    provider_broker, idp, gh
):
    """docs/security.md "Auto-linking needs both sides authoritative": no lookup, no "account
    exists" page, no refusal."""
    runtime, client = provider_broker
    taken = unique_email("taken")
    await github_user(gh, email=taken)
    owner_id = await whoami(client, await login(client, provider="github"))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.lower())

    answers = []
    for email in (taken.upper(), unique_email("free")):
        subject = uuid.uuid4().hex
        await idp.post(
            "/_control/user",
            json={"sub": subject, "email": email, "email_verified": False, "name": "Probe"},
        )
        async with other_browser(runtime) as browser:
            event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
            try:
                result = await authorize(browser, provider="corp")
            finally:
                event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
            answers.append(_answer_shape(result))
            assert "code" in result.params, result.location
            tokens = (await exchange(browser, result)).json()
            assert await whoami(browser, tokens) != owner_id  # a user of its own
        async with runtime.engine.connect() as connection:
            refusals = await connection.scalar(
                select(func.count())
                .select_from(AUDIT)
                .where(AUDIT.c.action == "link.refused", AUDIT.c.actor == f"corp:{subject}")
            )
        assert refusals == 0
    assert answers[0] == answers[1]
    assert not [s for s in statements if "lower(oauth2_profiles.email)" in s]
    async with runtime.engine.connect() as connection:
        owner_links = await connection.scalar(
            select(func.count())
            .select_from(PROFILES)
            .where(PROFILES.c.user_id == uuid.UUID(owner_id))
        )
    assert owner_links == 1


async def test_without_link_by_email_a_matching_email_gets_the_account_exists_page(
    provider_broker, idp, gh
):
    runtime, client = provider_broker
    email = unique_email("collide")
    await corp_user(idp, email=email)
    corp_tokens = await login(client, provider="corp")
    account = await github_user(gh, email=email, orgs=["acme"])
    result = await authorize(client, provider="github-acme")  # link_by_email is off
    page = result.hops[-1]
    assert page.status_code == 409 and "already exists" in page.text
    back = query_of(page.text.split('href="')[1].split('"')[0].replace("&amp;", "&"))
    assert back["error"] == "access_denied" and back["state"] == result.state
    async with runtime.engine.connect() as connection:
        assert (
            await connection.scalar(
                select(PROFILES.c.id).where(PROFILES.c.subject == str(account["id"]))
            )
        ) is None
    actions = await audit_actions(runtime, await whoami(client, corp_tokens))
    assert ("link.refused", "auto_link_disabled") in [(a, d.get("reason")) for a, d in actions]


async def test_the_profile_edits_only_broker_owned_fields(provider_broker, idp, gh):
    runtime, client = provider_broker
    corp_account = await corp_user(idp)
    tokens = await login(client, provider="corp")
    account = await github_user(gh)
    await exchange(client, await link(client, tokens, "github"))
    for field, value in (("email_verified", True), ("email", "me@evil.example"), ("name", "x")):
        refused = await client.put(
            "/auth/oauth2/profile", json={field: value}, headers=bearer(tokens)
        )
        assert refused.status_code == 400, field
        assert field in refused.json()["error_description"]
    unknown = await client.put("/auth/oauth2/profile", json={"x": "1"}, headers=bearer(tokens))
    assert unknown.status_code == 400
    not_linked = await client.put(
        "/auth/oauth2/profile", json={"primary_email_provider": "dev"}, headers=bearer(tokens)
    )
    assert not_linked.status_code == 400

    edited = await client.put(
        "/auth/oauth2/profile",
        json={"display_name": "  Ada L.  ", "primary_email_provider": "github"},
        headers=bearer(tokens),
    )
    assert edited.status_code == 200, edited.text
    user = edited.json()["user"]
    assert user["display_name"] == "Ada L." and user["primary_email_provider"] == "github"
    assert user["email"] == account["emails"][0]["email"] and user["email_verified"] is True
    claims = (await client.get("/userinfo", headers=bearer(tokens))).json()
    assert claims["name"] == "Ada L." and claims["email"] == account["emails"][0]["email"]

    reset = await client.put(
        "/auth/oauth2/profile",
        json={"display_name": None, "primary_email_provider": None},
        headers=bearer(tokens),
    )
    assert reset.json()["user"]["email"] == corp_account["email"]  # the oldest verified link
    assert reset.json()["user"]["display_name"] == "Corp Person"
    actions = await audit_actions(runtime, await whoami(client, tokens))
    assert ("profile.updated", ["display_name", "primary_email_provider"]) in [
        (a, d.get("fields")) for a, d in actions
    ]


async def test_the_provider_list_shows_status_without_authentication(provider_broker, gh):
    runtime, client = provider_broker
    listing = await client.get("/auth/oauth2/providers")
    assert listing.status_code == 200
    by_id = {entry["id"]: entry for entry in listing.json()["providers"]}
    assert set(by_id) == {
        "corp", "dev", "github", "github-acme", "microsoft", "retired", "google", "google-corp"
    }  # fmt: skip
    assert by_id["retired"]["status"] == "disabled" and by_id["retired"]["login_url"] is None
    for provider_id in ("corp", "dev", "github", "microsoft", "google"):
        assert by_id[provider_id]["status"] == "reachable", by_id[provider_id]
    assert by_id["github"]["type"] == "github" and by_id["github"]["display_name"] == "GitHub"
    assert by_id["github-acme"]["display_name"] == "GitHub (acme)"
    assert all("linked" not in entry for entry in by_id.values())

    await gh.post("/_control/misbehave", json={"mode": "meta_503"})
    # Cached: a second listing within the probe interval does not reach the upstream again.
    requests_before = len((await gh.get("/_control/requests")).json())
    again = {e["id"]: e for e in (await client.get("/auth/oauth2/providers")).json()["providers"]}
    assert again["github"]["status"] == "reachable"
    assert len((await gh.get("/_control/requests")).json()) == requests_before
    # Past the cache, the failing probe shows.
    runtime.provider_health._results.clear()
    again = {e["id"]: e for e in (await client.get("/auth/oauth2/providers")).json()["providers"]}
    assert again["github"]["status"] == "configured" and again["github"]["reachable"] is False


async def test_auto_link_onto_a_user_already_holding_that_provider_is_refused_not_a_500(
    provider_broker, idp, gh
):
    runtime, client = provider_broker
    email = unique_email("twice")
    await corp_user(idp, email=email)
    corp_tokens = await login(client, provider="corp")
    await github_user(gh, email=email)
    await login(client, provider="github")  # auto-linked to the corp user
    await github_user(gh, email=email)  # a second GitHub account with the same address
    result = await authorize(client, provider="github")
    assert result.hops[-1].status_code == 409 and "code" not in result.params
    actions = await audit_actions(runtime, await whoami(client, corp_tokens))
    assert ("link.refused", "provider_already_linked") in [(a, d.get("reason")) for a, d in actions]


async def test_unlinking_ends_codes_issued_through_the_link_and_revokes_the_grant(
    provider_broker, idp, gh
):
    _runtime, client = provider_broker
    await corp_user(idp)
    tokens = await login(client, provider="corp")
    await github_user(gh)
    pending = await link(client, tokens, "github")  # a code through GitHub, not exchanged yet
    assert "code" in pending.params
    removed = await client.delete("/auth/oauth2/links/github", headers=bearer(tokens))
    assert removed.status_code == 200
    late = await exchange(client, pending)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    revocations = [
        entry
        for entry in (await gh.get("/_control/requests")).json()
        if entry["method"] == "DELETE" and entry["path"].endswith("/grant")
    ]
    assert revocations and revocations[-1]["authorization"] == "Basic"


async def test_nul_characters_never_reach_the_database(provider_broker, idp):
    _runtime, client = provider_broker
    await idp.post(
        "/_control/user",
        json={"sub": uuid.uuid4().hex, "email": unique_email("nul"), "email_verified": True,
              "name": "Corp\u0000Person", "nickname": "a\u0000b"},
    )  # fmt: skip
    tokens = await login(client, provider="corp")
    claims = (await client.get("/userinfo", headers=bearer(tokens))).json()
    assert claims["name"] == "CorpPerson"
    refused = await client.put(
        "/auth/oauth2/profile", json={"display_name": "a\u0000b"}, headers=bearer(tokens)
    )
    assert refused.status_code == 400


async def test_two_providers_groups_of_the_same_name_stay_two_labelled_groups(
    provider_broker, idp, gh
):
    """docs/security.md "Groups are labelled by provider": `acme` at Corp SSO is not `acme` at
    GitHub."""
    _runtime, client = provider_broker
    await idp.post(
        "/_control/user",
        json={"sub": uuid.uuid4().hex, "email": unique_email("groups"), "email_verified": True,
              "name": "Grouped", "groups": ["acme", "engineering"]},
    )  # fmt: skip
    tokens = await login(client, provider="corp", scope="openid profile groups")
    claims = (await client.get("/userinfo", headers=bearer(tokens))).json()
    assert claims["groups"] == ["corp:acme", "corp:engineering"]

    await github_user(gh, orgs=["acme"])
    linked = await exchange(client, await link(client, tokens, "github-acme"))
    assert linked.status_code == 200, linked.text
    expected = ["corp:acme", "corp:engineering", "github-acme:acme"]
    assert (await client.get("/userinfo", headers=bearer(tokens))).json()["groups"] == expected
    refreshed = await refresh(client, tokens["refresh_token"])
    assert (await client.get("/userinfo", headers=bearer(refreshed.json()))).json()[
        "groups"
    ] == expected
