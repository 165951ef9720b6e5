"""Building ``Settings``: the environment map, the YAML file, the development keyring.

``load_settings(environ)`` is the only place that reads the environment or the config file. Tests
build settings with ``make_settings(**overrides)``. Invalid configuration raises ``ConfigError``
with a message that names the offending setting, so startup fails before the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from shared.config_file import ConfigError, read_config_file
from shared.crypto.keyring import Keyring
from shared.settings.base import is_loopback_url
from shared.settings.deployment import Settings
from shared.settings.providers import PROVIDER_TYPES

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
    "BROKER_REFRESH_GROUP_COMMIT": "refresh_group_commit",
    "BROKER_REFRESH_GROUP_MAX": "refresh_group_max",
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
    "BROKER_BACKCHANNEL_LOGOUT_INTERVAL": "backchannel_logout_interval",
    "BROKER_BACKCHANNEL_LOGOUT_TIMEOUT": "backchannel_logout_timeout",
    "BROKER_BACKCHANNEL_LOGOUT_RETRY_BASE": "backchannel_logout_retry_base",
    "BROKER_BACKCHANNEL_LOGOUT_RETRY_MAX": "backchannel_logout_retry_max",
    "BROKER_BACKCHANNEL_LOGOUT_GIVE_UP_AFTER": "backchannel_logout_give_up_after",
    "BROKER_AUDIT_RETENTION": "audit_retention",
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
    "BROKER_CLIENT_ASSERTION_MAX_LIFETIME": "client_assertion_max_lifetime",
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
# Switches: 1, true, yes or on (any case) turn them on, anything else off.
_BOOL_FIELDS = frozenset(
    {"allow_private_network_fetch", "insecure_dev", "periodic_jobs", "refresh_group_commit"}
)
# The OpenTelemetry SDK's standard variables that decide whether traces are exported: an OTLP
# endpoint turns tracing on (the SDK itself reads these and the other OTEL_* variables when the
# process installs it: shared.tracing.install).
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
OTLP_PROTOCOL = "http/protobuf"
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


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """Whether this process exports traces: an OTLP endpoint is set, and neither
    ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` says otherwise.

    What the SDK would only report at the first export fails startup here, naming the
    variable: an endpoint that is not an http(s) URL, a protocol or exporter the broker does
    not ship (OTLP over HTTP/protobuf only).
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter == "none":
        return False
    if exporter != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER: expected otlp or none, not {exporter!r}")
    endpoint = _first(environ, OTLP_ENDPOINTS)
    if endpoint is None:
        return False
    name, url = endpoint
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: expected an http:// or https:// URL")
    protocol = _first(environ, OTLP_PROTOCOLS)
    if protocol is not None and protocol[1] != OTLP_PROTOCOL:
        raise ConfigError(
            f"{protocol[0]}: only {OTLP_PROTOCOL} is supported (OTLP over HTTP, port 4318)"
        )
    return True


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build the settings from ``BROKER_*`` variables and the YAML file named by BROKER_CONFIG."""
    data: dict[str, Any] = {}
    from_env: set[str] = set()
    for env_name, field in _ENV_FIELDS.items():
        value = environ.get(env_name)
        if value is not None and value != "":
            if field in _BOOL_FIELDS:
                data[field] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                data[field] = value
            from_env.add(field)
    data["tracing"] = tracing_enabled(environ)
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
