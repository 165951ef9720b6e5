"""``audit_relay_cursors``: how far each audit reader has got, one row per consumer."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class AuditRelayCursor(Base):
    __tablename__ = "audit_relay_cursors"

    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The last published row's (transaction id, row id); 0, 0 before the first.
    last_txid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    published: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
