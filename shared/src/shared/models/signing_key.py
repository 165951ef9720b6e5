"""``signing_keys``: the broker's JWS keys; the private half is encrypted with the keyring."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import JSONType, UTCDateTime


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Associated data "signing_keys:{kid}:private": a ciphertext moved to another row fails.
    private_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Published in JWKS from created_at; signs from activates_at (publish before sign).
    activates_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Stops signing at retires_at; leaves JWKS at expires_at (after its last token expired).
    retires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
