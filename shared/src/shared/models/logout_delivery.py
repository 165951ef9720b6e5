"""``logout_deliveries``: one Back-Channel Logout Token owed to a relying party, until it answers.

A row is written, exactly once per ended session of a client with a ``backchannel_logout_uri``,
from the committed ``session.revoked`` audit row (``shared.jobs.logout_outbox``), and kept by the
delivery job (``shared.jobs.backchannel_logout``) until the relying party answers 200 or 204
(``delivered_at``) or the delivery is given up (``failed_at``). ``next_attempt_at`` is NULL once
either happened, so "due" is an index range and "pending" a count of non-NULL values.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class LogoutDelivery(Base):
    __tablename__ = "logout_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # The session.revoked audit event it answers: one delivery per event, whatever happens.
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # The Logout Token's jti: the same in every attempt, so the relying party can recognise a
    # delivery it already acted on.
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # when the session ended
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due (a claimed row: when its claim lapses); NULL when finished.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Why the last attempt failed ("HTTP 503", "ConnectError", ...): never a token.
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
