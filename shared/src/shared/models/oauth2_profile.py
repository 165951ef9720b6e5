"""``oauth2_profiles``: an upstream identity ``(provider, subject)`` linked to a broker user."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import JSONType, UTCDateTime


class OAuth2Profile(Base):
    __tablename__ = "oauth2_profiles"
    __table_args__ = (
        # docs/security.md "Identity is provider and subject": the identity is (provider id, stable
        # subject), never the email.
        UniqueConstraint("provider", "subject"),
        UniqueConstraint("user_id", "provider"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(64))
    provider_type: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    issuer: Mapped[str | None] = mapped_column(String(512))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # The provider is the authority for the address (Google only for Gmail or with `hd`, ...),
    # as of the last sign-in or sync. docs/security.md "Auto-linking needs both sides
    # authoritative": an existing link counts
    # for linking by email only while it is authoritative and verified.
    email_authoritative: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    preferred_username: Mapped[str | None] = mapped_column(String(200))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    profile_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When a sync last started, whatever came of it: the scan orders by it, so links that
    # cannot sync (an upstream down, a dead token) do not hold back the others.
    sync_attempted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When a sync saw a verified address become unverified (cleared when it is verified again).
    email_unverified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The upstream picture URL the stored avatar was fetched from (avatar_url is ours).
    picture_source: Mapped[str | None] = mapped_column(String(2048))
