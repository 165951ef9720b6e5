"""email authority on profiles; users' groups labelled with their provider

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00

``oauth2_profiles.email_authoritative``: whether the provider is the authority for the link's
address, written at every sign-in and profile sync. Existing rows get false (the safe default:
they stop counting for automatic linking by email until their next sign-in or sync).

``users.groups`` are released as ``<provider id>:<group>`` from this release on; the stored
bare names are relabelled here rather than at each user's next sign-in or sync. A GitHub
link's stored groups are dropped: they held every organization and team, and which of them
are allow-listed is configuration, which a migration does not read; the link's next sign-in
or profile sync stores the allow-listed ones again. The downgrade keeps the labelled groups
(the previous release rewrites a user's groups at the next sign-in or sync anyway).
"""

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
PROFILES = sa.table(
    "oauth2_profiles",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("provider", sa.String()),
    sa.column("provider_type", sa.String()),
    sa.column("profile_data", JSON),
)
USERS = sa.table("users", sa.column("id", sa.Uuid()), sa.column("groups", JSON))


def upgrade() -> None:
    with op.batch_alter_table("oauth2_profiles") as batch:
        batch.add_column(
            sa.Column(
                "email_authoritative", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    _label_groups()


def _groups(profile_data: Any) -> list[str]:
    groups = profile_data.get("groups") if isinstance(profile_data, dict) else None
    if not isinstance(groups, list):
        return []
    return [group for group in groups if isinstance(group, str) and group]


def _label_groups() -> None:
    bind = op.get_bind()
    github = bind.execute(
        sa.select(PROFILES.c.id, PROFILES.c.profile_data).where(
            PROFILES.c.provider_type == "github"
        )
    ).all()
    for row in github:
        if isinstance(row.profile_data, dict) and "groups" in row.profile_data:
            kept = {key: value for key, value in row.profile_data.items() if key != "groups"}
            bind.execute(
                sa.update(PROFILES).where(PROFILES.c.id == row.id).values(profile_data=kept)
            )
    with_groups = [
        row.id
        for row in bind.execute(
            sa.select(USERS.c.id, USERS.c.groups).where(USERS.c.groups.is_not(None))
        )
        if row.groups
    ]
    for start in range(0, len(with_groups), 1000):
        batch = with_groups[start : start + 1000]
        labelled: dict[uuid.UUID, set[str]] = {user_id: set() for user_id in batch}
        profiles = bind.execute(
            sa.select(PROFILES.c.user_id, PROFILES.c.provider, PROFILES.c.profile_data).where(
                PROFILES.c.user_id.in_(batch), PROFILES.c.provider_type != "github"
            )
        )
        for profile in profiles:
            labelled[profile.user_id].update(
                f"{profile.provider}:{group}" for group in _groups(profile.profile_data)
            )
        for user_id, groups in labelled.items():
            bind.execute(
                sa.update(USERS).where(USERS.c.id == user_id).values(groups=sorted(groups) or None)
            )


def downgrade() -> None:
    with op.batch_alter_table("oauth2_profiles") as batch:
        batch.drop_column("email_authoritative")
