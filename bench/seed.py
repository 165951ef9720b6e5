"""Seed data for the refresh-grant benchmark: one user and N sessions with fresh refresh tokens.

Sessions and tokens are inserted in bulk (a benchmark needs 100,000 or more) with the columns
``create_session`` writes, which a test of the seed checks against; each session's first refresh
token is returned in plain text (the database keeps only its hash), ready to be written one per
line for the wrk script.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.database import create_engine
from shared.db.tables import REFRESH_TOKENS, SESSIONS, USERS
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

CLIENT_ID = "bench"
PROVIDER = "dev"
SCOPE = "openid email profile"
REFRESH_TTL = 30 * 86400


async def _insert_user(engine: AsyncEngine, now: dt.datetime) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(USERS).values(
                id=user_id,
                display_name="Bench User",
                email="bench-user@example.test",
                email_verified=True,
                picture=None,
                preferred_username="bench-user",
                status="active",
                created_at=now,
                updated_at=now,
                last_login_at=now,
            )
        )
    return user_id


async def _create_sessions(
    engine: AsyncEngine, user_id: uuid.UUID, count: int, now: dt.datetime
) -> list[str]:
    """``count`` sessions in one transaction, two multi-row INSERTs; their refresh tokens."""
    tokens = [new_opaque_token() for _ in range(count)]
    session_ids = [uuid.uuid4() for _ in range(count)]
    expires_at = now + dt.timedelta(seconds=REFRESH_TTL)
    async with engine.begin() as connection:
        await connection.execute(
            insert(SESSIONS),
            [
                {
                    "id": session_id,
                    "user_id": user_id,
                    "client_id": CLIENT_ID,
                    "provider": PROVIDER,
                    "profile_id": None,
                    "scope": SCOPE,
                    "auth_time": now,
                    "created_at": now,
                    "user_agent": None,
                    "ip": None,
                }
                for session_id in session_ids
            ],
        )
        await connection.execute(
            insert(REFRESH_TOKENS),
            [
                {
                    "session_id": session_id,
                    "token_hash": token_hash(token),
                    "created_at": now,
                    "expires_at": expires_at,
                }
                for session_id, token in zip(session_ids, tokens, strict=True)
            ],
        )
    return tokens


async def seed_refresh_tokens(
    database_url: str, count: int, *, batch_size: int = 5000, concurrency: int = 2
) -> list[str]:
    """Insert one user and ``count`` sessions; return their refresh tokens.

    Batches run in separate transactions on ``concurrency`` connections at once. The tables are
    analysed afterwards so the planner sees their real size, as autovacuum would soon after.
    """
    engine = create_engine(database_url, pool_size=concurrency)
    try:
        now = dt.datetime.now(dt.UTC)
        user_id = await _insert_user(engine, now)
        sizes = [min(batch_size, count - start) for start in range(0, count, batch_size)]
        limiter = asyncio.Semaphore(concurrency)

        async def batch(size: int) -> list[str]:
            async with limiter:
                return await _create_sessions(engine, user_id, size, now)

        batches = await asyncio.gather(*(batch(size) for size in sizes))
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE users, auth_sessions, refresh_tokens"))
        return [token for tokens in batches for token in tokens]
    finally:
        await engine.dispose()


def write_tokens(path: Path, tokens: list[str]) -> None:
    """One token per line, as ``refresh.lua`` reads them."""
    path.write_text("".join(f"{token}\n" for token in tokens), encoding="ascii")
