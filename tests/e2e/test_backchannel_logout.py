"""Back-channel logout end to end, every party a process on 127.0.0.1: ``broker serve``, the
upstream OpenID Provider stand-in, a relying party that verifies Logout Tokens strictly
(``standins.relying_party``) and, with PostgreSQL and Redis, ``sync-worker``.

A user signs in through the upstream and signs out at ``/logout`` with the ID token as hint.
With Redis the broker only records the ended session: the worker is not running yet, and the
relying party is down when it starts; the token arrives once both are back, exactly once. The
embedded default (SQLite, no Redis) delivers from inside the broker process.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from redis.asyncio import Redis

from tests.support.backchannel import relying_party
from tests.support.flows import login
from tests.support.processes import broker_process, free_port
from tests.support.waiting import eventually
from tests.support.workers import running_worker

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLIENT = {"client_id": "portal", "redirect_uri": "http://127.0.0.1:3000/portal"}


def write_config(path: Path, provider: str, rp: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            providers:
              {provider}
            clients:
              - id: portal
                redirect_uris: [{CLIENT["redirect_uri"]}]
                backchannel_logout_uri: {rp}/backchannel-logout
                backchannel_logout_session_required: true
            """
        ),
        encoding="utf-8",
    )


def corp(upstream: str) -> str:
    return (
        f"- {{id: corp, type: oidc, issuer: '{upstream}', client_id: broker,"
        " client_secret: broker-secret, scopes: [openid, email, profile, offline_access]}"
    )


async def logouts(rp: httpx2.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await rp.get("/_control/logouts")).json()
    return body


async def once_received(rp: httpx2.AsyncClient, sid: str) -> dict[str, Any]:
    """What the relying party saw, once the Logout Token of session ``sid`` has reached it."""

    async def arrived() -> bool:
        return any(token["sid"] == sid for token in (await logouts(rp))["received"])

    await eventually(arrived, within=60)
    return await logouts(rp)


async def sign_in_and_out(issuer: str, **flow: Any) -> dict[str, Any]:
    """A browser signs in to ``portal`` and signs out with its ID token; the token claims."""
    async with httpx2.AsyncClient(base_url=issuer) as browser:
        tokens = await login(browser, **CLIENT, **flow)
        signed_out = await browser.get("/logout", params={"id_token_hint": tokens["id_token"]})
        assert signed_out.status_code == 200, signed_out.text[:300]
        userinfo = await browser.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert userinfo.status_code == 401  # the session has ended at the broker
    async with httpx2.AsyncClient() as http:
        jwks = (await http.get(f"{issuer}/.well-known/jwks.json")).json()
    return dict(jwt.decode(tokens["id_token"], KeySet.import_key_set(jwks)).claims)


@pytest.fixture
async def redis_names(redis_url: str) -> AsyncIterator[dict[str, str]]:
    names = {
        "queue": f"broker:test-jobs:{uuid.uuid4().hex}",
        "stream": f"broker:test-audit:{uuid.uuid4().hex}",
    }
    yield names
    redis: Redis = Redis.from_url(redis_url)
    try:
        keys = [names["queue"], names["stream"]]
        keys += [key async for key in redis.scan_iter(match=f"arq:*{names['queue']}*")]
        await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_a_sign_out_reaches_the_relying_party_once_the_worker_and_the_rp_are_back(
    tmp_path, database_url, redis_url, upstream_idp, keyring, redis_names
):
    async with httpx2.AsyncClient(base_url=upstream_idp) as idp:
        await idp.post("/_control/reset")
        subject = f"bcl-{uuid.uuid4().hex[:10]}"
        await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = tmp_path / "broker.yaml"
    with relying_party(issuer, "portal") as rp_url:
        write_config(config, corp(upstream_idp), rp_url)
        with broker_process(
            config,
            database_url=database_url,
            keyring=keyring,
            port=port,
            cwd=str(ROOT),
            BROKER_REDIS_URL=redis_url,
            BROKER_DB_POOL_SIZE="4",
            BROKER_AUDIT_STREAM=redis_names["stream"],
            BROKER_BACKCHANNEL_LOGOUT_INTERVAL="0.5",
            BROKER_BACKCHANNEL_LOGOUT_RETRY_BASE="0.5",
            BROKER_BACKCHANNEL_LOGOUT_RETRY_MAX="1",
            BROKER_LOG_FORMAT="json",
        ) as broker:
            async with httpx2.AsyncClient(base_url=rp_url) as rp:
                await rp.post("/_control/outage", json={"mode": "unavailable"})
                claims = await sign_in_and_out(issuer)
                assert (await logouts(rp))["refused_while_down"] == 0  # no worker yet

                worker_env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
                worker_env.update(broker.env)
                args = ["--queue", redis_names["queue"]]
                async with running_worker(args, worker_env, tmp_path / "worker.log"):

                    async def refused() -> bool:
                        return (await logouts(rp))["refused_while_down"] >= 1

                    await eventually(refused, within=60)
                    await rp.post("/_control/outage", json={"mode": "none"})
                    seen = await once_received(rp, claims["sid"])

    # The run's database is shared: sessions of `portal` that earlier tests ended are owed
    # their tokens too. This session's arrives exactly once.
    (token,) = [token for token in seen["received"] if token["sid"] == claims["sid"]]
    assert token["sub"] == claims["sub"]
    assert token["aud"] == "portal" and token["alg"] == "RS256"
    assert seen["rejected"] == []


async def test_the_embedded_default_delivers_from_inside_the_broker(tmp_path, keyring):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = tmp_path / "broker.yaml"
    database = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    with relying_party(issuer, "portal") as rp_url:
        write_config(config, "- {id: dev, type: dev}", rp_url)
        with broker_process(
            config,
            database_url=database,
            keyring=keyring,
            port=port,
            args=["--migrate"],
            cwd=str(ROOT),
            BROKER_BACKCHANNEL_LOGOUT_INTERVAL="0.5",
            BROKER_LOG_FORMAT="json",
        ):
            async with httpx2.AsyncClient(base_url=rp_url) as rp:
                claims = await sign_in_and_out(issuer, provider="dev")
                seen = await once_received(rp, claims["sid"])

    (token,) = seen["received"]
    assert token["sid"] == claims["sid"] and token["sub"] == claims["sub"]
    assert seen["rejected"] == []
