"""``audit_actions``: every security-relevant change, written in the transaction that made it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import JSONType, UTCDateTime


class AuditAction(Base):
    __tablename__ = "audit_actions"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # Written on every token rotation: indexes are kept to what the hot path can afford
    # (subject and time); the admin queries add theirs with measurements.
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # uuid4: unique without an index
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(330))  # provider:subject fits
    subject: Mapped[str | None] = mapped_column(String(160), index=True)
    client_id: Mapped[str | None] = mapped_column(String(128))
    ip: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
