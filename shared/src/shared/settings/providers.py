"""The upstream identity providers' schemas: one per type (oidc, google, github, microsoft, dev)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from shared.settings.base import ID_PATTERN, Strict, check_url

PROVIDER_TYPES = ("oidc", "google", "github", "microsoft", "dev")


class _ProviderBase(Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    display_name: str | None = None
    disabled: bool = False
    link_by_email: bool = False
    # The name shown when ``display_name`` is not set: the id, or the company's name.
    default_title: ClassVar[str | None] = None

    @property
    def title(self) -> str:
        return self.display_name or self.default_title or self.id


class _UpstreamClient(_ProviderBase):
    """An OAuth 2.0 client registration at an upstream."""

    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr | None = None
    token_endpoint_auth_method: (
        Literal["client_secret_basic", "client_secret_post", "none"] | None
    ) = None
    timeout: Annotated[float, Field(gt=0)] = 10.0
    # The sync worker: at most this many upstream refreshes or syncs at once per worker process,
    # a profile sync this often (seconds; 0: only on demand), and what an upstream's
    # invalid_grant does to the broker sessions signed in through the link: revoke them now,
    # or keep them and answer their refreshes upstream_reauth_required until the user signs in
    # through the provider again.
    refresh_concurrency: Annotated[int, Field(ge=1, le=100)] = 4
    profile_sync_interval: Annotated[int, Field(ge=0)] = 86400
    on_upstream_revoked: Literal["revoke_sessions", "require_reauth"] = "revoke_sessions"

    @property
    def auth_method(self) -> str:
        if self.token_endpoint_auth_method:
            return self.token_endpoint_auth_method
        return "client_secret_basic" if self.client_secret is not None else "none"


class _OpenIDClient(_UpstreamClient):
    """A client of an OpenID Provider found through discovery (oidc, google, microsoft)."""

    scopes: tuple[str, ...] = ("openid", "email", "profile")
    discovery_ttl: Annotated[int, Field(ge=0)] = 3600

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("scopes must include openid")
        return value

    @field_validator("issuer", check_fields=False)
    @classmethod
    def _issuer(cls, value: str) -> str:
        return check_url(value, "issuer")


class OIDCProviderConfig(_OpenIDClient):
    """Any OpenID Connect issuer, configured through discovery."""

    type: Literal["oidc"]
    issuer: str


_DOMAIN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"


class GoogleProviderConfig(_OpenIDClient):
    """Google: OpenID Connect with Google's defaults; ``issuer`` is overridable for tests."""

    type: Literal["google"]
    default_title: ClassVar[str | None] = "Google"
    client_secret: SecretStr
    issuer: str = "https://accounts.google.com"
    # Ask for a refresh token (access_type=offline) and keep it for the worker.
    offline_access: bool = False
    # Google Workspace domains allowed to sign in, checked against the `hd` claim.
    allowed_domains: tuple[Annotated[str, Field(pattern=_DOMAIN)], ...] = ()

    @field_validator("allowed_domains", mode="before")
    @classmethod
    def _lower_domains(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(item).lower() for item in value)
        return value


_ORG = r"^[A-Za-z0-9](-?[A-Za-z0-9]){0,38}$"
_TEAM = r"^[A-Za-z0-9](-?[A-Za-z0-9]){0,38}/[A-Za-z0-9._-]{1,100}$"


class GitHubProviderConfig(_UpstreamClient):
    """GitHub or GitHub Enterprise: OAuth 2.0 (no ID token), identity from the REST API."""

    type: Literal["github"]
    default_title: ClassVar[str | None] = "GitHub"
    client_secret: SecretStr
    base_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    scopes: tuple[str, ...] = ("read:user", "user:email")
    # Members of any of these organizations (or teams, "org/team-slug") may sign in.
    allowed_organizations: tuple[Annotated[str, Field(pattern=_ORG)], ...] = ()
    allowed_teams: tuple[Annotated[str, Field(pattern=_TEAM)], ...] = ()

    @field_validator("base_url", "api_url")
    @classmethod
    def _urls(cls, value: str, info: Any) -> str:
        return check_url(value, info.field_name).rstrip("/")

    @property
    def requested_scopes(self) -> tuple[str, ...]:
        """The scopes plus ``read:org`` when organizations or teams are checked."""
        if (self.allowed_organizations or self.allowed_teams) and "read:org" not in self.scopes:
            return (*self.scopes, "read:org")
        return self.scopes


_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_TENANT = r"^(common|organizations|consumers|[0-9a-fA-F-]{36}|[A-Za-z0-9.-]{1,253})$"


class MicrosoftProviderConfig(_OpenIDClient):
    """Microsoft Entra ID (identity platform v2.0); ``authority`` and ``graph_url`` overridable."""

    type: Literal["microsoft"]
    default_title: ClassVar[str | None] = "Microsoft"
    client_secret: SecretStr
    tenant: Annotated[str, Field(pattern=_TENANT)] = "common"
    # Tenant ids (`tid`) allowed to sign in; empty: any tenant the `tenant` setting admits.
    allowed_tenants: tuple[Annotated[str, Field(pattern=_GUID)], ...] = ()
    authority: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    scopes: tuple[str, ...] = ("openid", "email", "profile", "offline_access", "User.Read")

    @field_validator("authority", "graph_url")
    @classmethod
    def _urls(cls, value: str, info: Any) -> str:
        return check_url(value, info.field_name).rstrip("/")

    @field_validator("allowed_tenants", mode="before")
    @classmethod
    def _lower_tenants(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(item).lower() for item in value)
        return value


class DevProviderConfig(_ProviderBase):
    """A local form: type an email and a name, get signed in. Loopback issuers only."""

    type: Literal["dev"]


ProviderConfig = Annotated[
    OIDCProviderConfig
    | GoogleProviderConfig
    | GitHubProviderConfig
    | MicrosoftProviderConfig
    | DevProviderConfig,
    Field(discriminator="type"),
]
