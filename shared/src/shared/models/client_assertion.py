"""``client_assertions``: the ``jti`` of every ``private_key_jwt`` client assertion accepted,
until it expires, so none is accepted twice (RFC 7523 §3 item 7; docs/security.md "Client
assertions")."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class ClientAssertion(Base):
    __tablename__ = "client_assertions"

    # SHA-256 of the client id and the jti (each client's jti values are its own; a jti is
    # whatever the client chose, up to the parameter cap, so its hash is the key).
    jti_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    # The assertion's exp plus the clock leeway: until then it could still be presented.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
