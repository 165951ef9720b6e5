"""audit partitions: audit_actions partitioned by week on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00

PostgreSQL: ``audit_actions`` becomes a table partitioned by RANGE on ``occurred_at``, one
partition per week plus a default partition (the layout, and why weeks:
``shared.db.audit_partitions``). The rows are copied with their ids and transaction ids, so
the audit relay's and the rollup's cursors stay valid; the id sequence carries on. The weeks
that hold rows, the current one and the next ``WEEKS_AHEAD`` get a partition; the periodic job
creates the following ones. Its primary key becomes ``(id, occurred_at)`` (a partitioned
table's unique keys contain the partition key); the other indexes are the same. The copy
rewrites the table under an exclusive lock, so audited writes wait for it: about 14 s per
million rows (up or down) on a loaded two-core machine.

The downgrade copies the rows back into one table. SQLite keeps one table: nothing changes.
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from shared.db.audit_partitions import (
    PARENT,
    Week,
    create_partition_sql,
    default_partition_sql,
    weeks_ahead,
)

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQUENCE = "audit_actions_id_seq"
NOT_ROTATED = sa.text("action <> 'refresh_token.rotated'")
OLD = "audit_actions_before_0009"


def _rebuild(partitioned: bool) -> None:
    """Move ``audit_actions`` into a new table of the same columns (partitioned or not), rows,
    ids and keys included, keeping its id sequence."""
    bind = op.get_bind()
    op.execute(f"ALTER TABLE {PARENT} RENAME TO {OLD}")
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY NONE")  # survives the old table
    partition_by = " PARTITION BY RANGE (occurred_at)" if partitioned else ""
    op.execute(f"CREATE TABLE {PARENT} (LIKE {OLD} INCLUDING DEFAULTS){partition_by}")
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY {PARENT}.id")
    if partitioned:
        op.execute(default_partition_sql())
        now = bind.scalar(sa.text("SELECT now()"))
        # The Monday of each week that holds rows.
        mondays = "SELECT DISTINCT date_trunc('week', occurred_at AT TIME ZONE 'UTC') FROM "
        held = bind.scalars(sa.text(mondays + OLD))
        weeks = {Week.of(monday.replace(tzinfo=dt.UTC)) for monday in held}
        for week in sorted(weeks | set(weeks_ahead(now))):
            for statement in create_partition_sql(week):
                op.execute(statement)
    op.execute(f"INSERT INTO {PARENT} SELECT * FROM {OLD}")  # noqa: S608
    op.execute(f"DROP TABLE {OLD}")
    key = ["id", "occurred_at"] if partitioned else ["id"]
    op.create_primary_key("pk_audit_actions", PARENT, key)
    _create_indexes()


def _create_indexes() -> None:
    op.create_index("ix_audit_actions_occurred_at", PARENT, ["occurred_at"])
    op.create_index("ix_audit_actions_subject", PARENT, ["subject"])
    op.create_index("ix_audit_actions_txid_id", PARENT, ["txid", "id"])
    for column in ("action", "actor"):
        op.create_index(
            f"ix_audit_actions_{column}_occurred_at_id",
            PARENT,
            [column, "occurred_at", "id"],
            postgresql_where=NOT_ROTATED,
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(partitioned=False)
