"""provider states: providers enabled or disabled at runtime; each provider's latest link error

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HAS_ERROR = sa.text("last_error IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "provider_states",
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("changed_by", sa.String(length=330), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_id"),
    )
    op.create_index(
        "ix_oauth2_tokens_provider_error",
        "oauth2_tokens",
        ["provider", "updated_at"],
        unique=False,
        postgresql_where=HAS_ERROR,
        sqlite_where=HAS_ERROR,
    )


def downgrade() -> None:
    op.drop_index("ix_oauth2_tokens_provider_error", table_name="oauth2_tokens")
    op.drop_table("provider_states")
