"""``stat_snapshots``: the admin statistics' current-state counts, as the worker last took them.

Written by ``shared.jobs.stats_snapshot`` (every ``audit_rollup_interval``): live sessions,
active users and failing upstream links cost a few hundred milliseconds to count at 100,000
users, so ``/admin/oauth2/stats`` reads these few rows instead.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class StatSnapshot(Base):
    __tablename__ = "stat_snapshots"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" for all providers
    value: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
