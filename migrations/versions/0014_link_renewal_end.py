"""oauth2_tokens: an index of when each live link ends, for the admin listing (PostgreSQL)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:30:00

``GET /admin/oauth2/tokens?state=expiring`` and ``state=expired`` list links by when the broker
can no longer renew them (the refresh token's expiry, or without one the access token's), the
next to end or the last ended first. Without an index of that end every matching link was found
and sorted: 350 ms at 866,000 links. The index is partial, on links in state ``ok``, the only
ones those states cover. SQLite sorts: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_oauth2_tokens_renewal_end"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The expression as the model writes it (shared.models.oauth2_token.RENEWAL_END_SQL), kept
    # here as this revision created it.
    op.execute(
        f"CREATE INDEX {INDEX} ON oauth2_tokens ((CASE WHEN refresh_token_enc IS NOT NULL "
        "THEN refresh_expires_at ELSE expires_at END), id) WHERE state = 'ok'"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX {INDEX}")
