"""The embedded default (`make run`): SQLite, the dev provider, the stepwise rotation path."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from broker.app import create_app
from shared.clock import FrozenClock
from shared.db.migrate import upgrade_to_head_async
from shared.db.tables import AUDIT_TABLE, REFRESH_TOKENS
from shared.runtime import Runtime, build_runtime
from shared.settings import make_settings
from sqlalchemy import select

from tests.support.flows import authorize, refresh

# Reuse intervals the tests run with: the default (None: not set), or strict (0).
DEFAULT, STRICT = None, 0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime.now(dt.UTC))


@pytest.fixture(params=[DEFAULT], ids=["default-interval"])
async def sqlite_runtime(
    tmp_path: Path, request: pytest.FixtureRequest, clock: FrozenClock
) -> AsyncIterator[Runtime]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await upgrade_to_head_async(url)
    overrides = {} if request.param is None else {"refresh_reuse_interval": request.param}
    runtime = build_runtime(make_settings(database_url=url, **overrides), clock=clock)
    assert runtime.hot_path is None  # no raw PostgreSQL pool: the portable path runs
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def sqlite_broker(sqlite_runtime: Runtime) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(sqlite_runtime)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        yield client


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


async def _actions(runtime: Runtime) -> list[str]:
    """The refresh-token audit actions, in order."""
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE.c.action)
            .where(AUDIT_TABLE.c.action.like("refresh_token.%"))
            .order_by(AUDIT_TABLE.c.id)
        )
        return list(rows.scalars())


async def _token_rows(runtime: Runtime) -> list[tuple[object, ...]]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            select(REFRESH_TOKENS.c.token_hash, REFRESH_TOKENS.c.expires_at).order_by(
                REFRESH_TOKENS.c.created_at
            )
        )
        return [tuple(row) for row in rows]


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
    onward = await refresh(sqlite_broker, new["refresh_token"], client_id="dev")
    assert onward.status_code == 200
    # The successor was used: the first token presented again is a replay.
    reuse = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert reuse.json()["error"] == "invalid_grant"
    # The family is revoked: the newest token and its access token are dead too.
    newest = onward.json()
    gone = await refresh(sqlite_broker, newest["refresh_token"], client_id="dev")
    assert gone.status_code == 400
    dead = await sqlite_broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {newest['access_token']}"}
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


async def test_embedded_default_answers_a_lost_response_with_the_same_successor(
    sqlite_broker, sqlite_runtime, clock
):
    tokens = await _login(sqlite_broker)
    lost = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert lost.status_code == 200
    rows = await _token_rows(sqlite_runtime)
    for seconds in (1, 20, 30):  # retries, the last 51 s after the rotation
        clock.advance(seconds)
        again = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
        assert again.status_code == 200
        assert again.json()["refresh_token"] == lost.json()["refresh_token"]
    assert await _token_rows(sqlite_runtime) == rows  # no new token; same expiry
    onward = await refresh(sqlite_broker, lost.json()["refresh_token"], client_id="dev")
    assert onward.status_code == 200
    assert await _actions(sqlite_runtime) == [
        "refresh_token.rotated",
        *["refresh_token.retried"] * 3,
        "refresh_token.rotated",
    ]
    # The successor was used: the first token is a replay now, and the family dies.
    replay = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert replay.json()["error"] == "invalid_grant"
    dead = await refresh(sqlite_broker, onward.json()["refresh_token"], client_id="dev")
    assert dead.json()["error"] == "invalid_grant"
    assert (await _actions(sqlite_runtime))[-1] == "refresh_token.reuse_detected"


async def test_embedded_default_treats_a_retry_after_the_window_as_a_replay(
    sqlite_broker, sqlite_runtime, clock
):
    tokens = await _login(sqlite_broker)
    lost = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    clock.advance(61)
    late = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert late.json()["error"] == "invalid_grant"
    dead = await refresh(sqlite_broker, lost.json()["refresh_token"], client_id="dev")
    assert dead.json()["error"] == "invalid_grant"
    assert await _actions(sqlite_runtime) == [
        "refresh_token.rotated",
        "refresh_token.reuse_detected",
    ]


@pytest.mark.parametrize("sqlite_runtime", [STRICT], ids=["strict"], indirect=True)
async def test_strict_embedded_broker_revokes_at_the_second_presentation(
    sqlite_broker, sqlite_runtime
):
    tokens = await _login(sqlite_broker)
    rotated = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert rotated.status_code == 200
    again = await refresh(sqlite_broker, tokens["refresh_token"], client_id="dev")
    assert again.json()["error"] == "invalid_grant"
    dead = await refresh(sqlite_broker, rotated.json()["refresh_token"], client_id="dev")
    assert dead.json()["error"] == "invalid_grant"
    assert await _actions(sqlite_runtime) == [
        "refresh_token.rotated",
        "refresh_token.reuse_detected",
    ]
