"""account linking and avatars: broker-owned profile fields, link logins, stored avatars

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("custom_display_name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("primary_email_provider", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("primary_avatar_provider", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column(
                "groups",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("login_states") as batch:
        batch.add_column(sa.Column("session_id", sa.Uuid(), nullable=True))
    op.create_table(
        "avatars",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_avatars")),
    )


def downgrade() -> None:
    op.drop_table("avatars")
    with op.batch_alter_table("login_states") as batch:
        batch.drop_column("session_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("groups")
        batch.drop_column("primary_avatar_provider")
        batch.drop_column("primary_email_provider")
        batch.drop_column("custom_display_name")
