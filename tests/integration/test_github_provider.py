"""GitHub sign-in against a local github.com + API stand-in over real HTTP (docs/security.md "GitHub
emails and token expiry")."""

from __future__ import annotations

import random
from typing import Any

import httpx2
from shared.db.tables import LINKS as TOKENS
from shared.db.tables import PROFILES
from shared.runtime import Runtime
from sqlalchemy import select

from tests.support.flows import authorize, login, pkce_pair, query_of, refresh
from tests.support.jwts import claims_of
from tests.support.provider_broker import unique_email


def _account(**overrides: Any) -> dict[str, Any]:
    account_id = random.randint(10_000_000, 99_999_999)
    email = unique_email("octo")
    return {
        "id": account_id,
        "login": f"octo{account_id}",
        "name": "Octo Cat",
        "avatar_url": f"https://avatars.example/u/{account_id}",
        "email": None,
        "emails": [
            {"email": email, "primary": True, "verified": True, "visibility": "private"},
            {
                "email": f"{account_id}+x@users.noreply.github.com",
                "primary": False,
                "verified": True,
                "visibility": None,
            },
        ],
        "orgs": [],
        "teams": [],
        **overrides,
    }


async def _link_row(runtime: Runtime, provider: str, subject: str) -> Any:
    async with runtime.engine.connect() as connection:
        return (
            await connection.execute(
                select(PROFILES, TOKENS.c.expires_at, TOKENS.c.refresh_token_enc)
                .outerjoin(TOKENS, TOKENS.c.profile_id == PROFILES.c.id)
                .where(PROFILES.c.provider == provider, PROFILES.c.subject == subject)
            )
        ).first()


async def test_expiring_tokens_identity_from_the_api_and_the_verified_primary_email(
    provider_broker, gh
):
    runtime, client = provider_broker
    account = _account()
    await gh.post("/_control/user", json=account)
    await gh.post("/_control/token_mode", json={"mode": "expiring"})
    tokens = await login(client, provider="github")
    claims = (
        await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    ).json()
    primary = account["emails"][0]["email"]
    assert claims["email"] == primary and claims["email_verified"] is True
    assert claims["name"] == "Octo Cat" and claims["preferred_username"] == account["login"]
    row = await _link_row(runtime, "github", str(account["id"]))  # the numeric id, not the login
    assert row.provider_type == "github" and row.email == primary
    assert row.profile_data["login"] == account["login"]
    assert row.expires_at is not None and row.refresh_token_enc is not None
    requests = (await gh.get("/_control/requests")).json()
    token_requests = [entry for entry in requests if entry["kind"] == "token"]
    assert token_requests[-1]["form"]["client_secret"] == "broker-secret"  # client_secret_post
    assert token_requests[-1]["accept"] == "application/json"


async def test_tokens_that_never_expire_are_stored_without_expiry(provider_broker, gh):
    runtime, client = provider_broker
    account = _account()
    await gh.post("/_control/user", json=account)
    await gh.post("/_control/token_mode", json={"mode": "non_expiring"})
    await login(client, provider="github")
    row = await _link_row(runtime, "github", str(account["id"]))
    assert row is not None and row.expires_at is None and row.refresh_token_enc is None


async def test_an_account_without_a_verified_email_signs_in_unverified(provider_broker, gh):
    runtime, client = provider_broker
    address = unique_email("unverified")
    account = _account(
        email=address,  # a public profile email is no proof either
        emails=[{"email": address, "primary": True, "verified": False, "visibility": "public"}],
    )
    await gh.post("/_control/user", json=account)
    tokens = await login(client, provider="github")
    claims = (
        await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    ).json()
    assert claims.get("email") is None and claims["email_verified"] is False
    row = await _link_row(runtime, "github", str(account["id"]))
    assert row.email is None and row.email_verified is False


async def test_a_verified_address_that_is_not_primary_is_not_used(provider_broker, gh):
    runtime, client = provider_broker
    account = _account(
        emails=[
            {"email": unique_email("p"), "primary": True, "verified": False, "visibility": None},
            {"email": unique_email("s"), "primary": False, "verified": True, "visibility": None},
        ]
    )
    await gh.post("/_control/user", json=account)
    await login(client, provider="github")
    row = await _link_row(runtime, "github", str(account["id"]))
    assert row.email is None and row.email_verified is False


async def _userinfo(client: httpx2.AsyncClient, tokens: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = response.json()
    return claims


async def test_organizations_and_teams_gate_sign_in_and_become_groups(provider_broker, gh):
    runtime, client = provider_broker
    member = _account(orgs=["acme"])
    await gh.post("/_control/user", json=member)
    tokens = await login(client, provider="github-acme", scope="openid profile groups")
    row = await _link_row(runtime, "github-acme", str(member["id"]))
    assert row.profile_data["groups"] == ["acme"]
    # ... released labelled with the provider id, with the `groups` scope, at /userinfo and in
    # ID tokens (the first and the refreshed ones)
    claims = await _userinfo(client, tokens)
    assert claims["groups"] == ["github-acme:acme"]
    assert claims_of(tokens["id_token"])["groups"] == claims["groups"]
    refreshed = (await refresh(client, tokens["refresh_token"])).json()
    assert claims_of(refreshed["id_token"])["groups"] == claims["groups"]
    authorize_requests = (await gh.get("/_control/authorize_requests")).json()
    assert "read:org" in authorize_requests[-1]["scope"].split()

    via_team = _account(orgs=["partners"], teams=[{"org": "partners", "slug": "reviewers"}])
    await gh.post("/_control/user", json=via_team)
    team_tokens = await login(client, provider="github-acme", scope="openid profile groups")
    assert (await _userinfo(client, team_tokens))["groups"] == ["github-acme:partners/reviewers"]

    outsider = _account(orgs=["elsewhere"])
    await gh.post("/_control/user", json=outsider)
    result = await authorize(client, provider="github-acme")
    assert result.params["error"] == "access_denied"
    assert await _link_row(runtime, "github-acme", str(outsider["id"])) is None


async def test_organizations_and_teams_outside_the_allow_lists_are_not_released(
    provider_broker, gh
):
    """docs/security.md "Groups are labelled by provider": anyone can create an organization named
    `admins`."""
    runtime, client = provider_broker
    member = _account(
        orgs=["Acme", "admins", "partners"],
        teams=[
            {"org": "acme", "slug": "platform"},  # in an allowed organization, not allowed itself
            {"org": "admins", "slug": "reviewers"},
            {"org": "Partners", "slug": "Reviewers"},  # GitHub compares without case
        ],
    )
    await gh.post("/_control/user", json=member)
    tokens = await login(client, provider="github-acme", scope="openid profile groups")
    expected = ["github-acme:acme", "github-acme:partners/reviewers"]  # spelled as configured
    assert (await _userinfo(client, tokens))["groups"] == expected
    row = await _link_row(runtime, "github-acme", str(member["id"]))
    assert row.profile_data["groups"] == ["acme", "partners/reviewers"]


async def test_a_github_provider_without_allow_lists_releases_no_groups(provider_broker, gh):
    runtime, client = provider_broker
    member = _account(orgs=["acme"], teams=[{"org": "acme", "slug": "platform"}])
    await gh.post("/_control/user", json=member)
    tokens = await login(client, provider="github", scope="openid profile groups")
    assert "groups" not in await _userinfo(client, tokens)
    assert "groups" not in claims_of(tokens["id_token"])
    row = await _link_row(runtime, "github", str(member["id"]))
    assert row.profile_data["groups"] == []
    requests = [entry["path"] for entry in (await gh.get("/_control/requests")).json()]
    assert not any(path.endswith(("/user/orgs", "/user/teams")) for path in requests)


async def test_github_errors_sent_with_status_200_fail_the_sign_in_cleanly(provider_broker, gh):
    """GitHub answers a bad code with HTTP 200 and an `error` field: still a failed sign-in."""
    runtime, client = provider_broker
    account = _account()
    await gh.post("/_control/user", json=account)
    _, challenge = pkce_pair()
    start = await client.get(
        "/auth/oauth2/github/login",
        params={
            "response_type": "code",
            "client_id": "web",
            "redirect_uri": "http://127.0.0.1:3000/callback",
            "scope": "openid email",
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    async with httpx2.AsyncClient() as browser:
        upstream = await browser.get(start.headers["location"])
    callback = query_of(upstream.headers["location"])
    answer = await client.get(
        "/auth/oauth2/github/callback", params={"code": "forged", "state": callback["state"]}
    )
    assert answer.status_code == 302
    assert query_of(answer.headers["location"])["error"] == "server_error"
    assert await _link_row(runtime, "github", str(account["id"])) is None


async def test_a_step_up_request_is_refused_because_github_asserts_no_auth_time(
    provider_broker, gh
):
    _, client = provider_broker
    await gh.post("/_control/user", json=_account())
    for extra in ({"prompt": "login"}, {"max_age": "0"}):
        result = await authorize(client, provider="github", extra=extra)
        assert result.params["error"] == "login_required", extra
