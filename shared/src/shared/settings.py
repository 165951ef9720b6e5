"""The typed settings object: built once at startup from the environment and the YAML file.

``load_settings(environ)`` is the only place that reads the environment or the config file. Tests
build settings with ``make_settings(**overrides)``. Invalid configuration raises ``ConfigError``
with a message that names the offending setting, so startup fails before the first request.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.config_file import ConfigError, read_config_file
from shared.crypto.keyring import Keyring, KeyringError

__all__ = [
    "ClientConfig",
    "ConfigError",
    "DevProviderConfig",
    "GitHubProviderConfig",
    "GoogleProviderConfig",
    "MicrosoftProviderConfig",
    "OIDCProviderConfig",
    "ProviderConfig",
    "Settings",
    "is_loopback_host",
    "is_loopback_url",
    "load_settings",
    "make_settings",
]

_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
PROVIDER_TYPES = ("oidc", "google", "github", "microsoft", "dev")
SigningAlg = Literal["ES256", "RS256"]
ReuseResponse = Literal["family", "user", "user_and_upstream"]
# A confidential client's secret is a shared key, not a password: 32 characters at the least.
MIN_CLIENT_SECRET_LENGTH = 32


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (bracketed or not) and ``localhost``."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is 127.0.0.0/8, ::1 or ``localhost``."""
    return is_loopback_host(urlsplit(url).hostname or "")


def _check_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback_url(value):
        raise ValueError(f"{field} must use https unless it is a loopback address")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ProviderBase(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    display_name: str | None = None
    disabled: bool = False
    link_by_email: bool = False

    @property
    def title(self) -> str:
        return self.display_name or self.id


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
        return _check_url(value, "issuer")


class OIDCProviderConfig(_OpenIDClient):
    """Any OpenID Connect issuer, configured through discovery."""

    type: Literal["oidc"]
    issuer: str


_DOMAIN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"


class GoogleProviderConfig(_OpenIDClient):
    """Google: OpenID Connect with Google's defaults; ``issuer`` is overridable for tests."""

    type: Literal["google"]
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
        return _check_url(value, info.field_name).rstrip("/")

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
        return _check_url(value, info.field_name).rstrip("/")

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


class ClientConfig(_Strict):
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


def _default_providers() -> list[dict[str, Any]]:
    return [{"id": "dev", "type": "dev", "display_name": "Development login"}]


def _default_clients() -> list[dict[str, Any]]:
    return [
        {
            "id": "dev",
            "name": "Development client",
            "redirect_uris": ["http://127.0.0.1:3000/callback", "http://localhost:3000/callback"],
            "post_logout_redirect_uris": ["http://127.0.0.1:3000/"],
            # The embedded default's one client may ask for the admin scope, so the admin API
            # examples of docs/admin.md work; it is granted only to admins (broker admins grant).
            "scopes": ["openid", "email", "profile", "groups", "offline_access", "admin"],
        }
    ]


class Settings(_Strict):
    """Everything the broker and the worker need to know, validated once."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    issuer: str = "http://127.0.0.1:8000"
    database_url: str = "sqlite+aiosqlite:///./var/broker.db"
    redis_url: str | None = None
    revocation_stream: Annotated[str, Field(min_length=1, max_length=200)] = "broker:revocations"
    audit_stream: Annotated[str, Field(min_length=1, max_length=200)] = "broker:audit"
    audit_stream_maxlen: Annotated[int, Field(ge=1000)] = 1_000_000
    # Upstream tokens expiring within this many seconds are refreshed; the scan runs this often.
    upstream_refresh_margin: Annotated[int, Field(ge=10)] = 300
    upstream_refresh_scan_interval: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Transient upstream failures retry after base * 2**(n-1) seconds (equal jitter: half of it
    # fixed, half random), at most max.
    upstream_retry_base: Annotated[float, Field(gt=0)] = 30.0
    upstream_retry_max: Annotated[float, Field(gt=0)] = 3600.0
    # Expired codes, login states and refresh tokens are purged this often; revoked or expired
    # sessions are kept session_retention seconds for the admin views first.
    housekeeping_interval: Annotated[float, Field(gt=0)] = 600.0
    # The audit rollup (daily counts and users.last_seen_at for the admin statistics) and the
    # stats snapshot (live sessions, active users, failing links) run this often; the
    # statistics lag the audit log and the current state by about as much.
    audit_rollup_interval: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Whether this process runs the periodic-job timer (the broker only without Redis; every
    # sync-worker with it). Off: jobs run only when enqueued on demand.
    periodic_jobs: bool = True
    session_retention: Annotated[int, Field(ge=0)] = 7 * 86400
    keyring: Keyring
    providers: tuple[ProviderConfig, ...] = Field(
        default_factory=lambda: tuple(_default_providers()), validate_default=True
    )
    clients: tuple[ClientConfig, ...] = Field(
        default_factory=lambda: tuple(_default_clients()), validate_default=True
    )
    admins: tuple[str, ...] = ()
    access_token_audience: str | None = None
    signing_alg: SigningAlg = "ES256"
    access_token_ttl: Annotated[int, Field(gt=0, le=86400)] = 900
    id_token_ttl: Annotated[int, Field(gt=0, le=86400)] = 3600
    refresh_token_ttl: Annotated[int, Field(gt=0)] = 30 * 86400
    # A rotated refresh token presented again within this many seconds gets the same successor
    # back (clients that refresh concurrently, retries); later it is a replay and revokes the
    # family. 0 (the default): every second presentation is a replay (RFC 9700 §4.14.2).
    refresh_reuse_interval: Annotated[int, Field(ge=0, le=60)] = 0
    # A link flow starts only from a browser whose broker session signed in at most this many
    # seconds ago; otherwise the browser signs in again first (docs/security.md "Linking needs
    # a fresh browser sign-in").
    link_max_auth_age: Annotated[int, Field(ge=0, le=86400)] = 300
    # What such a replay revokes (docs/security.md "Reuse response policy"): the family (that
    # session); every live session of the user; or those and the user's upstream grants too
    # (revoked at each provider that supports it, the links marked revoked).
    reuse_response: ReuseResponse = "family"
    code_ttl: Annotated[int, Field(gt=0, le=600)] = 60
    login_ttl: Annotated[int, Field(gt=0, le=3600)] = 600
    jwks_max_age: Annotated[int, Field(ge=0)] = 600
    # A signing key signs this long; its successor is published signing_key_lead seconds earlier.
    signing_key_rotation_interval: Annotated[int, Field(ge=10)] = 30 * 86400
    signing_key_lead: Annotated[int, Field(ge=1)] = 86400
    key_reload_interval: Annotated[float, Field(gt=0, le=300)] = 5.0
    db_pool_size: Annotated[int, Field(ge=1, le=500)] = 20
    # Abuse limits (docs/security.md "Abuse limits"), counted in fixed windows of
    # abuse_window seconds, in Redis when redis_url is set, else in this process; 0 turns a
    # limit off. Failed client authentications per client and address, per address (any
    # client), and per client (any address: past it, an address that failed for the client
    # waits for the next window, while an address with no failure still authenticates); and
    # login starts (each writes a login_states row) per address. Far above legitimate use.
    abuse_window: Annotated[int, Field(ge=1, le=86400)] = 300
    client_auth_failure_limit: Annotated[int, Field(ge=0)] = 20
    client_auth_address_failure_limit: Annotated[int, Field(ge=0)] = 100
    client_auth_client_failure_limit: Annotated[int, Field(ge=0)] = 200
    login_start_limit: Annotated[int, Field(ge=0)] = 1000
    # The counters' Redis key prefix (replicas of one deployment share it).
    abuse_key_prefix: Annotated[str, Field(min_length=1, max_length=100)] = "broker:limits"
    # docs/security.md "Body limits": every request body is read through this cap (bytes); a
    # larger one is answered 413 (broker.body_limit).
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    allow_private_network_fetch: bool = False
    insecure_dev: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    var_dir: Path = Path("var")
    keyring_is_generated: bool = False

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        _check_url(value, "issuer")
        if value.endswith("/"):
            raise ValueError("issuer must not end with '/'")
        if urlsplit(value).query or urlsplit(value).fragment:
            raise ValueError("issuer must not contain a query or fragment")
        return value

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # docs/security.md "Roles by identity, never by email": a broker user id or a (provider,
        # subject) — never an email.
        normalized = []
        for entry in value:
            kind, _, rest = entry.partition(":")
            if not rest or not re.fullmatch(_ID[1:-1], kind):
                raise ValueError(f"{entry!r}: expected user:<user id> or <provider id>:<subject>")
            if kind == "user":
                try:
                    entry = f"user:{uuid.UUID(rest)}"  # the form it is compared in
                except ValueError:
                    raise ValueError(f"{entry!r}: user: takes a broker user id (a UUID)") from None
            normalized.append(entry)
        return tuple(normalized)

    @field_validator("keyring", mode="before")
    @classmethod
    def _keyring(cls, value: Any) -> Keyring:
        if isinstance(value, Keyring):
            return value
        if isinstance(value, str):
            try:
                return Keyring.parse(value)
            except KeyringError as exc:
                raise ValueError(str(exc)) from exc
        raise ValueError("expected kid:base64url-key[,kid:key...]")

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        seen: set[str] = set()
        for provider in self.providers:
            if provider.id in seen:
                raise ValueError(f"providers: id {provider.id!r} appears twice")
            seen.add(provider.id)
            if (
                provider.type == "dev"
                and not is_loopback_url(self.issuer)
                and not self.insecure_dev
            ):
                raise ValueError(
                    f"providers: the dev provider {provider.id!r} is refused because the issuer "
                    "is not a loopback URL (set BROKER_INSECURE_DEV=1 to override)"
                )
            if provider.type == "dev" and provider.link_by_email:
                # docs/security.md "Dev provider is local and unverified": the dev provider's emails
                # are unverified; it never auto-links.
                raise ValueError(
                    f"providers: the dev provider {provider.id!r} cannot link_by_email"
                )
        if not self.providers:
            raise ValueError("providers: at least one provider is required")
        by_id = {provider.id: provider for provider in self.providers}
        if "user" in by_id:
            raise ValueError("providers: the id 'user' is reserved (admins: user:<user id>)")
        for entry in self.admins:
            kind = entry.partition(":")[0]
            if kind != "user" and kind not in by_id:
                raise ValueError(f"admins: {entry!r} names no configured provider")
            if kind != "user" and by_id[kind].type == "dev":
                # The dev provider's subject is whatever address someone types.
                raise ValueError(f"admins: {entry!r}: the dev provider cannot grant admin")
        client_ids = [client.id for client in self.clients]
        if len(set(client_ids)) != len(client_ids):
            raise ValueError("clients: client ids must be unique")
        if self.jwks_max_age > self.signing_key_lead:
            raise ValueError(
                "BROKER_JWKS_MAX_AGE must not exceed BROKER_SIGNING_KEY_LEAD: a new key must be "
                "published at least one JWKS cache lifetime before it signs"
            )
        if self.signing_key_lead >= self.signing_key_rotation_interval:
            raise ValueError(
                "BROKER_SIGNING_KEY_LEAD must be shorter than BROKER_SIGNING_KEY_ROTATION_INTERVAL"
            )
        if self.allow_private_network_fetch and not is_loopback_url(self.issuer):
            # docs/security.md "Guarded avatar fetches": it lifts the address checks of avatar
            # fetches (tests only).
            raise ValueError(
                "BROKER_ALLOW_PRIVATE_NETWORK_FETCH is for tests and local stand-ins: it is "
                "refused when the issuer is not a loopback URL"
            )
        if self.keyring_is_generated and not is_loopback_url(self.issuer):
            raise ValueError(
                "BROKER_ENCRYPTION_KEYS must be set when the issuer is not a loopback URL"
            )
        return self

    @property
    def audience(self) -> str:
        """The broker-wide default ``aud`` of access tokens (a resource, never a client id)."""
        return self.access_token_audience or self.issuer

    @property
    def signing_algorithms(self) -> tuple[str, ...]:
        """The algorithms the broker keeps a signing key for: the default first. Both always
        have one, since discovery offers ES256 and RS256 for ID tokens."""
        return tuple(dict.fromkeys([self.signing_alg, "ES256", "RS256"]))

    @property
    def is_loopback(self) -> bool:
        return is_loopback_url(self.issuer)

    def client(self, client_id: str) -> ClientConfig | None:
        for client in self.clients:
            if client.id == client_id:
                return client
        return None

    def provider(self, provider_id: str) -> ProviderConfig | None:
        for provider in self.providers:
            if provider.id == provider_id:
                return provider
        return None


# Environment variable -> settings field. Everything else comes from the YAML file.
_ENV_FIELDS = {
    "BROKER_ISSUER": "issuer",
    "BROKER_DATABASE_URL": "database_url",
    "BROKER_REDIS_URL": "redis_url",
    "BROKER_ENCRYPTION_KEYS": "keyring",
    "BROKER_ACCESS_TOKEN_AUDIENCE": "access_token_audience",
    "BROKER_SIGNING_ALG": "signing_alg",
    "BROKER_ACCESS_TOKEN_TTL": "access_token_ttl",
    "BROKER_ID_TOKEN_TTL": "id_token_ttl",
    "BROKER_REFRESH_TOKEN_TTL": "refresh_token_ttl",
    "BROKER_REFRESH_REUSE_INTERVAL": "refresh_reuse_interval",
    "BROKER_REUSE_RESPONSE": "reuse_response",
    "BROKER_REVOCATION_STREAM": "revocation_stream",
    "BROKER_AUDIT_STREAM": "audit_stream",
    "BROKER_AUDIT_STREAM_MAXLEN": "audit_stream_maxlen",
    "BROKER_UPSTREAM_REFRESH_MARGIN": "upstream_refresh_margin",
    "BROKER_UPSTREAM_REFRESH_SCAN_INTERVAL": "upstream_refresh_scan_interval",
    "BROKER_UPSTREAM_RETRY_BASE": "upstream_retry_base",
    "BROKER_UPSTREAM_RETRY_MAX": "upstream_retry_max",
    "BROKER_HOUSEKEEPING_INTERVAL": "housekeeping_interval",
    "BROKER_AUDIT_ROLLUP_INTERVAL": "audit_rollup_interval",
    "BROKER_SESSION_RETENTION": "session_retention",
    "BROKER_PERIODIC_JOBS": "periodic_jobs",
    "BROKER_CODE_TTL": "code_ttl",
    "BROKER_LINK_MAX_AUTH_AGE": "link_max_auth_age",
    "BROKER_JWKS_MAX_AGE": "jwks_max_age",
    "BROKER_SIGNING_KEY_ROTATION_INTERVAL": "signing_key_rotation_interval",
    "BROKER_SIGNING_KEY_LEAD": "signing_key_lead",
    "BROKER_KEY_RELOAD_INTERVAL": "key_reload_interval",
    "BROKER_DB_POOL_SIZE": "db_pool_size",
    "BROKER_ABUSE_WINDOW": "abuse_window",
    "BROKER_CLIENT_AUTH_FAILURE_LIMIT": "client_auth_failure_limit",
    "BROKER_CLIENT_AUTH_ADDRESS_FAILURE_LIMIT": "client_auth_address_failure_limit",
    "BROKER_CLIENT_AUTH_CLIENT_FAILURE_LIMIT": "client_auth_client_failure_limit",
    "BROKER_LOGIN_START_LIMIT": "login_start_limit",
    "BROKER_ABUSE_KEY_PREFIX": "abuse_key_prefix",
    "BROKER_MAX_BODY_BYTES": "max_body_bytes",
    "BROKER_ALLOW_PRIVATE_NETWORK_FETCH": "allow_private_network_fetch",
    "BROKER_INSECURE_DEV": "insecure_dev",
    "BROKER_LOG_LEVEL": "log_level",
    "BROKER_LOG_FORMAT": "log_format",
    "BROKER_VAR_DIR": "var_dir",
}
_FIELD_TO_ENV = {field: env for env, field in _ENV_FIELDS.items()}
_YAML_FIELDS = {"issuer", "providers", "clients", "admins"}
DEV_KEYRING_FILE = "dev-encryption-keys"


def _describe(error: dict[str, Any], from_env: set[str]) -> str:
    loc = [str(part) for part in error["loc"]]
    # Pydantic puts the discriminator tag into the location of union members; drop it.
    loc = [part for part in loc if part not in PROVIDER_TYPES]
    if loc and loc[0] in from_env:
        name = _FIELD_TO_ENV[loc[0]]
    elif loc:
        name = loc[0]
        for part in loc[1:]:
            name += f"[{part}]" if part.isdigit() else f".{part}"
    else:
        name = "configuration"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"


def build_settings(data: dict[str, Any], from_env: set[str] | None = None) -> Settings:
    """Validate a dict of settings, turning pydantic's errors into one ``ConfigError``."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(err), from_env or set()) for err in exc.errors())
        raise ConfigError(problems) from None


def _dev_keyring(var_dir: Path) -> str:
    """Load, or create on first run, the development keyring under ``var/`` (never production)."""
    path = var_dir / DEV_KEYRING_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    spec = Keyring.generate("dev1").serialize()
    path.write_text(spec + "\n", encoding="utf-8")
    path.chmod(0o600)
    return spec


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build the settings from ``BROKER_*`` variables and the YAML file named by BROKER_CONFIG."""
    data: dict[str, Any] = {}
    from_env: set[str] = set()
    for env_name, field in _ENV_FIELDS.items():
        value = environ.get(env_name)
        if value is not None and value != "":
            if field in ("allow_private_network_fetch", "insecure_dev", "periodic_jobs"):
                data[field] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                data[field] = value
            from_env.add(field)
    config_path = environ.get("BROKER_CONFIG")
    if config_path:
        document = read_config_file(config_path, environ)
        unknown = sorted(set(document) - _YAML_FIELDS)
        if unknown:
            raise ConfigError(
                f"BROKER_CONFIG: unknown top-level key {unknown[0]!r} "
                f"(expected {', '.join(sorted(_YAML_FIELDS))})"
            )
        for key, value in document.items():
            data[key] = value
            from_env.discard(key)
    if "keyring" not in data:
        issuer = str(data.get("issuer") or Settings.model_fields["issuer"].default)
        if not is_loopback_url(issuer):
            raise ConfigError(
                "BROKER_ENCRYPTION_KEYS must be set when the issuer is not a loopback URL"
            )
        data["keyring"] = _dev_keyring(Path(data.get("var_dir", "var")))
        data["keyring_is_generated"] = True
    return build_settings(data, from_env)


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: the embedded default with an in-memory keyring, plus overrides."""
    data: dict[str, Any] = {"keyring": Keyring.generate(), "database_url": "sqlite+aiosqlite://"}
    data.update(overrides)
    return build_settings(data)
