"""The Alembic revisions build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import shared.models  # noqa: F401  (registers the tables)
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from shared.db.base import Base
from shared.db.database import create_engine
from shared.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head_async,
)
from shared.db.types import JSONType

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


# SQLite cannot reflect expression indexes; the trigram index exists on PostgreSQL only.
SQLITE_SKIPS_EXPRESSION_INDEX = pytest.mark.filterwarnings(
    "ignore:autogenerate skipping metadata-specified expression-based index:UserWarning"
)


@SQLITE_SKIPS_EXPRESSION_INDEX
async def test_migrations_match_models_on_sqlite(tmp_path: Path):
    await _assert_matches_models(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")


@pytest.mark.parametrize("table", sorted(Base.metadata.tables))
def test_every_table_has_a_primary_key(table):
    assert Base.metadata.tables[table].primary_key.columns


# The tables as revision 0006 left them (the models describe the newest schema).
USERS_0006 = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email_verified", sa.Boolean()),
    sa.column("status", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("groups", JSONType),
)
PROFILES_0006 = sa.table(
    "oauth2_profiles",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("provider", sa.String()),
    sa.column("provider_type", sa.String()),
    sa.column("subject", sa.String()),
    sa.column("email_verified", sa.Boolean()),
    sa.column("profile_data", JSONType),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


async def _migrate(url: str, step: str, revision: str) -> None:
    await asyncio.to_thread(getattr(command, step), alembic_config(url), revision)


async def _profile_columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("oauth2_profiles")}
            )
    finally:
        await engine.dispose()


async def _seed_0006(url: str) -> uuid.UUID:
    """A user with a Corp SSO link and a GitHub link, groups stored the old way (bare)."""
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    user_id = uuid.uuid4()
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(USERS_0006).values(
                    id=user_id, email_verified=True, status="active", created_at=now,
                    updated_at=now, groups=["acme", "engineering", "other"],
                )
            )  # fmt: skip
            for provider, provider_type, groups in (
                ("corp", "oidc", ["acme", "engineering"]),
                ("github", "github", ["acme", "other"]),
            ):
                await connection.execute(
                    sa.insert(PROFILES_0006).values(
                        id=uuid.uuid4(), user_id=user_id, provider=provider,
                        provider_type=provider_type, subject=f"{provider}-1",
                        email_verified=True, profile_data={"groups": groups, "login": "x"},
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
    finally:
        await engine.dispose()
    return user_id


async def _after_0007(url: str, user_id: uuid.UUID) -> tuple[Any, list[Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            groups = await connection.scalar(
                sa.select(USERS_0006.c.groups).where(USERS_0006.c.id == user_id)
            )
            profiles = (
                await connection.execute(
                    sa.select(
                        PROFILES_0006.c.provider,
                        PROFILES_0006.c.profile_data,
                        sa.column("email_authoritative"),
                    )
                    .select_from(PROFILES_0006)
                    .where(PROFILES_0006.c.user_id == user_id)
                    .order_by(PROFILES_0006.c.provider)
                )
            ).all()
    finally:
        await engine.dispose()
    return groups, profiles


async def _assert_0007_upgrades_and_downgrades(url: str) -> None:
    await _migrate(url, "upgrade", "0006")
    user_id = await _seed_0006(url)
    await _migrate(url, "upgrade", "0007")
    groups, profiles = await _after_0007(url, user_id)
    # Existing links are not authoritative until their next sign-in or sync (the safe side).
    assert [(p.provider, bool(p.email_authoritative)) for p in profiles] == [
        ("corp", False),
        ("github", False),
    ]
    # Groups are labelled with their provider; GitHub's unfiltered ones are dropped until the
    # link's next sign-in or sync stores the allow-listed ones (docs/security.md "Groups are
    # labelled by provider").
    assert groups == ["corp:acme", "corp:engineering"]
    assert profiles[0].profile_data == {"groups": ["acme", "engineering"], "login": "x"}
    assert profiles[1].profile_data == {"login": "x"}
    await _migrate(url, "downgrade", "0006")
    assert "email_authoritative" not in await _profile_columns(url)
    await _assert_matches_models(url)  # and up again, to exactly the models


async def test_0007_email_authority_and_labelled_groups_upgrade_and_downgrade_on_postgresql():
    with postgres_server_url() as server, fresh_database(server) as url:
        await _assert_0007_upgrades_and_downgrades(url)


@SQLITE_SKIPS_EXPRESSION_INDEX
async def test_0007_email_authority_and_labelled_groups_upgrade_and_downgrade_on_sqlite(
    tmp_path: Path,
):
    await _assert_0007_upgrades_and_downgrades(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")


async def _user_indexes(url: str) -> dict[str, str]:
    """Index name -> definition (PostgreSQL's ``pg_indexes``; names only on SQLite)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                rows = await connection.execute(
                    sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users'")
                )
                return {row[0]: row[1] for row in rows}
            return await connection.run_sync(
                lambda sync: {i["name"]: "" for i in sa.inspect(sync).get_indexes("users")}
            )
    finally:
        await engine.dispose()


async def test_0010_adds_and_drops_the_email_trigram_index_on_postgresql():
    with postgres_server_url() as server, fresh_database(server) as url:
        await _migrate(url, "upgrade", "0010")
        definition = (await _user_indexes(url))["ix_users_email_trigrams"]
        assert "USING gin (lower((email)::text) gin_trgm_ops)" in definition
        await _migrate(url, "downgrade", "-1")
        assert "ix_users_email_trigrams" not in await _user_indexes(url)
        await _assert_matches_models(url)  # and up again, to exactly the models


@SQLITE_SKIPS_EXPRESSION_INDEX
async def test_0010_leaves_sqlite_alone(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await _migrate(url, "upgrade", "0010")
    indexes = await _user_indexes(url)
    assert "ix_users_email_trigrams" not in indexes and "ix_users_created_at_id" in indexes
    await _migrate(url, "downgrade", "-1")
    await _assert_matches_models(url)
