"""``/admin/oauth2/providers``: the listing (never a secret), health, links, sign-ins, and
switching a provider off and on at runtime (docs/security.md "Switching a provider off").

The upstreams are the real stand-in processes (the OpenID Provider, GitHub). Every test names
its providers with a fresh suffix: the run's database is shared, and a provider switched off
here must never be one another test signs in through.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from shared.audit import record_audit_core
from shared.clock import SystemClock
from shared.crypto.keyring import Keyring
from shared.db.tables import AUDIT_TABLE, SESSIONS
from shared.jobs.stats_snapshot import StatsSnapshotPayload, snapshot_stats
from shared.jobs.upstream_refresh import UpstreamRefreshPayload, refresh_upstream_token
from shared.providers.health import ProviderHealth
from shared.runtime import Runtime
from shared.settings import Settings
from sqlalchemy import select

from tests.conftest import broker_settings, corp_provider
from tests.support.accounts import CONSOLE, corp_profile
from tests.support.flows import authorize, login, query_of, refresh, relative
from tests.support.job_deps import job_deps
from tests.support.links import create_link, mint_grants
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

WEB_CALLBACK = "http://127.0.0.1:3000/callback"
# An /authorize request of web's, asked of the broker directly (RFC 7636 Appendix B's challenge).
AUTHORIZE = {
    "response_type": "code",
    "client_id": "web",
    "redirect_uri": WEB_CALLBACK,
    "scope": "openid",
    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    "code_challenge_method": "S256",
}


@dataclass
class Setup:
    runtime: Runtime
    broker: httpx2.AsyncClient
    admin: dict[str, str]  # the admin's bearer headers
    admin_id: str
    partner: str  # an OIDC provider at the stand-in, signed in through by these tests
    github: str
    retired: str  # disabled in the YAML
    secrets: tuple[str, ...]  # every client secret of the configuration


def partner_config(provider_id: str, upstream: str) -> dict[str, Any]:
    return corp_provider(upstream, id=provider_id, display_name=f"Partner {provider_id}")


def admin_settings(
    database_url: str,
    upstream: str,
    keyring: Keyring,
    admin_subject: str,
    *providers: dict[str, Any],
) -> Settings:
    """``corp``, where ``admin_subject`` is an admin, then ``providers``."""
    return broker_settings(
        database_url,
        upstream,
        keyring,
        admins=[f"corp:{admin_subject}"],
        providers=[corp_provider(upstream), *providers],
    )


@pytest.fixture
async def setup(
    database_url: str,
    upstream_idp: str,
    github_upstream: str,
    keyring: Keyring,
    idp: httpx2.AsyncClient,
    gh: httpx2.AsyncClient,
) -> AsyncIterator[Setup]:
    suffix = uuid.uuid4().hex[:8]
    partner, github, retired = f"partner-{suffix}", f"gh-{suffix}", f"retired-{suffix}"
    github_secret = f"github-secret-{uuid.uuid4().hex}"
    retired_secret = f"retired-secret-{uuid.uuid4().hex}"
    admin_subject = f"admin-{suffix}"
    settings = admin_settings(
        database_url,
        upstream_idp,
        keyring,
        admin_subject,
        {**partner_config(partner, upstream_idp), "link_by_email": True},
        {
            "id": github,
            "type": "github",
            "base_url": github_upstream,
            "api_url": f"{github_upstream}/api/v3",
            "client_id": "broker",
            "client_secret": github_secret,
            "allowed_organizations": ["acme"],
        },
        {
            "id": retired,
            "type": "oidc",
            "issuer": upstream_idp,
            "client_id": "old-client",
            "client_secret": retired_secret,
            "disabled": True,
        },
    )
    async with running_broker(settings) as (runtime, broker):
        await idp.post("/_control/user", json=_person(admin_subject))
        tokens = await login(broker, **CONSOLE)
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        admin_id = (await corp_profile(broker, headers))["user"]["id"]
        yield Setup(
            runtime,
            broker,
            headers,
            admin_id,
            partner,
            github,
            retired,
            ("broker-secret", github_secret, retired_secret),
        )


def _person(subject: str | None = None) -> dict[str, Any]:
    subject = subject or f"user-{uuid.uuid4().hex[:10]}"
    return {
        "sub": subject,
        "email": f"{subject}@corp.example",
        "email_verified": True,
        "name": subject.title(),
    }


async def _sign_in_through(setup: Setup, idp: httpx2.AsyncClient, provider: str) -> Any:
    """A new person signs in to `web` through ``provider``: the token response."""
    await idp.post("/_control/user", json=_person())
    return await login(setup.broker, provider=provider)


async def _entry(setup: Setup, provider: str) -> dict[str, Any]:
    response = await setup.broker.get(f"/admin/oauth2/providers/{provider}", headers=setup.admin)
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()
    return entry


async def _switch(setup: Setup, provider: str, **change: Any) -> httpx2.Response:
    return await setup.broker.patch(
        f"/admin/oauth2/providers/{provider}", json=change, headers=setup.admin
    )


def _recheck(setup: Setup) -> None:
    """Forget the cached probes (they are kept 60 seconds) so the next listing probes again."""
    setup.runtime.provider_health._results.clear()


async def _audit(setup: Setup, action: str, provider: str) -> list[Any]:
    async with setup.runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE).where(AUDIT_TABLE.c.action == action).order_by(AUDIT_TABLE.c.id)
        )
        return [row for row in rows if row.data.get("provider") == provider]


async def test_the_listing_describes_every_configured_provider_and_never_a_secret(
    setup: Setup,
) -> None:
    response = await setup.broker.get("/admin/oauth2/providers", headers=setup.admin)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    for secret in setup.secrets:
        assert secret not in response.text
    by_id = {entry["id"]: entry for entry in response.json()["providers"]}
    assert list(by_id) == ["corp", setup.partner, setup.github, setup.retired]
    partner = by_id[setup.partner]
    assert partner["type"] == "oidc" and partner["display_name"] == f"Partner {setup.partner}"
    assert partner["scopes"] == ["openid", "email", "profile", "offline_access"]
    assert partner["client_id"] == "broker"
    assert partner["linking"] == {"link_by_email": True, "on_upstream_revoked": "revoke_sessions"}
    assert (partner["enabled"], partner["source"], partner["override"]) == (True, "config", None)
    assert partner["health"]["reachable"] is True
    assert [c["name"] for c in partner["health"]["checks"]] == ["discovery", "jwks"]
    assert partner["links"]["total"] == 0
    assert partner["links"]["states"] == {
        "ok": 0,
        "refresh_failing": 0,
        "needs_reauth": 0,
        "revoked": 0,
    }
    assert partner["sign_ins_24h"] == 0 and partner["last_error"] is None
    github = by_id[setup.github]
    assert github["display_name"] == "GitHub"
    assert github["scopes"] == ["read:user", "user:email", "read:org"]
    assert github["restrictions"] == {"allowed_organizations": ["acme"], "allowed_teams": []}
    assert [check["name"] for check in github["health"]["checks"]] == ["api"]
    retired = by_id[setup.retired]
    assert (retired["enabled"], retired["source"], retired["configured_enabled"]) == (
        False,
        "config",
        False,
    )
    assert retired["health"] is None  # never loaded, never probed
    one = await setup.broker.get(f"/admin/oauth2/providers/{setup.github}", headers=setup.admin)
    assert one.status_code == 200

    def described(entry: dict[str, Any]) -> dict[str, Any]:
        return {name: value for name, value in entry.items() if name != "links"}

    assert described(one.json()) == described(github)  # links.as_of: counted now, each time
    for secret in setup.secrets:
        assert secret not in one.text


async def test_health_says_which_upstream_endpoint_fails(
    setup: Setup, idp: httpx2.AsyncClient, gh: httpx2.AsyncClient
) -> None:
    healthy = (await _entry(setup, setup.partner))["health"]
    assert healthy["reachable"] is True and healthy["error"] is None
    assert {(c["name"], c["reachable"]) for c in healthy["checks"]} == {
        ("discovery", True),
        ("jwks", True),
    }

    # Discovery answers, the JWKS it names does not.
    await idp.post("/_control/misbehave", json={"mode": "jwks_503"})
    _recheck(setup)
    jwks_down = (await _entry(setup, setup.partner))["health"]
    assert jwks_down["reachable"] is False
    assert [(c["name"], c["reachable"]) for c in jwks_down["checks"]] == [
        ("discovery", True),
        ("jwks", False),
    ]
    assert "503" in jwks_down["error"] and jwks_down["error"].startswith("jwks")

    # The whole upstream is down: discovery fails, and the JWKS is not even asked for.
    await idp.post("/_control/reset")
    await idp.post("/_control/outage", json={"mode": "unavailable"})
    _recheck(setup)
    down = (await _entry(setup, setup.partner))["health"]
    assert [(c["name"], c["reachable"]) for c in down["checks"]] == [
        ("discovery", False),
        ("jwks", None),
    ]
    listing = await setup.broker.get("/admin/oauth2/providers", headers=setup.admin)
    assert {e["id"]: e["health"]["reachable"] for e in listing.json()["providers"][:2]} == {
        "corp": False,
        setup.partner: False,
    }

    # GitHub: its API's /meta.
    await gh.post("/_control/misbehave", json={"mode": "meta_503"})
    _recheck(setup)
    github = (await _entry(setup, setup.github))["health"]
    assert [(c["name"], c["reachable"]) for c in github["checks"]] == [("api", False)]

    # Back up: the next probe says so.
    await idp.post("/_control/reset")
    _recheck(setup)
    assert (await _entry(setup, setup.partner))["health"]["reachable"] is True


async def test_a_slow_upstream_is_reported_after_the_probe_timeout_not_waited_for(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    setup.runtime.provider_health = ProviderHealth(
        setup.runtime.providers, SystemClock(), timeout=0.5
    )
    await idp.post("/_control/outage", json={"mode": "slow", "delay": 5})

    health = (await _entry(setup, setup.partner))["health"]

    assert health["reachable"] is False
    assert health["checks"][0] == {
        "name": "discovery",
        "reachable": False,
        "error": "discovery: timed out",
    }
    assert health["checks"][1]["reachable"] is None


async def test_sign_ins_of_the_last_24_hours_are_counted(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    for _ in range(2):
        await _sign_in_through(setup, idp, setup.partner)
    async with setup.runtime.engine.begin() as connection:  # a sign-in of yesterday
        await record_audit_core(
            connection,
            action="user.signed_in",
            actor=f"{setup.partner}:someone",
            subject=str(uuid.uuid4()),
            data={"provider": setup.partner},
            now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25),
        )

    entry = await _entry(setup, setup.partner)

    assert entry["sign_ins_24h"] == 2
    listing = await setup.broker.get("/admin/oauth2/providers", headers=setup.admin)
    (listed,) = [e for e in listing.json()["providers"] if e["id"] == setup.partner]
    assert listed["sign_ins_24h"] == 2


async def test_links_are_counted_by_state_with_the_last_upstream_error(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    await _sign_in_through(setup, idp, setup.partner)  # a link whose grant is fine
    async with job_deps(setup.runtime.settings) as deps:
        links = []
        for _ in range(3):
            subject = f"sub-{uuid.uuid4().hex[:12]}"
            (grant,) = await mint_grants(idp, {"sub": subject, "email": f"{subject}@x.example"})
            links.append(
                await create_link(
                    deps.engine,
                    deps.settings.keyring,
                    grant,
                    subject=subject,
                    provider=setup.partner,
                    expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60),
                )
            )
        failing, dead, revoked_by_admin = links
        # The worker's refreshes: the upstream is down for one link, refuses the other's grant.
        await idp.post("/_control/refresh_faults", json={"mode": "unavailable"})
        retry = await refresh_upstream_token(
            UpstreamRefreshPayload(token_id=failing.token_id), deps
        )
        await idp.post("/_control/refresh_faults", json={"mode": "invalid_grant"})
        gone = await refresh_upstream_token(UpstreamRefreshPayload(token_id=dead.token_id), deps)
        assert (retry["status"], gone["status"]) == ("retry", "revoked")
        # An admin's revocation comes last, and is not an error of the upstream.
        deleted = await setup.broker.delete(
            f"/admin/oauth2/tokens/{revoked_by_admin.token_id}", headers=setup.admin
        )
        assert deleted.status_code == 200, deleted.text
        await snapshot_stats(StatsSnapshotPayload(), deps)

    entry = await _entry(setup, setup.partner)

    assert entry["links"]["total"] == 4
    assert entry["links"]["states"] == {
        "ok": 1,
        "refresh_failing": 1,
        "needs_reauth": 0,
        "revoked": 2,
    }
    assert entry["last_error"]["link_state"] == "revoked"
    assert entry["last_error"]["error"] == "invalid_grant"
    listing = await setup.broker.get("/admin/oauth2/providers", headers=setup.admin)
    (listed,) = [e for e in listing.json()["providers"] if e["id"] == setup.partner]
    assert listed["links"] == entry["links"] and listed["last_error"] == entry["last_error"]


async def test_disabling_is_kept_audited_and_refuses_new_sign_ins_until_enabled(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    disabled = await _switch(setup, setup.partner, enabled=False, reason="compromised upstream")

    assert disabled.status_code == 200, disabled.text
    assert disabled.json() == {
        "id": setup.partner,
        "enabled": False,
        "source": "runtime",
        "changed": True,
        "revoked_sessions": 0,
    }
    entry = await _entry(setup, setup.partner)
    assert (entry["enabled"], entry["source"], entry["configured_enabled"]) == (
        False,
        "runtime",
        True,
    )
    assert entry["override"]["reason"] == "compromised upstream"
    assert entry["override"]["changed_by"] == f"user:{setup.admin_id}"
    (event,) = await _audit(setup, "provider.disabled", setup.partner)
    assert event.actor == f"user:{setup.admin_id}"
    assert event.data["reason"] == "compromised upstream" and event.data["was_enabled"] is True

    # A relying party sending the browser through it gets the error, nothing goes upstream.
    await idp.post("/_control/user", json=_person())
    refused = await authorize(setup.broker, provider=setup.partner)
    assert refused.location.startswith(WEB_CALLBACK)
    assert refused.params["error"] == "temporarily_unavailable"
    assert refused.params["state"] == refused.state and refused.params["iss"]
    assert len(refused.hops) == 1
    public = await setup.broker.get("/auth/oauth2/providers")
    (listed,) = [e for e in public.json()["providers"] if e["id"] == setup.partner]
    assert listed["status"] == "disabled" and listed["login_url"] is None

    # The same change again changes nothing and audits nothing.
    again = await _switch(setup, setup.partner, enabled=False, reason="compromised upstream")
    assert again.json()["changed"] is False
    assert len(await _audit(setup, "provider.disabled", setup.partner)) == 1

    # Back to the configuration's value: sign-ins work again.
    restored = await _switch(setup, setup.partner, enabled=None)
    assert restored.json() == {
        "id": setup.partner,
        "enabled": True,
        "source": "config",
        "changed": True,
        "revoked_sessions": 0,
    }
    assert (await _entry(setup, setup.partner))["override"] is None
    (enabled,) = await _audit(setup, "provider.enabled", setup.partner)
    assert enabled.data["source"] == "config" and enabled.data["was_enabled"] is False
    assert "access_token" in await _sign_in_through(setup, idp, setup.partner)


async def test_every_replica_follows_the_switch_at_its_next_sign_in(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    async with running_broker(setup.runtime.settings) as (_runtime, replica):
        await idp.post("/_control/user", json=_person())
        assert "code" in (await authorize(replica, provider=setup.partner)).params

        await _switch(setup, setup.partner, enabled=False)  # through the first broker

        await idp.post("/_control/user", json=_person())
        refused = await authorize(replica, provider=setup.partner)
        assert refused.params["error"] == "temporarily_unavailable"
        await _switch(setup, setup.partner, enabled=True)
        assert "code" in (await authorize(replica, provider=setup.partner)).params
    entry = await _entry(setup, setup.partner)
    assert (entry["enabled"], entry["source"]) == (True, "runtime")  # an explicit override


async def test_the_chooser_leaves_a_disabled_provider_out(setup: Setup) -> None:
    chooser = await setup.broker.get("/authorize", params=AUTHORIZE)
    assert chooser.status_code == 200
    assert f"/auth/oauth2/{setup.partner}/login" in chooser.text

    await _switch(setup, setup.partner, enabled=False)

    again = await setup.broker.get(str(chooser.request.url))
    assert again.status_code == 200
    assert f"/auth/oauth2/{setup.partner}/login" not in again.text
    assert f"Partner {setup.partner}" not in again.text
    assert "/auth/oauth2/corp/login" in again.text


async def test_with_every_other_provider_disabled_the_last_one_needs_no_chooser(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> None:
    suffix = uuid.uuid4().hex[:8]
    first, second = f"first-{suffix}", f"second-{suffix}"
    admin_subject = f"admin-{suffix}"
    settings = admin_settings(
        database_url,
        upstream_idp,
        keyring,
        admin_subject,
        partner_config(first, upstream_idp),
        partner_config(second, upstream_idp),
    )
    async with running_broker(settings) as (runtime, broker):
        await idp.post("/_control/user", json=_person(admin_subject))
        admin = {"Authorization": f"Bearer {(await login(broker, **CONSOLE))['access_token']}"}
        # corp serves every other test: only this broker's own providers are switched off.
        for provider in (first, second):
            response = await broker.patch(
                f"/admin/oauth2/providers/{provider}", json={"enabled": False}, headers=admin
            )
            assert response.status_code == 200, response.text
        await idp.post("/_control/user", json=_person())

        result = await authorize(broker, provider=None)

        assert "code" in result.params  # straight to corp, no chooser page
        assert result.hops[0].status_code == 302
        assert result.hops[0].headers["location"].startswith(upstream_idp)
        assert runtime.providers.keys() == {"corp", first, second}


async def test_a_callback_in_flight_is_refused_before_its_code_is_exchanged(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    await idp.post("/_control/user", json=_person())
    start = await setup.broker.get(
        "/authorize", params={**AUTHORIZE, "state": "rp-state", "provider": setup.partner}
    )
    assert start.status_code == 302
    async with httpx2.AsyncClient() as browser_upstream:
        upstream = await browser_upstream.get(start.headers["location"])
    callback = upstream.headers["location"]
    assert f"/auth/oauth2/{setup.partner}/callback?" in callback
    await idp.post("/_control/reset")  # forget the authorization request: count token requests

    await _switch(setup, setup.partner, enabled=False)
    answer = await setup.broker.get(relative(callback))

    assert answer.status_code in (302, 303)
    assert answer.headers["location"].startswith(WEB_CALLBACK)
    error = query_of(answer.headers["location"])
    assert error["error"] == "temporarily_unavailable" and error["state"] == "rp-state"
    assert (await idp.get("/_control/requests")).json() == []  # no code exchange upstream
    # The state is spent: enabling the provider again does not revive that callback.
    await _switch(setup, setup.partner, enabled=None)
    replay = await setup.broker.get(relative(callback))
    assert replay.status_code == 400 and "expired" in replay.text


async def test_linking_through_a_disabled_provider_is_refused(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    tokens = await _sign_in_through(setup, idp, "corp")  # this browser signed in just now
    await _switch(setup, setup.partner, enabled=False)

    result = await authorize(
        setup.broker,
        provider=None,
        start_path=f"/auth/oauth2/{setup.partner}/link",
        extra={"id_token_hint": tokens["id_token"]},
    )

    assert result.params["error"] == "temporarily_unavailable"
    assert result.location.startswith(WEB_CALLBACK)
    profile = await corp_profile(
        setup.broker, {"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert [p["provider"] for p in profile["profiles"]] == ["corp"]


async def test_existing_sessions_live_on_unless_the_admin_revokes_them(
    setup: Setup, idp: httpx2.AsyncClient
) -> None:
    through_partner = await _sign_in_through(setup, idp, setup.partner)
    through_corp = await _sign_in_through(setup, idp, "corp")

    await _switch(setup, setup.partner, enabled=False)
    # Disabling alone: the session it signed in keeps refreshing (the refresh grant does not
    # read the switch).
    kept = await refresh(setup.broker, through_partner["refresh_token"])
    assert kept.status_code == 200, kept.text

    ended = await _switch(setup, setup.partner, enabled=False, revoke_sessions=True)

    assert ended.status_code == 200, ended.text
    assert ended.json()["revoked_sessions"] == 1 and ended.json()["changed"] is False
    refused = await refresh(setup.broker, kept.json()["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert (await refresh(setup.broker, through_corp["refresh_token"])).status_code == 200
    async with setup.runtime.engine.connect() as connection:
        reasons = (
            await connection.execute(
                select(SESSIONS.c.revoked_reason).where(SESSIONS.c.provider == setup.partner)
            )
        ).scalars()
        assert list(reasons) == ["provider_disabled"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "enabled is required"),
        ({"enabled": "no"}, 400, "enabled must be"),
        ({"enabled": False, "colour": "red"}, 400, "unknown field: colour"),
        ({"enabled": True, "revoke_sessions": True}, 400, "revoke_sessions goes with"),
        ({"enabled": False, "revoke_sessions": "yes"}, 400, "revoke_sessions must be"),
        ({"enabled": False, "reason": 7}, 400, "reason must be a string"),
        ({"enabled": False, "reason": "x" * 501}, 400, "at most 500"),
        ({"enabled": False, "reason": "one\nline"}, 400, "one line"),
        ({"enabled": False, "reason": "nul\u0000"}, 400, "one line"),
    ],
)
async def test_a_bad_change_is_a_400_naming_the_field_and_changes_nothing(
    setup: Setup, body: dict[str, Any], status: int, error: str
) -> None:
    response = await _switch(setup, setup.partner, **body)

    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"
    assert error in response.json()["error_description"]
    assert (await _entry(setup, setup.partner))["override"] is None


async def test_unknown_providers_and_the_yamls_disabled_ones_are_refused(setup: Setup) -> None:
    for path in ("nope", "corp%00", "UPPER", "x" * 300):
        got = await setup.broker.get(f"/admin/oauth2/providers/{path}", headers=setup.admin)
        assert got.status_code == 404 and "no provider" in got.text, path
        patched = await setup.broker.patch(
            f"/admin/oauth2/providers/{path}", json={"enabled": False}, headers=setup.admin
        )
        assert patched.status_code == 404, path
    enable = await _switch(setup, setup.retired, enabled=True)
    assert enable.status_code == 409 and "disabled in the configuration" in enable.text
    assert (await _switch(setup, setup.retired, enabled=None)).status_code == 200
    body = await setup.broker.get(
        "/admin/oauth2/providers", params={"limit": "5"}, headers=setup.admin
    )
    assert body.status_code == 400 and "unknown parameter: limit" in body.text
    not_json = await setup.broker.patch(
        f"/admin/oauth2/providers/{setup.partner}", content=b"enabled=false", headers=setup.admin
    )
    assert not_json.status_code == 400


async def test_two_admins_switching_one_provider_at_once_leave_one_state(setup: Setup) -> None:
    answers = await asyncio.gather(
        *(_switch(setup, setup.partner, enabled=bool(n % 2)) for n in range(6))
    )

    assert [answer.status_code for answer in answers] == [200] * 6
    entry = await _entry(setup, setup.partner)
    assert entry["source"] == "runtime"
    events = await _audit(setup, "provider.disabled", setup.partner)
    events += await _audit(setup, "provider.enabled", setup.partner)
    assert len(events) == sum(answer.json()["changed"] for answer in answers)
