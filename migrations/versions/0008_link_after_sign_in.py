"""link after sign-in: a login state may carry the provider a fresh sign-in goes on to link

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_states") as batch:
        batch.add_column(sa.Column("link_provider", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_states") as batch:
        batch.drop_column("link_provider")
