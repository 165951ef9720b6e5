"""Applying the Alembic migrations programmatically (``broker migrate``, tests, ``make run``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.audit_partitions import is_partition

VERSION_TABLE = "alembic_version"  # alembic's default; migrations/env.py keeps it


def migrations_dir() -> Path:
    """The ``migrations/`` folder: packaged beside ``shared`` in a wheel, else the repo's."""
    here = Path(__file__).resolve()
    packaged = here.parent.parent / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    for parent in here.parents:
        candidate = parent / "migrations"
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the migrations folder could not be found")


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """What schema comparisons look at (Alembic's ``include_name`` hook): everything but the
    partitions of ``audit_actions``, which the models describe as one table and which
    ``shared.jobs.audit_retention`` creates and drops as time passes."""
    if type_ == "table":
        return name is None or not is_partition(name)
    if type_ == "index":
        return not is_partition(str(parent_names.get("table_name") or ""))
    return True


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    """Run ``alembic upgrade head`` (blocking; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_to_head_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, database_url)


@dataclass(frozen=True)
class SchemaRevisions:
    """The revisions this release knows, for comparing a database's ``alembic_version``."""

    head: str | None
    known: frozenset[str]

    @classmethod
    def load(cls) -> SchemaRevisions:
        scripts = ScriptDirectory.from_config(alembic_config("unused"))
        known = frozenset(revision.revision for revision in scripts.walk_revisions())
        return cls(head=scripts.get_current_head(), known=known)

    def state(self, current: str | None) -> str:
        """``current``; ``behind`` (migrations of this release not applied yet); or ``ahead``.

        Ahead means a newer release's migrations ran (they run before its rollout): this
        release still works on that schema, because migrations only add.
        """
        if current == self.head:
            return "current"
        if current is None or current in self.known:
            return "behind"
        return "ahead"


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("unused")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None before the first migration).

    Read directly rather than through alembic's ``MigrationContext``, which logs two INFO lines
    each time: the readiness probes call this every few seconds.
    """
    async with engine.connect() as connection:
        if not await connection.run_sync(lambda sync: inspect(sync).has_table(VERSION_TABLE)):
            return None
        revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        return None if revision is None else str(revision)
