"""``refresh_tokens``: SHA-256 hashes of a session's opaque refresh tokens, one per rotation."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import LargeBinary, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    # The SHA-256 of the token is the key: one index fewer on the rotation hot path.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    # No foreign key on purpose: PostgreSQL checks one with a FOR KEY SHARE lock on the session
    # row, which on the rotation hot path serialised concurrent refreshes on shared heap pages
    # (measured: 340 -> 2,700 rotations/s). Rows are only inserted with their session (in
    # create_session) or by the rotation statement, whose join proves the session exists.
    # Whatever deletes sessions (housekeeping, user deletion) deletes their tokens with them.
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    # Set when the token is exchanged for its successor; presenting it again is reuse.
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
