"""``revoked_access_tokens``: service tokens (``client_credentials``) revoked before their
expiry, by ``jti``, so introspection answers them ``active: false`` (RFC 7009 §2.1).

A user's access token is revoked through its session (``auth_sessions.revoked_at``); a service
token has no session, so its own ``jti`` is kept until the token would have expired anyway.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class RevokedAccessToken(Base):
    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
