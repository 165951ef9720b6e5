"""``authorization_codes``: single-use codes (stored hashed) bound to client, redirect URI, PKCE."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class AuthorizationCode(Base):
    __tablename__ = "authorization_codes"

    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    redirect_uri: Mapped[str] = mapped_column(Text)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    profile_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("oauth2_profiles.id", ondelete="SET NULL")
    )
    provider: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The session the first exchange created; revoked if the code is presented again.
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("auth_sessions.id", ondelete="SET NULL")
    )
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))
    browser_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))  # passed to the session
