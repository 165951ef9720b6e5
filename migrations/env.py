"""Alembic environment: runs migrations on the async engine for the configured database URL.

The URL comes from ``config.attributes["database_url"]`` (set by ``broker migrate``) or from the
``-x database_url=...`` argument when Alembic is run by hand.
"""

from __future__ import annotations

import asyncio

import shared.models  # noqa: F401  (registers every table on the metadata)
from alembic import context
from shared.db.base import Base
from shared.db.database import create_engine
from shared.db.migrate import include_name
from sqlalchemy.engine import Connection

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get(
        "database_url"
    )
    if not url:
        raise SystemExit("no database URL: run `broker migrate` or pass -x database_url=...")
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_database_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
asyncio.run(_run_online())
