"""The ``dev`` provider: a local form where you type an email and a name, and are signed in.

Only for loopback issuers (refused at startup otherwise, docs/security.md "Dev provider is local and
unverified"). Its emails are never
verified and it never auto-links. The "upstream code" is the typed identity sealed with the
keyring (AES-GCM, bound to the login's state), so nothing forged or replayed from another login
is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from urllib.parse import urlencode

from shared.clock import Clock
from shared.crypto.keyring import DecryptionError, Keyring
from shared.providers.base import (
    LoginStart,
    ProbeStep,
    UpstreamLogin,
    UpstreamProfile,
    UpstreamTokens,
)
from shared.providers.errors import ProviderInvalidResponse
from shared.providers.oauth2 import check_callback


class DevProvider:
    def __init__(
        self, *, provider_id: str, display_name: str, issuer: str, keyring: Keyring, clock: Clock
    ) -> None:
        self._clock = clock
        self._id = provider_id
        self._display_name = display_name
        self._issuer = issuer
        self._keyring = keyring

    @property
    def id(self) -> str:
        return self._id

    @property
    def type(self) -> str:
        return "dev"

    @property
    def display_name(self) -> str:
        return self._display_name

    @property
    def reprompts_for_refresh_token(self) -> bool:
        return False

    def probe_steps(self) -> tuple[ProbeStep, ...]:
        return ()  # served by the broker itself

    @property
    def form_url(self) -> str:
        return f"{self._issuer}/auth/oauth2/{self._id}/dev-login"

    async def authorization_url(self, start: LoginStart) -> str:
        return f"{self.form_url}?{urlencode({'state': start.state})}"

    def _aad(self, state: str) -> bytes:
        return b"dev-login:" + self._id.encode() + b":" + hashlib.sha256(state.encode()).digest()

    def issue_code(self, state: str, email: str, name: str) -> str:
        """Seal what the person typed into the code the callback receives."""
        # The person just typed it in: that is when they authenticated.
        authenticated = int(self._clock.now().timestamp())
        payload = json.dumps({"email": email, "name": name, "auth_time": authenticated}).encode()
        sealed = self._keyring.encrypt(payload, self._aad(state))
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    async def complete_login(
        self, start: LoginStart, callback_params: Mapping[str, str]
    ) -> UpstreamLogin:
        code = check_callback(callback_params, expected_issuer=None, iss_required=False)
        try:
            sealed = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
            data = json.loads(self._keyring.decrypt(sealed, self._aad(start.state)))
        except (ValueError, DecryptionError):
            raise ProviderInvalidResponse("the dev login code is not valid") from None
        email = str(data["email"]).strip().lower()
        name = str(data.get("name") or "").strip() or email.split("@")[0]
        profile = UpstreamProfile(
            subject=email,
            issuer=self._issuer,
            email=email,
            # Never treated as verified (docs/security.md "Dev provider is local and unverified").
            email_verified=False,
            name=name,
            preferred_username=email.split("@")[0],
            claims={"email": email, "name": name, "auth_time": data.get("auth_time")},
        )
        return UpstreamLogin(profile=profile, tokens=None)

    @property
    def syncs_through_refresh(self) -> bool:
        return False

    async def fetch_profile(self, tokens: UpstreamTokens, *, subject: str) -> UpstreamProfile:
        raise ProviderInvalidResponse("the dev provider keeps no upstream profile")

    async def refresh(self, refresh_token: str) -> UpstreamTokens:
        raise ProviderInvalidResponse("the dev provider issues no refresh tokens")

    async def revoke(self, *, access_token: str | None, refresh_token: str | None) -> None:
        return None

    async def aclose(self) -> None:
        return None
