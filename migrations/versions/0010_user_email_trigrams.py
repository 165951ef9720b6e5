"""users: a trigram index for the admin listing's email search (PostgreSQL)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 12:30:00

The admin users listing filters by an email substring (``lower(email) LIKE '%…%'``), which no
b-tree serves: at 666,000 users PostgreSQL read the whole table for it (~300 ms). A GIN index of
the address's trigrams (``pg_trgm``, shipped with PostgreSQL and a trusted extension since 13:
the database owner may create it) finds the matching users and tells the planner how many there
are, so it walks the (created_at, id) index instead when they are many (``make bench-scale``).
SQLite keeps scanning the table: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_users_email_trigrams"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(f"CREATE INDEX {INDEX} ON users USING gin (lower(email) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The extension stays: other objects may use it, and it costs nothing unused.
    op.execute(f"DROP INDEX {INDEX}")
