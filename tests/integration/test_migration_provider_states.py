"""Revision 0011 (provider states, the links' error index) upgrades and downgrades on both
databases, and up again to exactly the models."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from shared.db.database import create_engine

from tests.integration.test_migrations import _assert_matches_models, _migrate
from tests.support.databases import fresh_database, postgres_server_url

PROVIDER_STATES = sa.table(
    "provider_states",
    sa.column("provider_id", sa.String()),
    sa.column("enabled", sa.Boolean()),
    sa.column("reason", sa.String()),
    sa.column("changed_by", sa.String()),
    sa.column("changed_at", sa.DateTime(timezone=True)),
)


async def _schema(url: str) -> tuple[set[str], set[str]]:
    """The tables, and the indexes of ``oauth2_tokens``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: (
                    set(sa.inspect(sync).get_table_names()),
                    {index["name"] for index in sa.inspect(sync).get_indexes("oauth2_tokens")},
                )
            )
    finally:
        await engine.dispose()


async def _store_a_switch(url: str) -> list[tuple[str, bool]]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(PROVIDER_STATES).values(
                    provider_id="corp",
                    enabled=False,
                    reason="compromised",
                    changed_by="user:test",
                    changed_at=dt.datetime(2026, 12, 8, tzinfo=dt.UTC),
                )
            )
            rows = await connection.execute(
                sa.select(PROVIDER_STATES.c.provider_id, PROVIDER_STATES.c.enabled)
            )
            return [(row[0], bool(row[1])) for row in rows]
    finally:
        await engine.dispose()


async def _assert_0011_upgrades_and_downgrades(url: str) -> None:
    await _migrate(url, "upgrade", "0011")
    tables, indexes = await _schema(url)
    assert "provider_states" in tables and "ix_oauth2_tokens_provider_error" in indexes
    assert await _store_a_switch(url) == [("corp", False)]
    await _migrate(url, "downgrade", "-1")
    tables, indexes = await _schema(url)
    assert "provider_states" not in tables
    assert "ix_oauth2_tokens_provider_error" not in indexes
    await _assert_matches_models(url)  # and up again, to exactly the models


async def test_0011_provider_states_upgrade_and_downgrade_on_postgresql() -> None:
    with postgres_server_url() as server, fresh_database(server) as url:
        await _assert_0011_upgrades_and_downgrades(url)


async def test_0011_provider_states_upgrade_and_downgrade_on_sqlite(tmp_path: Path) -> None:
    await _assert_0011_upgrades_and_downgrades(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")
