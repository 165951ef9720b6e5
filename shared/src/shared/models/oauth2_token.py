"""``oauth2_tokens``: the upstream tokens of one profile link, encrypted at rest (AES-GCM)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    FromClause,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    case,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime

LINK_STATES = ("ok", "refresh_failing", "needs_reauth", "revoked")
HAS_ERROR = text("last_error IS NOT NULL")
# Laid out as PostgreSQL prints it back (``pg_get_indexdef``), so that the check of the
# migrations against these models compares the index's expression as equal.
RENEWAL_END_SQL = (
    "\nCASE\n"
    "    WHEN refresh_token_enc IS NOT NULL THEN refresh_expires_at\n"
    "    ELSE expires_at\n"
    "END"
)


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
        # The admin token listing's ``state=expiring`` / ``expired`` walk live links by when
        # they end: :func:`renewal_end`, written out (the planner matches the expression). An
        # upstream refresh writes ``expires_at``, which another index holds already, so it was
        # no HOT update before this index either. PostgreSQL only, as the email trigram index:
        # a SQLite deployment is small enough to sort its links.
        Index(
            "ix_oauth2_tokens_renewal_end",
            text(f"({RENEWAL_END_SQL})"),
            "id",
            postgresql_where=text("state = 'ok'"),
        ).ddl_if(dialect="postgresql"),
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


def renewal_end(links: FromClause) -> ColumnElement[dt.datetime | None]:
    """When the broker can no longer renew a link: its refresh token's expiry if it holds one,
    else its access token's (NULL when no end is known); :data:`RENEWAL_END_SQL`."""
    return case(
        (links.c.refresh_token_enc.is_not(None), links.c.refresh_expires_at),
        else_=links.c.expires_at,
    )
