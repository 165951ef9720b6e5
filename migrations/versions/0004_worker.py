"""sync worker: refresh backoff, profile sync tracking, audit relay order and cursor

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("oauth2_tokens") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("oauth2_profiles") as batch:
        batch.add_column(
            sa.Column("email_unverified_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("picture_source", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("sync_attempted_at", sa.DateTime(timezone=True), nullable=True))
    # The writing transaction's id on every audit row (PostgreSQL), so the relay can publish in
    # transaction order without skipping rows of transactions still in flight.
    txid_default = sa.text("(pg_current_xact_id()::text)::bigint") if postgres else None
    with op.batch_alter_table("audit_actions") as batch:
        batch.add_column(
            sa.Column("txid", sa.BigInteger(), server_default=txid_default, nullable=True)
        )
    op.create_index("ix_audit_actions_txid_id", "audit_actions", ["txid", "id"])
    op.create_table(
        "audit_relay_cursors",
        sa.Column("stream", sa.String(length=200), nullable=False),
        sa.Column("last_txid", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("published", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_audit_relay_cursors")),
    )


def downgrade() -> None:
    op.drop_table("audit_relay_cursors")
    op.drop_index("ix_audit_actions_txid_id", table_name="audit_actions")
    with op.batch_alter_table("audit_actions") as batch:
        batch.drop_column("txid")
    with op.batch_alter_table("oauth2_profiles") as batch:
        batch.drop_column("sync_attempted_at")
        batch.drop_column("picture_source")
        batch.drop_column("email_unverified_at")
    with op.batch_alter_table("oauth2_tokens") as batch:
        batch.drop_column("next_attempt_at")
