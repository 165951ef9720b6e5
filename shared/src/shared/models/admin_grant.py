"""``admin_grants``: admins granted with ``broker admins grant`` (bootstrap), beside ``admins:``."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class AdminGrant(Base):
    __tablename__ = "admin_grants"

    # By broker user id only: a grant follows the user, whichever provider they sign in with.
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    granted_by: Mapped[str] = mapped_column(String(330))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
