"""The embedded default (`make run`): SQLite, the dev provider, the stepwise rotation path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from broker.app import create_app
from shared.db.migrate import upgrade_to_head_async
from shared.runtime import build_runtime
from shared.settings import make_settings

from tests.support.flows import authorize, refresh


@pytest.fixture(params=[0], ids=["strict"])
async def sqlite_broker(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[httpx2.AsyncClient]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await upgrade_to_head_async(url)
    runtime = build_runtime(make_settings(database_url=url, refresh_reuse_interval=request.param))
    assert runtime.hot_path is None  # no raw PostgreSQL pool: the portable path runs
    await runtime.start()
    app = create_app(runtime)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        yield client
    await runtime.stop()


async def _login(client: httpx2.AsyncClient) -> dict[str, str]:
    result = await authorize(client, client_id="dev", provider=None, scope="openid email")
    assert "code" in result.params, result.location
    response = await client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": "http://127.0.0.1:3000/callback",
            "code_verifier": result.verifier,
            "client_id": "dev",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_embedded_default_logs_in_rotates_and_detects_reuse(sqlite_broker):
    tokens = await _login(sqlite_broker)
    rotated = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    userinfo = await sqlite_broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {new['access_token']}"}
    )
    assert userinfo.json()["email"] == "ada@example.com"
    reuse = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert reuse.json()["error"] == "invalid_grant"
    # The family is revoked: the successor and its access token are dead too.
    assert (await refresh(sqlite_broker, new["refresh_token"], client_id="dev")).status_code == 400
    dead = await sqlite_broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {new['access_token']}"}
    )
    assert dead.status_code == 401


async def test_embedded_default_narrows_scope_without_burning_the_token(sqlite_broker):
    tokens = await _login(sqlite_broker)
    wider = await sqlite_broker.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "dev",
            "scope": "openid email profile offline_access",
        },
    )
    assert wider.json()["error"] == "invalid_scope"
    assert (
        await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    ).status_code == 200


@pytest.mark.parametrize("sqlite_broker", [30], ids=["reuse-interval"], indirect=True)
async def test_embedded_default_returns_the_same_successor_within_the_reuse_interval(
    sqlite_broker,
):
    tokens = await _login(sqlite_broker)
    first = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    again = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert first.status_code == again.status_code == 200
    assert again.json()["refresh_token"] == first.json()["refresh_token"]
    onward = await refresh(sqlite_broker, first.json()["refresh_token"], client_id="dev")
    assert onward.status_code == 200
    # The successor was used: the first token is a replay now, and the family dies.
    replay = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert replay.json()["error"] == "invalid_grant"
    dead = await refresh(sqlite_broker, onward.json()["refresh_token"], client_id="dev")
    assert dead.json()["error"] == "invalid_grant"
