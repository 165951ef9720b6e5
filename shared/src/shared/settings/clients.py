"""The relying parties' schema: a client registered with the broker."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings.base import Strict, check_url

SigningAlg = Literal["ES256", "RS256"]
# A confidential client's secret is a shared key, not a password: 32 characters at the least.
MIN_CLIENT_SECRET_LENGTH = 32


class ClientConfig(Strict):
    """A relying party registered with the broker."""

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._~-]+$")]
    name: str | None = None
    secret: SecretStr | None = None
    redirect_uris: Annotated[tuple[str, ...], Field(min_length=1)]
    post_logout_redirect_uris: tuple[str, ...] = ()
    audience: tuple[str, ...] | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile", "groups", "offline_access")
    # OIDC Core §2 (client metadata) and DESIGN: RS256 unless the client registered another;
    # relying parties at their default settings accept nothing else for ID tokens.
    id_token_signed_response_alg: SigningAlg = "RS256"
    # OpenID Connect Back-Channel Logout 1.0 §2.2: where the broker POSTs a Logout Token when a
    # session of this client ends (docs/security.md "Back-channel Logout Tokens"), and whether
    # the client needs its `sid` (the spec's default is false; the broker always sends it).
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False

    @property
    def is_public(self) -> bool:
        return self.secret is None

    @model_validator(mode="after")
    def _strong_secret(self) -> ClientConfig:
        # docs/security.md "Client secrets": a confidential client's secret is at least
        # MIN_CLIENT_SECRET_LENGTH characters; an empty one (a ${VAR} that expanded to nothing)
        # would otherwise make a confidential client that anyone can authenticate as.
        if self.secret is not None:
            length = len(self.secret.get_secret_value())
            if length == 0:
                raise ValueError(
                    f"client {self.id!r}: secret is empty (an unset or empty ${{VAR}}?); "
                    "omit secret for a public client"
                )
            if length < MIN_CLIENT_SECRET_LENGTH:
                raise ValueError(
                    f"client {self.id!r}: secret has {length} characters; "
                    f"at least {MIN_CLIENT_SECRET_LENGTH} are required"
                )
        return self

    @field_validator("backchannel_logout_uri")
    @classmethod
    def _backchannel_logout_uri(cls, value: str | None) -> str | None:
        # The Logout Token travels in the request body: https, unless the RP is on loopback
        # (as for the issuer); §2.2 forbids a fragment.
        if value is None:
            return None
        check_url(value, "backchannel_logout_uri")
        if urlsplit(value).fragment or value.endswith("#"):
            raise ValueError(f"{value!r} must not contain a fragment (Back-Channel Logout §2.2)")
        return value

    @field_validator("redirect_uris", "post_logout_redirect_uris")
    @classmethod
    def _absolute_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            parts = urlsplit(uri)
            if not parts.scheme or (parts.scheme in ("http", "https") and not parts.netloc):
                raise ValueError(f"{uri!r} is not an absolute URI")
            if parts.fragment:
                raise ValueError(f"{uri!r} must not contain a fragment (RFC 6749 §3.1.2)")
        return value
