"""The ``Settings`` model: everything the broker and the worker need to know, validated once."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.crypto.keyring import Keyring, KeyringError
from shared.settings.base import ID_PATTERN, Strict, check_url, is_loopback_url
from shared.settings.clients import ClientConfig, SigningAlg
from shared.settings.providers import ProviderConfig

ReuseResponse = Literal["family", "user", "user_and_upstream"]


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


class Settings(Strict):
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
    # Back-channel logout (docs/worker.md "Back-channel logout"): the delivery job runs this
    # often; one POST to a relying party may take the timeout; a failed delivery is tried again
    # after base * 2**(n-1) seconds (equal jitter), at most max, and given up this long after
    # its session ended.
    backchannel_logout_interval: Annotated[float, Field(gt=0, le=3600)] = 2.0
    backchannel_logout_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    backchannel_logout_retry_base: Annotated[float, Field(gt=0)] = 10.0
    backchannel_logout_retry_max: Annotated[float, Field(gt=0)] = 3600.0
    backchannel_logout_give_up_after: Annotated[int, Field(ge=60)] = 3 * 86400
    # Days audit rows are kept (shared.jobs.audit_retention): older ones go once every consumer
    # (relay, rollup, logout outbox) has read them, a week's partition at a time on PostgreSQL.
    # 0: kept for ever.
    audit_retention: Annotated[int, Field(ge=0, le=36500)] = 400
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
    # A rotated refresh token presented again within this many seconds, while its successor is
    # still unused, gets that same successor back (a retry after a lost response, clients that
    # refresh concurrently) and is audited refresh_token.retried; later, or once the successor
    # was used, it is a replay and revokes the family (RFC 9700 §4.14.2). 0: every second
    # presentation is a replay. Why 60 (docs/decisions.md "Retrying a refresh"): a broker
    # killed under load and restarted got its clients' retries (with backoff) 47 s after their
    # lost rotations: 30 s revoked those sessions, 60 s did not. Okta defaults to 30 s, Cognito
    # allows up to 60 s. Bounded so a stolen token cannot ride for long: at most 300 s.
    refresh_reuse_interval: Annotated[int, Field(ge=0, le=300)] = 60
    # PostgreSQL: the refresh rotations that reach the hot path in one event-loop turn share one
    # statement and one commit, at most refresh_group_max of them (docs/decisions.md "Group
    # commit of refresh rotations"). Off: one statement and one commit per rotation.
    refresh_group_commit: bool = True
    refresh_group_max: Annotated[int, Field(ge=1, le=1000)] = 64
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
    # How far ahead a private_key_jwt client assertion's exp may lie, in seconds (docs/security.md
    # "Client assertions"): an hour is what authlib and Google's client libraries sign, and a
    # spent jti is refused for the assertion's whole lifetime whatever this is.
    client_assertion_max_lifetime: Annotated[int, Field(ge=60, le=86400)] = 3600
    # The counters' Redis key prefix (replicas of one deployment share it).
    abuse_key_prefix: Annotated[str, Field(min_length=1, max_length=100)] = "broker:limits"
    # docs/security.md "Body limits": every request body is read through this cap (bytes); a
    # larger one is answered 413 (broker.http.body_limit).
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    allow_private_network_fetch: bool = False
    insecure_dev: bool = False
    # Traces are exported over OTLP (docs/configuration.md "Tracing"): decided from the standard
    # OTEL_* variables by load_settings; the SDK reads the rest of them when the process starts.
    tracing: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    var_dir: Path = Path("var")
    keyring_is_generated: bool = False

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        check_url(value, "issuer")
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
            if not rest or not re.fullmatch(ID_PATTERN[1:-1], kind):
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
