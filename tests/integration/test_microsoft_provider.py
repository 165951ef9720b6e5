"""Microsoft Entra ID sign-in against a local v2.0 + Graph stand-in (docs/security.md "Identity is
provider and subject", "Microsoft tenants and nOAuth", "Auto-linking is off by default").

The stand-in serves discovery only at `/{tenant}/v2.0/.well-known/openid-configuration` (the
hyphen) and advertises the `{tenantid}` issuer template at /common like Entra does; the broker
is configured for `common` with two allowed tenants.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest
from shared.db.tables import AUDIT_TABLE as AUDIT
from shared.db.tables import PROFILES
from shared.runtime import Runtime
from sqlalchemy import func, select

from tests.support.flows import authorize, login
from tests.support.provider_broker import (
    TENANT_A,
    TENANT_B,
    unique_email,
)
from tests.support.waiting import eventually

TENANT_NOT_ALLOWED = "44444444-4444-4444-4444-444444444444"


def _work_account(tid: str = TENANT_A, **overrides: Any) -> dict[str, Any]:
    return {
        "tid": tid,
        "oid": str(uuid.uuid4()),
        "sub": uuid.uuid4().hex,
        "name": "Adele Vance",
        "given_name": "Adele",
        "family_name": "Vance",
        "preferred_username": unique_email("adele"),
        "email": unique_email("adele"),
        "xms_edov": True,
        "photo": "png",
        **overrides,
    }


async def _profile(runtime: Runtime, subject: str) -> Any:
    async with runtime.engine.connect() as connection:
        return (
            await connection.execute(
                select(PROFILES).where(
                    PROFILES.c.provider == "microsoft", PROFILES.c.subject == subject
                )
            )
        ).first()


async def _bearer(client: httpx2.AsyncClient, tokens: dict[str, Any], path: str) -> Any:
    response = await client.get(path, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_two_tenants_sign_in_keyed_on_tid_and_oid_with_a_served_photo(provider_broker, ms):
    runtime, client = provider_broker
    for tid in (TENANT_A, TENANT_B):
        account = _work_account(tid)
        await ms.post("/_control/user", json=account)
        tokens = await login(client, provider="microsoft")
        claims = await _bearer(client, tokens, "/userinfo")
        assert claims["email"] == account["email"] and claims["email_verified"] is True
        row = await _profile(runtime, f"{tid}:{account['oid']}")
        authority = str(ms.base_url).rstrip("/")
        assert row is not None and row.issuer == f"{authority}/{tid}/v2.0"
        assert row.name == "Adele Vance" and row.profile_data["tid"] == tid
        # The Graph photo, fetched with the user's token, is served by the broker itself.
        assert row.avatar_url.startswith("http://127.0.0.1:8000/avatars/")
        assert claims["picture"] == row.avatar_url
        picture = await client.get(row.avatar_url.removeprefix("http://127.0.0.1:8000"))
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert picture.content.startswith(b"\x89PNG")
        assert "immutable" in picture.headers["cache-control"]
        again = await client.get(
            row.avatar_url.removeprefix("http://127.0.0.1:8000"),
            headers={"If-None-Match": picture.headers["etag"]},
        )
        assert again.status_code == 304
    discovery = [r for r in (await ms.get("/_control/requests")).json() if "photo" in r["path"]]
    assert discovery and all(r["authorization"] == "Bearer" for r in discovery)


async def test_no_photo_means_no_picture(provider_broker, ms):
    runtime, client = provider_broker
    account = _work_account(photo=None)
    await ms.post("/_control/user", json=account)
    await login(client, provider="microsoft")
    row = await _profile(runtime, f"{TENANT_A}:{account['oid']}")
    assert row.avatar_url is None


async def test_a_tenant_not_on_the_allow_list_is_refused(provider_broker, ms):
    runtime, client = provider_broker
    account = _work_account(TENANT_NOT_ALLOWED)
    await ms.post("/_control/user", json=account)
    result = await authorize(client, provider="microsoft")
    assert result.params["error"] == "access_denied"
    assert await _profile(runtime, f"{TENANT_NOT_ALLOWED}:{account['oid']}") is None


@pytest.mark.parametrize("mode", ["iss_other_tenant", "iss_template", "iss_v1"])
async def test_an_id_token_whose_iss_does_not_match_its_tid_creates_nothing(
    provider_broker, ms, mode
):
    runtime, client = provider_broker
    account = _work_account()
    await ms.post("/_control/user", json=account)
    await ms.post("/_control/misbehave", json={"mode": mode})
    result = await authorize(client, provider="microsoft")
    assert result.params["error"] == "server_error"
    assert await _profile(runtime, f"{TENANT_A}:{account['oid']}") is None
    # the check holds on every login, not only the first (the reused-claims-options trap)
    await login(client, provider="microsoft")
    await ms.post("/_control/misbehave", json={"mode": mode})
    assert (await authorize(client, provider="microsoft")).params["error"] == "server_error"


async def test_noauth_an_unproven_email_equal_to_an_existing_users_gets_no_access(
    provider_broker, ms, idp
):
    """A tenant admin sets `email` to a victim's address without `xms_edov`: the sign-in gets
    a user of its own, as any unknown address would, and learns nothing about the victim
    (docs/security.md "Auto-linking needs both sides authoritative")."""
    runtime, client = provider_broker
    victim_email = unique_email("victim")
    await idp.post(
        "/_control/user",
        json={"sub": uuid.uuid4().hex, "email": victim_email, "email_verified": True,
              "name": "Victim"},
    )  # fmt: skip
    victim = await login(client, provider="corp")
    victim_sub = (await _bearer(client, victim, "/userinfo"))["sub"]

    attacker = _work_account(email=victim_email.upper(), xms_edov=False)
    await ms.post("/_control/user", json=attacker)
    tokens = await login(client, provider="microsoft")
    claims = await _bearer(client, tokens, "/userinfo")
    assert claims["sub"] != victim_sub
    assert claims["email_verified"] is False
    async with runtime.engine.connect() as connection:
        stored = await _profile(runtime, f"{TENANT_A}:{attacker['oid']}")
        assert str(stored.user_id) == claims["sub"] and stored.email_authoritative is False
        links = await connection.scalar(
            select(func.count()).select_from(PROFILES).where(PROFILES.c.user_id == victim_sub)
        )
        assert links == 1
        refused = await connection.scalar(
            select(func.count())
            .select_from(AUDIT)
            .where(AUDIT.c.action == "link.refused", AUDIT.c.subject == victim_sub)
        )
    assert refused == 0  # nothing matched: the address was never looked up


async def test_a_profile_sync_refreshes_first_and_reads_the_photo_with_the_new_token(
    provider_broker, ms
):
    """Entra describes the user only in ID tokens: a sync refreshes, then fetches the Graph
    photo with the user's fresh access token."""
    runtime, client = provider_broker
    account = _work_account()
    await ms.post("/_control/user", json=account)
    tokens = await login(client, provider="microsoft")
    subject = f"{TENANT_A}:{account['oid']}"
    before = await _profile(runtime, subject)
    requests_before = len((await ms.get("/_control/requests")).json())

    response = await client.post(
        "/auth/oauth2/profile/sync",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert response.status_code == 202
    assert [entry["status"] for entry in response.json()["links"]] == ["queued"]

    async def synced() -> bool:
        row = await _profile(runtime, subject)
        return row.last_synced_at != before.last_synced_at

    await eventually(synced, within=10)
    row = await _profile(runtime, subject)
    assert row.avatar_url == before.avatar_url, "the same photo keeps its URL"
    after = (await ms.get("/_control/requests")).json()[requests_before:]
    paths = [entry["path"] for entry in after]
    token_calls = [i for i, path in enumerate(paths) if path.endswith("/token")]
    photo_calls = [i for i, path in enumerate(paths) if "photo" in path]
    assert token_calls and photo_calls and token_calls[0] < photo_calls[0], paths
