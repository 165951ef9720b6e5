"""The provider interface and the value types every provider produces."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class UpstreamTokens:
    """What an upstream token endpoint returned (values are secrets: never log them)."""

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    id_token: str | None = None
    expires_at: dt.datetime | None = None
    refresh_expires_at: dt.datetime | None = None
    scope: str | None = None

    def __repr__(self) -> str:
        return f"UpstreamTokens(token_type={self.token_type!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class AvatarImage:
    """A picture the provider only hands out with the user's token (Microsoft Graph)."""

    content: bytes
    content_type: str

    def __repr__(self) -> str:
        return f"AvatarImage({self.content_type}, {len(self.content)} bytes)"


@dataclass(frozen=True)
class UpstreamProfile:
    """A normalized upstream identity: ``(provider id, subject)`` is the key, email is not."""

    subject: str
    issuer: str | None = None
    email: str | None = None
    # The provider says it verified that the user controls the address.
    email_verified: bool = False
    # ... and it is the authority for the address (docs/security.md "Microsoft tenants and nOAuth",
    # "Google hosted domains", "GitHub emails and token expiry", "Auto-linking is off by default"):
    # only then may the email
    # link this identity to an existing user (with the provider's `link_by_email`).
    email_authoritative: bool = False
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    preferred_username: str | None = None
    picture: str | None = None
    avatar: AvatarImage | None = None
    # The provider's picture could not be read just now (an error, not "no picture"): keep the
    # stored one.
    avatar_unavailable: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamLogin:
    profile: UpstreamProfile
    tokens: UpstreamTokens | None


@dataclass(frozen=True)
class LoginStart:
    """Per-login secrets the broker keeps server-side while the browser is upstream."""

    redirect_uri: str
    state: str
    nonce: str
    code_verifier: str
    # Passed through from the relying party (OIDC Core §3.1.2.1) so the upstream re-prompts.
    prompt: str | None = None
    max_age: int | None = None


@dataclass(frozen=True)
class ProbeStep:
    """One upstream endpoint a health probe reads (``shared.providers.health``): its name
    (``discovery``, ``jwks``, GitHub's ``api``) and the read, which raises ``ProviderError``
    when the endpoint does not answer as it must."""

    name: str
    read: Callable[[], Awaitable[None]]


class Provider(Protocol):
    """What the broker needs from an upstream: start a login, finish it, refresh, revoke."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def display_name(self) -> str: ...

    @property
    def reprompts_for_refresh_token(self) -> bool:
        """True when a login that yields no refresh token, while the broker holds no usable one
        for the link, is repeated with ``prompt=consent`` (Google)."""

    @property
    def syncs_through_refresh(self) -> bool:
        """True when fresh profile claims come only with a refresh (Microsoft: the ID token of
        a refresh response is the profile); the profile sync then refreshes first."""

    def probe_steps(self) -> tuple[ProbeStep, ...]:
        """What a health probe reads, in order, each step only once the one before answered
        (the JWKS URL comes from discovery); none for a provider the broker serves itself."""

    async def authorization_url(self, start: LoginStart) -> str:
        """Where to send the browser (PKCE S256, state and nonce included)."""

    async def complete_login(
        self, start: LoginStart, callback_params: Mapping[str, str]
    ) -> UpstreamLogin:
        """Validate the callback, exchange the code and return the verified identity."""

    async def fetch_profile(self, tokens: UpstreamTokens, *, subject: str) -> UpstreamProfile:
        """The identity as the upstream describes it now, read with the user's tokens (profile
        sync); ``ProviderInvalidResponse`` when it is not ``subject``."""

    async def refresh(self, refresh_token: str) -> UpstreamTokens:
        """Use an upstream refresh token; ``ProviderRejected`` means the link is dead."""

    async def revoke(self, *, access_token: str | None, refresh_token: str | None) -> None:
        """Revoke the broker's grant at the upstream where the provider supports it."""

    async def aclose(self) -> None:
        """Close the connections the provider keeps (at shutdown)."""
