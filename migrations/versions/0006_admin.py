"""admin: grants, daily audit counts, stat snapshots, last-seen users, listing indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_ROTATED = sa.text("action <> 'refresh_token.rotated'")


def upgrade() -> None:
    op.create_table(
        "admin_grants",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("granted_by", sa.String(length=330), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "audit_daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "action", "provider"),
    )
    op.create_table(
        "stat_snapshots",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "provider"),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_users_last_seen_at", "users", ["last_seen_at"], unique=False)
    # The audit listing by action or actor: partial indexes that token rotations skip.
    for column in ("action", "actor"):
        op.create_index(
            f"ix_audit_actions_{column}_occurred_at_id",
            "audit_actions",
            [column, "occurred_at", "id"],
            unique=False,
            postgresql_where=NOT_ROTATED,
            sqlite_where=NOT_ROTATED,
        )
    op.create_index(
        "ix_auth_sessions_created_at_id", "auth_sessions", ["created_at", "id"], unique=False
    )
    op.create_index(
        "ix_oauth2_tokens_created_at_id", "oauth2_tokens", ["created_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_oauth2_tokens_created_at_id", table_name="oauth2_tokens")
    op.drop_index("ix_auth_sessions_created_at_id", table_name="auth_sessions")
    for column in ("actor", "action"):
        op.drop_index(f"ix_audit_actions_{column}_occurred_at_id", table_name="audit_actions")
    op.drop_index("ix_users_last_seen_at", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_seen_at")
    op.drop_table("stat_snapshots")
    op.drop_table("audit_daily_counts")
    op.drop_table("admin_grants")
