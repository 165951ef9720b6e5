"""``avatars``: pictures the broker serves itself, one row per content hash."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class Avatar(Base):
    __tablename__ = "avatars"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256, hex
    content_type: Mapped[str] = mapped_column(String(32))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
