"""admin listings: users newest first, by (created_at, id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_users_created_at_id", "users", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_users_created_at_id", table_name="users")
