"""Google sign-in against the OIDC double in its Google flavour (docs/security.md "Google hosted
domains").

The double issues a refresh token only for `access_type=offline` on the first consent or with
`prompt=consent`, like Google; `hd` marks Workspace accounts; `iss` may come without a scheme.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
from shared.db.tables import AUDIT_TABLE as AUDIT
from shared.db.tables import LINKS as TOKENS
from shared.db.tables import PROFILES
from shared.runtime import Runtime
from sqlalchemy import select, update

from tests.support.flows import authorize, login
from tests.support.provider_broker import unique_email


async def google_user(google: httpx2.AsyncClient, **claims: Any) -> dict[str, Any]:
    user = {"sub": uuid.uuid4().hex[:21], "email": unique_email("g").replace("example.com",
            "gmail.com"), "email_verified": True, "name": "Gee User", **claims}  # fmt: skip
    await google.post("/_control/user", json=user)
    return user


async def authorize_requests(google: httpx2.AsyncClient) -> list[dict[str, str]]:
    return list((await google.get("/_control/authorize_requests")).json())


async def stored_refresh_token(runtime: Runtime, provider: str, subject: str) -> bytes | None:
    async with runtime.engine.connect() as connection:
        return await connection.scalar(
            select(TOKENS.c.refresh_token_enc)
            .join(PROFILES, PROFILES.c.id == TOKENS.c.profile_id)
            .where(PROFILES.c.provider == provider, PROFILES.c.subject == subject)
        )


async def test_offline_access_asks_for_consent_only_when_no_refresh_token_is_held(
    provider_broker, google
):
    runtime, client = provider_broker
    user = await google_user(google)
    # First sign-in: Google shows consent anyway and returns a refresh token.
    await login(client, provider="google")
    first = await authorize_requests(google)
    assert first[-1]["access_type"] == "offline" and "prompt" not in first[-1]
    assert await stored_refresh_token(runtime, "google", user["sub"]) is not None

    # Later sign-ins return none; the broker keeps the one it has and does not re-prompt.
    await login(client, provider="google")
    assert len(await authorize_requests(google)) == len(first) + 1
    assert "prompt" not in (await authorize_requests(google))[-1]
    assert await stored_refresh_token(runtime, "google", user["sub"]) is not None

    # The broker's refresh token died (revoked at Google, say): the next sign-in goes back once
    # with prompt=consent and gets a new one.
    async with runtime.engine.begin() as connection:
        profile_id = await connection.scalar(
            select(PROFILES.c.id).where(
                PROFILES.c.provider == "google", PROFILES.c.subject == user["sub"]
            )
        )
        await connection.execute(
            update(TOKENS).where(TOKENS.c.profile_id == profile_id).values(state="revoked")
        )
    before = len(await authorize_requests(google))
    await login(client, provider="google")
    requests = (await authorize_requests(google))[before:]
    assert [r.get("prompt") for r in requests] == [None, "consent"]
    async with runtime.engine.connect() as connection:
        state = await connection.scalar(
            select(TOKENS.c.state).where(TOKENS.c.profile_id == profile_id)
        )
    assert state == "ok"


async def test_without_offline_access_there_is_no_access_type_and_no_reprompt(
    provider_broker, google
):
    _runtime, client = provider_broker
    await google_user(google, hd="corp.example", email=unique_email("w").replace(
        "example.com", "corp.example"))  # fmt: skip
    before = len(await authorize_requests(google))
    await login(client, provider="google-corp")
    requests = (await authorize_requests(google))[before:]
    assert len(requests) == 1 and "access_type" not in requests[0]
    assert requests[0]["hd"] == "corp.example"  # the account-chooser hint


async def test_allowed_domains_is_checked_against_hd_not_the_email(provider_broker, google):
    runtime, client = provider_broker
    spoof = await google_user(google, email=unique_email("x").replace("example.com",
                              "corp.example"))  # fmt: skip
    result = await authorize(client, provider="google-corp")
    assert result.params["error"] == "access_denied"
    async with runtime.engine.connect() as connection:
        assert (
            await connection.scalar(select(PROFILES.c.id).where(PROFILES.c.subject == spoof["sub"]))
        ) is None
    await google_user(google, hd="other.example")
    assert (await authorize(client, provider="google-corp")).params["error"] == "access_denied"


async def test_an_id_token_iss_without_the_scheme_is_accepted(provider_broker, google):
    _runtime, client = provider_broker
    await google_user(google)
    await google.post("/_control/google", json={"bare_iss": True})
    tokens = await login(client, provider="google")
    assert tokens["access_token"]


async def test_google_links_by_email_only_where_it_is_the_authority(provider_broker, google, idp):
    runtime, client = provider_broker
    # A Google account created on someone else's (non-Gmail, non-Workspace) address: Google
    # cannot vouch for it, so it is compared with nobody's and gets a user of its own.
    address = unique_email("owner")
    await idp.post("/_control/user", json={"sub": uuid.uuid4().hex, "email": address,
                                            "email_verified": True, "name": "Owner"})  # fmt: skip
    owner = await login(client, provider="corp")
    await google_user(google, email=address)
    other = await login(client, provider="google")
    owner_id = (
        await client.get("/userinfo", headers={"Authorization": f"Bearer {owner['access_token']}"})
    ).json()["sub"]
    other_id = (
        await client.get("/userinfo", headers={"Authorization": f"Bearer {other['access_token']}"})
    ).json()["sub"]
    assert other_id != owner_id
    async with runtime.engine.connect() as connection:
        refused = await connection.scalar(
            select(AUDIT.c.data).where(
                AUDIT.c.action == "link.refused", AUDIT.c.subject == owner_id
            )
        )
    assert refused is None

    # A Gmail address Google verified: Google is its authority, so it links.
    gmail = unique_email("gm").replace("example.com", "gmail.com")
    await idp.post("/_control/user", json={"sub": uuid.uuid4().hex, "email": gmail,
                                            "email_verified": True, "name": "Gm"})  # fmt: skip
    first = await login(client, provider="corp")
    await google_user(google, email=gmail)
    second = await login(client, provider="google")

    async def sub(tokens: dict[str, Any]) -> str:
        response = await client.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        return str(response.json()["sub"])

    assert await sub(first) == await sub(second)
