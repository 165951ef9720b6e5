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
    include_name,
    upgrade_to_head_async,
)
from shared.db.types import JSONType

from tests.support.databases import fresh_database, postgres_server_url


def _diff(sync_connection):
    context = MigrationContext.configure(
        sync_connection, opts={"compare_type": True, "include_name": include_name}
    )
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


SERVICE_TOKEN_TABLES = {"client_assertions", "revoked_access_tokens"}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


# audit_actions as revision 0008 left it.
AUDIT_0008 = sa.table(
    "audit_actions",
    sa.column("id", sa.BigInteger()),
    sa.column("event_id", sa.Uuid()),
    sa.column("action", sa.String()),
    sa.column("actor", sa.String()),
    sa.column("subject", sa.String()),
    sa.column("data", JSONType),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("txid", sa.BigInteger()),
)
# Both sides of a week boundary (Monday 2026-01-05 00:00 UTC) and a week long past.
AUDIT_TIMES = [
    dt.datetime(2026, 1, 4, 23, 59, 59, 999999, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 11, 23, 59, 59, tzinfo=dt.UTC),
]


async def _audit_rows(url: str) -> list[Any]:
    """Every audit row with the table (partition) holding it, by id."""
    engine = create_engine(url)
    holder = "tableoid::regclass::text" if url.startswith("postgresql") else "'audit_actions'"
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.select(
                    AUDIT_0008.c.id,
                    AUDIT_0008.c.txid,
                    AUDIT_0008.c.event_id,
                    AUDIT_0008.c.occurred_at,
                    AUDIT_0008.c.data,
                    sa.literal_column(holder).label("held_by"),
                ).order_by(AUDIT_0008.c.id)
            )
            return list(result.all())
    finally:
        await engine.dispose()


# The revisions that only add tables: 0012 the logout deliveries, 0013 the service tokens'.
NEW_TABLES = {"0012": {"logout_deliveries"}, "0013": SERVICE_TOKEN_TABLES}


async def _assert_tables_come_and_go(url: str, revision: str) -> None:
    await _migrate(url, "upgrade", revision)
    assert await _tables(url) >= NEW_TABLES[revision]
    await _migrate(url, "downgrade", f"{revision}-1")  # the revision before it, whichever that is
    assert not NEW_TABLES[revision] & await _tables(url)
    await _assert_matches_models(url)  # and up again, to exactly the models


@pytest.mark.parametrize("revision", sorted(NEW_TABLES))
async def test_revisions_adding_tables_upgrade_and_downgrade_on_postgresql(revision: str):
    with postgres_server_url() as server, fresh_database(server) as url:
        await _assert_tables_come_and_go(url, revision)


@pytest.mark.parametrize("revision", sorted(NEW_TABLES))
async def test_revisions_adding_tables_upgrade_and_downgrade_on_sqlite(
    tmp_path: Path, revision: str
):
    await _assert_tables_come_and_go(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}", revision)


async def _seed_audit_0008(url: str) -> None:
    engine = create_engine(url)
    try:
        for n, at in enumerate(AUDIT_TIMES):
            async with engine.begin() as connection:  # a transaction each: txids differ
                await connection.execute(
                    sa.insert(AUDIT_0008).values(
                        event_id=uuid.uuid4(), action="test.migrated", actor="test",
                        subject="s", data={"n": n}, occurred_at=at,
                    )
                )  # fmt: skip
    finally:
        await engine.dispose()


async def _insert_now(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(
                sa.insert(AUDIT_0008)
                .values(
                    event_id=uuid.uuid4(), action="test.after", actor="test", data={},
                    occurred_at=dt.datetime.now(dt.UTC),
                )
                .returning(AUDIT_0008.c.id)
            )  # fmt: skip
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def _indexes(url: str, table: str = "users") -> dict[str, str]:
    """Index name -> definition (PostgreSQL's ``pg_indexes``; names only on SQLite)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                rows = await connection.execute(
                    sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table"),
                    {"table": table},
                )
                return {row[0]: row[1] for row in rows}
            return await connection.run_sync(
                lambda sync: {i["name"]: "" for i in sa.inspect(sync).get_indexes(table)}
            )
    finally:
        await engine.dispose()


async def _assert_0009_upgrades_and_downgrades(url: str) -> None:
    postgres = url.startswith("postgresql")
    await _migrate(url, "upgrade", "0008")
    await _seed_audit_0008(url)
    before = await _audit_rows(url)

    await _migrate(url, "upgrade", "0009")
    after = await _audit_rows(url)
    # Every row kept with its id and transaction id: the relay's and the rollup's cursors hold.
    assert [row[:5] for row in after] == [row[:5] for row in before]
    if postgres:
        assert [row.held_by for row in after] == [
            "audit_actions_p20251229",
            "audit_actions_p20260105",
            "audit_actions_p20250526",
            "audit_actions_p20260105",
        ]
    else:
        assert {row.held_by for row in after} == {"audit_actions"}
    # The id sequence carries on, and a row of today has its week (or SQLite's one table).
    new_id = await _insert_now(url)
    assert new_id > max(row.id for row in after)
    today = (await _audit_rows(url))[-1]
    assert today.held_by != "audit_actions_default"

    await _migrate(url, "downgrade", "0008")
    down = await _audit_rows(url)
    assert [row[:5] for row in down] == [row[:5] for row in [*after, today]]
    assert {row.held_by for row in down} == {"audit_actions"}
    assert await _insert_now(url) > new_id
    await _assert_matches_models(url)  # and up again, to exactly the models


async def test_0009_partitions_the_audit_rows_by_week_and_joins_them_again_on_postgresql():
    with postgres_server_url() as server, fresh_database(server) as url:
        await _assert_0009_upgrades_and_downgrades(url)


async def test_0009_keeps_one_audit_table_on_sqlite(tmp_path: Path):
    await _assert_0009_upgrades_and_downgrades(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")


async def test_0010_adds_and_drops_the_email_trigram_index_on_postgresql():
    with postgres_server_url() as server, fresh_database(server) as url:
        await _migrate(url, "upgrade", "0010")
        definition = (await _indexes(url))["ix_users_email_trigrams"]
        assert "USING gin (lower((email)::text) gin_trgm_ops)" in definition
        await _migrate(url, "downgrade", "-1")
        assert "ix_users_email_trigrams" not in await _indexes(url)
        await _assert_matches_models(url)  # and up again, to exactly the models


@SQLITE_SKIPS_EXPRESSION_INDEX
async def test_0010_leaves_sqlite_alone(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await _migrate(url, "upgrade", "0010")
    indexes = await _indexes(url)
    assert "ix_users_email_trigrams" not in indexes and "ix_users_created_at_id" in indexes
    await _migrate(url, "downgrade", "-1")
    await _assert_matches_models(url)


async def test_0014_adds_and_drops_the_link_renewal_end_index_on_postgresql():
    with postgres_server_url() as server, fresh_database(server) as url:
        await _migrate(url, "upgrade", "0014")
        definition = (await _indexes(url, "oauth2_tokens"))["ix_oauth2_tokens_renewal_end"]
        assert (
            "(( CASE WHEN (refresh_token_enc IS NOT NULL) THEN refresh_expires_at ELSE expires_at "
            "END), id)"
        ) in " ".join(definition.split())
        assert definition.endswith("WHERE ((state)::text = 'ok'::text)")
        await _migrate(url, "downgrade", "0013")
        assert "ix_oauth2_tokens_renewal_end" not in await _indexes(url, "oauth2_tokens")
        await _assert_matches_models(url)  # and up again, to exactly the models


@SQLITE_SKIPS_EXPRESSION_INDEX
async def test_0014_leaves_sqlite_alone(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    await _migrate(url, "upgrade", "0014")
    assert "ix_oauth2_tokens_renewal_end" not in await _indexes(url, "oauth2_tokens")
    await _migrate(url, "downgrade", "0013")
    await _assert_matches_models(url)
