"""browser sessions: which browser signed a session in (RP-initiated logout)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch:
        batch.add_column(sa.Column("browser_hash", sa.LargeBinary(length=32), nullable=True))
        batch.create_index(op.f("ix_auth_sessions_browser_hash"), ["browser_hash"], unique=False)
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("browser_hash", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("browser_hash")
    with op.batch_alter_table("auth_sessions") as batch:
        batch.drop_index(op.f("ix_auth_sessions_browser_hash"))
        batch.drop_column("browser_hash")
