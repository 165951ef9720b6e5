"""Two broker processes on one database rotate signing keys together (docs/security.md "JWKS and key
rotation").

A fast schedule (a key signs 10 s, its successor is published 4 s before, JWKS max-age 2 s)
runs through one rotation while both replicas mint tokens. Every token must verify against the
*other* replica's JWKS as a resource server caching it for max-age would hold it, and the
replicas must have created each key exactly once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
import time
import uuid
from pathlib import Path

import httpx2
from joserfc import jwt
from joserfc.jwk import KeySet
from shared.auth_sessions import create_session
from shared.db.base import table
from shared.db.database import create_engine
from shared.db.migrate import upgrade_to_head_async
from shared.models import SigningKey, User
from sqlalchemy import insert, select

from tests.support.databases import fresh_database, postgres_server_url
from tests.support.processes import broker_process, free_port

ROOT = Path(__file__).resolve().parents[2]
INTERVAL, LEAD, MAX_AGE = 10, 4, 2  # 10 s: the shortest rotation interval the settings allow


async def _seed(database_url: str, count: int) -> list[str]:
    engine = create_engine(database_url, pool_size=1)
    now = dt.datetime.now(dt.UTC)
    user_id = uuid.uuid4()
    tokens = []
    async with engine.begin() as connection:
        await connection.execute(
            insert(table(User)).values(
                id=user_id, email="r@example.test", status="active", created_at=now, updated_at=now
            )
        )
        for _ in range(count):
            grant = await create_session(
                connection,
                user_id=user_id,
                client_id="svc",
                provider="dev",
                profile_id=None,
                scope="openid",
                auth_time=now,
                now=now,
                refresh_ttl=3600,
            )
            tokens.append(grant.refresh_token)
    await engine.dispose()
    return tokens


async def _key_rows(database_url: str) -> list[tuple[str, str, dt.datetime]]:
    keys = table(SigningKey)
    engine = create_engine(database_url, pool_size=1)
    async with engine.connect() as connection:
        rows = (await connection.execute(select(keys.c.alg, keys.c.kid, keys.c.activates_at))).all()
    await engine.dispose()
    return [(row.alg, row.kid, row.activates_at) for row in rows]


async def test_two_replicas_agree_on_the_signing_key_through_a_rotation(tmp_path, keyring):
    with postgres_server_url() as server, fresh_database(server) as database_url:
        await upgrade_to_head_async(database_url)
        refresh_tokens = await _seed(database_url, 400)
        config = tmp_path / "broker.yaml"
        config.write_text(
            textwrap.dedent(
                """\
                providers: [{id: dev, type: dev}]
                clients: [{id: svc, redirect_uris: ["http://127.0.0.1:3000/cb"]}]
                """
            )
        )
        ports = [free_port(), free_port()]
        issuer = f"http://127.0.0.1:{ports[0]}"  # one issuer, two replicas behind it
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        replicas = [
            broker_process(
                config,
                database_url=database_url,
                keyring=keyring,
                port=port,
                issuer=issuer,
                BROKER_SIGNING_KEY_ROTATION_INTERVAL=str(INTERVAL),
                BROKER_SIGNING_KEY_LEAD=str(LEAD),
                BROKER_JWKS_MAX_AGE=str(MAX_AGE),
                BROKER_KEY_RELOAD_INTERVAL="0.5",
                BROKER_LOG_LEVEL="WARNING",
            )
            for port in ports
        ]
        with replicas[0], replicas[1]:
            signed_by: list[set[str]] = [set(), set()]
            checked = 0
            cached: list[tuple[float, KeySet]] = [(0.0, KeySet([])), (0.0, KeySet([]))]
            # Run past the first switch (at the first key's start + INTERVAL), and stop well
            # before the second successor is due (INTERVAL - LEAD after that).
            first_start = min(at for alg, _, at in await _key_rows(database_url) if alg == "ES256")
            deadline = first_start.timestamp() + INTERVAL + 2
            async with httpx2.AsyncClient(timeout=10) as http:
                while time.time() < deadline and refresh_tokens:
                    for mint, verify in ((0, 1), (1, 0)):
                        # A resource server behind the other replica, caching JWKS for max-age.
                        fetched_at, jwks = cached[verify]
                        if time.monotonic() - fetched_at >= MAX_AGE:
                            body = (await http.get(f"{urls[verify]}/.well-known/jwks.json")).json()
                            cached[verify] = (time.monotonic(), KeySet.import_key_set(body))
                            jwks = cached[verify][1]
                        response = await http.post(
                            f"{urls[mint]}/token",
                            data={
                                "grant_type": "refresh_token",
                                "refresh_token": refresh_tokens.pop(),
                                "client_id": "svc",
                            },
                        )
                        assert response.status_code == 200, response.text
                        access = response.json()["access_token"]
                        decoded = jwt.decode(access, jwks, algorithms=["ES256"])
                        signed_by[mint].add(decoded.header["kid"])
                        jwt.decode(response.json()["id_token"], jwks, algorithms=["RS256"])
                        checked += 1
                    await asyncio.sleep(0.1)
        assert checked > 50
        keys = await _key_rows(database_url)
        es256 = sorted((at, kid) for alg, kid, at in keys if alg == "ES256")
        # One rotation happened, and each key was created once, not once per replica.
        assert sorted(alg for alg, _, _ in keys) == ["ES256", "ES256", "RS256", "RS256"]
        # The successor signs INTERVAL after the first key, or a little later when the
        # maintenance that published it ran late (it always gets its full LEAD in JWKS).
        gap = (es256[1][0] - es256[0][0]).total_seconds()
        assert INTERVAL <= gap <= INTERVAL + 2
        assert signed_by[0] == signed_by[1] == {kid for _, kid in es256}  # both signed with both
