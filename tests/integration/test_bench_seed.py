"""The refresh benchmark's seed: bulk-inserted sessions are the rows a login makes, and the
broker rotates their tokens (otherwise ``make bench`` would measure something else)."""

from __future__ import annotations

import datetime as dt

import pytest
from shared.auth_sessions import create_session
from shared.crypto.opaque import token_hash
from shared.db.tables import REFRESH_TOKENS as TOKENS
from shared.db.tables import SESSIONS
from shared.refresh_rotation.hot_path import rotate_on_hot_path
from sqlalchemy import select

from bench.seed import CLIENT_ID, PROVIDER, REFRESH_TTL, SCOPE, seed_refresh_tokens

pytestmark = pytest.mark.integration


def _shape(row: dict[str, object]) -> dict[str, object]:
    """A row with its identities and timestamps replaced by whether they are set."""
    return {
        name: (value is not None)
        if name in ("id", "user_id", "session_id", "token_hash") or isinstance(value, dt.datetime)
        else value
        for name, value in row.items()
    }


async def test_seeded_sessions_are_what_create_session_writes_and_rotate(database_url, runtime):
    tokens = await seed_refresh_tokens(database_url, 3, batch_size=2)
    assert len(set(tokens)) == 3
    async with runtime.engine.begin() as connection:
        seeded = (
            await connection.execute(
                select(TOKENS, SESSIONS)
                .join(SESSIONS, SESSIONS.c.id == TOKENS.c.session_id)
                .where(TOKENS.c.token_hash == token_hash(tokens[0]))
            )
        ).one()
        now = dt.datetime.now(dt.UTC)
        made = await create_session(
            connection,
            user_id=seeded.user_id,
            client_id=CLIENT_ID,
            provider=PROVIDER,
            profile_id=None,
            scope=SCOPE,
            auth_time=now,
            now=now,
            refresh_ttl=REFRESH_TTL,
        )
        reference = (
            await connection.execute(
                select(TOKENS, SESSIONS)
                .join(SESSIONS, SESSIONS.c.id == TOKENS.c.session_id)
                .where(TOKENS.c.token_hash == token_hash(made.refresh_token))
            )
        ).one()
        await connection.rollback()
    assert _shape(dict(seeded._mapping)) == _shape(dict(reference._mapping))
    assert seeded.expires_at - seeded.created_at == dt.timedelta(seconds=REFRESH_TTL)
    assert runtime.hot_path is not None
    for token in tokens:
        grant = await rotate_on_hot_path(
            runtime.hot_path,
            runtime.rotation,
            presented=token,
            client_id=CLIENT_ID,
            now=dt.datetime.now(dt.UTC),
        )
        assert grant is not None and grant.scope == SCOPE
