"""The contract broker: one provider of every type, each pointed at its stand-in process over
real HTTP, run in-process like ``tests/support/provider_broker.py``; and the steps the scenarios
take through it (sign in, find the link, run the worker's jobs on it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from shared.auth_sessions import LINKS
from shared.crypto.keyring import Keyring
from shared.jobs.base import JobDeps, JobResult
from shared.jobs.profile_sync import ProfileSyncPayload, sync_profile
from shared.jobs.provider_slots import ProviderSlots
from shared.jobs.upstream_refresh import UpstreamRefreshPayload, refresh_upstream_token
from shared.runtime import Runtime
from shared.settings import Settings, make_settings
from sqlalchemy import select, update

from tests.contract.drivers import Identity
from tests.support.flows import AuthorizationResult, authorize, exchange, login
from tests.support.links import PROFILES, stored_tokens
from tests.support.provider_broker import BROKER_ISSUER, CLIENT, running_broker

PROVIDER_TIMEOUT = 1.0
"""Seconds the broker waits for an upstream token endpoint: a longer ``hang`` is a timeout."""

CONTRACT_NAME = "Contract User"


def contract_settings(
    database_url: str, keyring: Keyring, upstreams: Mapping[str, str]
) -> Settings:
    """One provider per type, its id the type's name; ``upstreams`` maps types to stand-ins."""
    oidc, google = upstreams["oidc"], upstreams["google"]
    github, microsoft = upstreams["github"], upstreams["microsoft"]
    common = {"timeout": PROVIDER_TIMEOUT, **CLIENT}
    providers: list[dict[str, Any]] = [
        {"id": "oidc", "type": "oidc", "issuer": oidc, "discovery_ttl": 0, **common,
         "scopes": ["openid", "email", "profile", "offline_access"]},
        {"id": "google", "type": "google", "issuer": google, "discovery_ttl": 0,
         "offline_access": True, **common},
        {"id": "github", "type": "github", "base_url": github, "api_url": f"{github}/api/v3",
         **common},
        {"id": "microsoft", "type": "microsoft", "tenant": "common", "authority": microsoft,
         "graph_url": f"{microsoft}/graph", **common},
        {"id": "dev", "type": "dev"},
    ]  # fmt: skip
    return make_settings(
        issuer=BROKER_ISSUER,
        keyring=keyring,
        database_url=database_url,
        db_pool_size=4,
        periodic_jobs=False,
        providers=providers,
        clients=[{"id": "web", "redirect_uris": ["http://127.0.0.1:3000/callback"]}],
    )


@dataclass
class Contract:
    """The running broker, and the steps a scenario takes through it."""

    runtime: Runtime
    broker: httpx2.AsyncClient

    @property
    def deps(self) -> JobDeps:
        """What the worker's jobs get, built from the broker's own resources and providers."""
        runtime = self.runtime
        return JobDeps(
            settings=runtime.settings,
            engine=runtime.engine,
            http=runtime.http,
            clock=runtime.clock,
            providers=runtime.providers,
            revocations=runtime.revocations,
            slots=ProviderSlots.from_settings(runtime.settings),
        )

    async def login(self, provider: str, identity: Identity) -> dict[str, Any]:
        """The broker's code flow through ``provider`` for a public client; the token response.

        Waits for the jobs the sign-in started (the avatar's profile sync) so that they do not
        race the scenario's own."""
        tokens = await login(
            self.broker, provider=provider, dev_identity=(identity.email, CONTRACT_NAME)
        )
        await self.settled()
        return tokens

    async def link_provider(self, signed_in: Mapping[str, Any], provider: str) -> dict[str, Any]:
        """The link flow from the browser that signed in; the token response it ends with."""
        result = await authorize(
            self.broker,
            provider=None,
            start_path=f"/auth/oauth2/{provider}/link",
            extra={"id_token_hint": signed_in["id_token"]},
        )
        assert "code" in result.params, result.location
        response = await exchange(self.broker, result)
        assert response.status_code == 200, response.text
        await self.settled()
        linked: dict[str, Any] = response.json()
        return linked

    async def unlink(self, signed_in: Mapping[str, Any], provider: str) -> dict[str, Any]:
        """``DELETE /auth/oauth2/links/{provider}`` as the signed-in user; the answer."""
        headers = {"Authorization": f"Bearer {signed_in['access_token']}"}
        response = await self.broker.delete(f"/auth/oauth2/links/{provider}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def failed_login(self, provider: str) -> AuthorizationResult:
        """A login that the upstream makes fail: where the broker sent the client."""
        result = await authorize(self.broker, provider=provider)
        assert "code" not in result.params, result.location
        return result

    async def settled(self) -> None:
        """Wait for the jobs the in-process queue runs (tasks named ``job:...``)."""
        jobs = [task for task in asyncio.all_tasks() if task.get_name().startswith("job:")]
        await asyncio.gather(*jobs, return_exceptions=True)

    async def bearer(self, tokens: Mapping[str, Any], path: str) -> dict[str, Any]:
        """GET a broker endpoint with the access token of ``tokens``."""
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        response = await self.broker.get(path, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def broker_refresh(self, tokens: Mapping[str, Any]) -> httpx2.Response:
        """The relying party refreshes the broker session of ``tokens``."""
        return await self.broker.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "web",
            },
        )

    async def profile(self, provider: str, subject: str) -> Any:
        """The stored identity ``(provider, subject)``, or None."""
        async with self.runtime.engine.connect() as connection:
            statement = select(PROFILES).where(
                PROFILES.c.provider == provider, PROFILES.c.subject == subject
            )
            return (await connection.execute(statement)).first()

    async def link(self, provider: str, subject: str) -> Any:
        """The upstream link (tokens and refresh state) of ``(provider, subject)``, or None."""
        async with self.runtime.engine.connect() as connection:
            statement = (
                select(LINKS)
                .join(PROFILES, PROFILES.c.id == LINKS.c.profile_id)
                .where(PROFILES.c.provider == provider, PROFILES.c.subject == subject)
            )
            return (await connection.execute(statement)).first()

    def upstream_tokens(self, link: Any) -> tuple[str | None, str | None]:
        """The link's upstream access and refresh tokens, unsealed."""
        return stored_tokens(link, self.runtime.settings.keyring)

    async def refresh_upstream(self, link: Any) -> JobResult:
        """Make the link due (near its expiry, stored long ago) and run the refresh job on it."""
        now = dt.datetime.now(dt.UTC)
        async with self.runtime.engine.begin() as connection:
            await connection.execute(
                update(LINKS)
                .where(LINKS.c.id == link.id)
                .values(
                    expires_at=now + dt.timedelta(seconds=60),
                    updated_at=now - dt.timedelta(hours=1),
                )
            )
        return await refresh_upstream_token(UpstreamRefreshPayload(token_id=link.id), self.deps)

    async def sync_profile(self, link: Any) -> JobResult:
        """Run the profile sync job on the link's profile."""
        return await sync_profile(ProfileSyncPayload(profile_id=link.profile_id), self.deps)


@asynccontextmanager
async def running_contract(settings: Settings) -> AsyncIterator[Contract]:
    async with running_broker(settings) as (runtime, broker):
        contract = Contract(runtime, broker)
        try:
            yield contract
        finally:
            await contract.settled()
