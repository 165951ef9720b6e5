"""The Alembic revisions build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import shared.models  # noqa: F401  (registers the tables)
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from shared.db.base import Base
from shared.db.database import create_engine
from shared.db.migrate import current_revision, head_revision, upgrade_to_head_async

from tests.support.databases import fresh_database, postgres_server_url


def _diff(sync_connection):
    context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


async def _assert_matches_models(url: str) -> None:
    await upgrade_to_head_async(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_diff)
        assert differences == []
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_migrations_match_models_on_postgresql():
    with postgres_server_url() as server, fresh_database(server) as url:
        await _assert_matches_models(url)


async def test_migrations_match_models_on_sqlite(tmp_path: Path):
    await _assert_matches_models(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")


@pytest.mark.parametrize("table", sorted(Base.metadata.tables))
def test_every_table_has_a_primary_key(table):
    assert Base.metadata.tables[table].primary_key.columns
