"""back-channel logout: the Logout Tokens owed to relying parties until they answer

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "logout_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logout_deliveries")),
        sa.UniqueConstraint("event_id", name=op.f("uq_logout_deliveries_event_id")),
        sa.UniqueConstraint("jti", name=op.f("uq_logout_deliveries_jti")),
    )
    for column in ("client_id", "session_id", "next_attempt_at"):
        op.create_index(f"ix_logout_deliveries_{column}", "logout_deliveries", [column])


def downgrade() -> None:
    for column in ("next_attempt_at", "session_id", "client_id"):
        op.drop_index(f"ix_logout_deliveries_{column}", table_name="logout_deliveries")
    op.drop_table("logout_deliveries")
