"""``users``: one broker identity, linked to one or more upstream profiles."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, CheckConstraint, Index, String, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import JSONType, UTCDateTime


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        # The admin listing: newest first, keyset-paginated on (created_at, id).
        Index("ix_users_created_at_id", "created_at", "id"),
        # The admin listing's email search (a substring, any case): trigrams (pg_trgm) find the
        # few matching users, and give the planner their number, so it walks the
        # (created_at, id) index when matches are many. PostgreSQL only (SQLite scans).
        Index(
            "ix_users_email_trigrams",
            func.lower(text("email")).label("email_lower"),
            postgresql_using="gin",
            postgresql_ops={"email_lower": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # The claims below are derived from the linked profiles (shared.user_claims); the user owns
    # only the custom display name and the choice of which link's email and avatar are primary.
    display_name: Mapped[str | None] = mapped_column(String(200))
    custom_display_name: Mapped[str | None] = mapped_column(String(200))
    primary_email_provider: Mapped[str | None] = mapped_column(String(64))
    primary_avatar_provider: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    picture: Mapped[str | None] = mapped_column(String(2048))
    preferred_username: Mapped[str | None] = mapped_column(String(200))
    # Group names asserted by the linked providers (GitHub organizations and teams), merged.
    groups: Mapped[list[str] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    # The last sign-in or refresh, as the audit rollup saw it (a worker job, not the hot path):
    # the admin statistics count active users by it.
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
