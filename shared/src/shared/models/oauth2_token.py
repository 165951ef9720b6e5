"""``oauth2_tokens``: the upstream tokens of one profile link, encrypted at rest (AES-GCM)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime

LINK_STATES = ("ok", "refresh_failing", "needs_reauth", "revoked")
HAS_ERROR = text("last_error IS NOT NULL")


class OAuth2Token(Base):
    __tablename__ = "oauth2_tokens"
    __table_args__ = (
        CheckConstraint(
            "state IN ('ok', 'refresh_failing', 'needs_reauth', 'revoked')", name="state"
        ),
        # The admin token listing, newest first (created_at never changes: updates stay HOT).
        Index("ix_oauth2_tokens_created_at_id", "created_at", "id"),
        # The admin providers listing: each provider's latest link error. Partial: a link
        # holds an error only while its refresh fails or after it died (a successful refresh
        # clears it), so the index stays small and most link updates never touch it.
        Index(
            "ix_oauth2_tokens_provider_error",
            "provider",
            "updated_at",
            postgresql_where=HAS_ERROR,
            sqlite_where=HAS_ERROR,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("oauth2_profiles.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(64), index=True)
    # Ciphertexts from shared.crypto.keyring; associated data "oauth2_tokens:{id}:{column}".
    access_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    refresh_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    id_token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_type: Mapped[str | None] = mapped_column(String(32))
    scope: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    refresh_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(20), default="ok", index=True)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
    last_refreshed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # After a transient failure: not before this time (backoff with jitter, Retry-After).
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
