"""``login_states``: an upstream login in flight, bound to a browser cookie and one provider."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base
from shared.db.types import UTCDateTime


class LoginState(Base):
    __tablename__ = "login_states"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # docs/security.md "Upstream state and mix-up defence": the upstream `state` and the browser
    # cookie are stored hashed.
    state_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    browser_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    provider: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16), default="login")
    # purpose "link": the user and the browser session that started it (None after a fresh
    # sign-in); purpose "reauth": the user the fresh sign-in must be, when known, and the
    # provider to link once it succeeds (docs/security.md "Linking needs a fresh browser
    # sign-in").
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    link_provider: Mapped[str | None] = mapped_column(String(64))
    # The relying party's authorization request, replayed when the upstream answers.
    client_id: Mapped[str] = mapped_column(String(128))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    client_state: Mapped[str | None] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    response_mode: Mapped[str | None] = mapped_column(String(16))
    prompt: Mapped[str | None] = mapped_column(String(64))
    max_age: Mapped[int | None] = mapped_column(Integer)
    # Towards the upstream: our nonce, and our PKCE verifier (encrypted, row-bound).
    upstream_nonce: Mapped[str] = mapped_column(String(128))
    code_verifier_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
