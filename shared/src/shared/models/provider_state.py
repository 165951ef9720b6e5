"""``provider_states``: a provider switched on or off at runtime, over its YAML configuration.

No row: the provider is as the YAML says. A row: an admin enabled or disabled it through the
admin API or the dashboard (``shared.provider_states``); deleting the row returns it to the
YAML's value. A provider that the YAML disables (``disabled: true``) is never loaded, so no row
can switch it on.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime

REASON_LENGTH = 500


class ProviderState(Base):
    __tablename__ = "provider_states"

    provider_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(REASON_LENGTH))
    changed_by: Mapped[str] = mapped_column(String(330))  # the audit actor: user:<admin id>
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
