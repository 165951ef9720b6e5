"""``audit_daily_counts``: audit events counted per UTC day, action and provider.

Written by the worker's audit rollup (``shared.jobs.audit_rollup``), which reads each committed
``audit_actions`` row once, in commit order, and adds it here in the transaction that moves its
cursor. The admin statistics read these few rows instead of counting a million audit rows.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base


class AuditDailyCount(Base):
    __tablename__ = "audit_daily_counts"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    action: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The provider the event concerns ("" when none): from the event, else from its session.
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
