"""The relying parties' schema: a client registered with the broker.

A client is a set of RFC 7591 client-metadata fields. ``grant_types`` says what it may ask the
token endpoint for: the sign-in pair (``authorization_code`` with ``refresh_token``, the
default) and/or service tokens (``client_credentials``, RFC 6749 §4.4: a confidential client
acting on its own behalf, with no user). ``token_endpoint_auth_method`` says how it proves who it
is (OIDC Core §9): a secret (``client_secret_basic``, ``client_secret_post``), an assertion
signed with one of its keys in ``jwks`` (``private_key_jwt``, RFC 7523), or nothing for a
public client (``none``). Every inconsistency stops startup naming the client.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from joserfc.jwk import KeySet
from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings.base import Strict, check_url
from shared.settings.client_keys import import_client_keys

SigningAlg = Literal["ES256", "RS256"]
GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
SECRET_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")
SIGN_IN_GRANTS: tuple[GrantType, ...] = ("authorization_code", "refresh_token")
# Scopes about a signed-in user or acting for one: granted through the code flow only, never in
# a service token, which has no user (docs/security.md "Service tokens").
USER_SCOPES = frozenset({"openid", "email", "profile", "groups", "offline_access", "admin"})
DEFAULT_USER_SCOPES = ("openid", "email", "profile", "groups", "offline_access")
# A confidential client's secret is a shared key, not a password: 32 characters at the least.
MIN_CLIENT_SECRET_LENGTH = 32


class ClientConfig(Strict):
    """A relying party registered with the broker."""

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._~-]+$")]
    name: str | None = None
    secret: SecretStr | None = None
    grant_types: Annotated[tuple[GrantType, ...], Field(min_length=1)] = SIGN_IN_GRANTS
    # None: a client with a secret may send it either way (Basic or in the body), a client
    # with jwks uses private_key_jwt, any other is public (none).
    token_endpoint_auth_method: AuthMethod | None = None
    jwks: dict[str, Any] | None = None
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    audience: tuple[str, ...] | None = None
    # Default: the user scopes for a client that signs users in, none for a service.
    scopes: tuple[str, ...] = DEFAULT_USER_SCOPES
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
        return self.auth_methods == ("none",)

    @property
    def auth_methods(self) -> tuple[AuthMethod, ...]:
        """The client authentication methods this client may use (one, unless it registered
        none and has a secret: then either way of sending it)."""
        if self.token_endpoint_auth_method is not None:
            return (self.token_endpoint_auth_method,)
        if self.secret is not None:
            return SECRET_METHODS
        if self.jwks is not None:
            return ("private_key_jwt",)
        return ("none",)

    @property
    def signs_users_in(self) -> bool:
        return "authorization_code" in self.grant_types

    @property
    def service_scopes(self) -> tuple[str, ...]:
        """The scopes a ``client_credentials`` token may carry."""
        return tuple(scope for scope in self.scopes if scope not in USER_SCOPES)

    @functools.cached_property
    def key_set(self) -> KeySet | None:
        """The ``jwks`` as keys (imported once; checked when the settings loaded)."""
        return import_client_keys(self.jwks) if self.jwks is not None else None

    @model_validator(mode="before")
    @classmethod
    def _default_scopes(cls, data: Any) -> Any:
        # A service (no authorization_code) has no user scopes to default to.
        if isinstance(data, dict) and "scopes" not in data:
            grant_types = data.get("grant_types", SIGN_IN_GRANTS)
            if isinstance(grant_types, list | tuple) and "authorization_code" not in grant_types:
                data = {**data, "scopes": ()}
        return data

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

    @model_validator(mode="after")
    def _grants(self) -> ClientConfig:
        grants = set(self.grant_types)
        if len(grants) != len(self.grant_types):
            raise ValueError(f"client {self.id!r}: grant_types lists a grant twice")
        # The code grant always answers the token pair (docs/decisions.md), so the two go
        # together.
        if ("authorization_code" in grants) != ("refresh_token" in grants):
            raise ValueError(
                f"client {self.id!r}: grant_types has authorization_code and refresh_token "
                "together or neither"
            )
        if self.signs_users_in and not self.redirect_uris:
            raise ValueError(f"client {self.id!r}: redirect_uris is required for sign-in")
        if not self.signs_users_in:
            if self.redirect_uris or self.post_logout_redirect_uris:
                raise ValueError(
                    f"client {self.id!r}: redirect URIs are only for authorization_code clients"
                )
            user_scopes = sorted(set(self.scopes) & USER_SCOPES)
            if user_scopes:
                raise ValueError(
                    f"client {self.id!r}: scope {user_scopes[0]!r} is for signing users in; "
                    "a client_credentials-only client has no user"
                )
        if "client_credentials" in grants and self.is_public:
            # RFC 6749 §4.4: only a client that can authenticate may act on its own behalf.
            raise ValueError(
                f"client {self.id!r}: client_credentials needs a confidential client "
                "(a secret, or jwks with private_key_jwt)"
            )
        return self

    @model_validator(mode="after")
    def _auth_method(self) -> ClientConfig:
        method = self.token_endpoint_auth_method
        has_secret, has_keys = self.secret is not None, self.jwks is not None
        if has_secret and has_keys:
            raise ValueError(f"client {self.id!r}: give either a secret or jwks, not both")
        if method in SECRET_METHODS and not has_secret:
            raise ValueError(f"client {self.id!r}: {method} needs a secret")
        if method == "private_key_jwt" and not has_keys:
            raise ValueError(f"client {self.id!r}: private_key_jwt needs jwks (its public keys)")
        if method == "none" and (has_secret or has_keys):
            raise ValueError(f"client {self.id!r}: a public client (none) has no secret or jwks")
        if has_keys and method not in (None, "private_key_jwt"):
            raise ValueError(f"client {self.id!r}: jwks is for private_key_jwt")
        return self

    @field_validator("jwks")
    @classmethod
    def _key_set(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            import_client_keys(value)  # ValueError names what is wrong
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
