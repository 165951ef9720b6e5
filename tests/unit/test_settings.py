"""Settings: BROKER_* variables, the YAML file with ${VAR} substitution, startup refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker.cli import main as broker_cli
from shared.crypto.keyring import Keyring
from shared.settings import (
    ClientConfig,
    ConfigError,
    Settings,
    load_settings,
    make_settings,
)
from shared.settings.loading import DEV_KEYRING_FILE

PUBLIC_ISSUER = "https://broker.example.com"


@pytest.fixture
def keys() -> str:
    return Keyring.generate("prod1").serialize()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment whose var dir is the test's own temporary directory."""
    return {"BROKER_VAR_DIR": str(tmp_path / "var")}


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "broker.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


OIDC_PROVIDER_YAML = """
providers:
  - id: corp
    type: oidc
    issuer: https://idp.example.com
    client_id: ${CORP_CLIENT_ID}
    client_secret: ${CORP_CLIENT_SECRET}
"""


# --- environment variables ---------------------------------------------------------------------


def test_broker_variables_set_the_matching_fields(
    env: dict[str, str], keys: str, tmp_path: Path
) -> None:
    env.update(
        BROKER_ISSUER=PUBLIC_ISSUER,
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_ACCESS_TOKEN_TTL="300",
        BROKER_DATABASE_URL="postgresql+psycopg://db/broker",
        BROKER_SIGNING_ALG="RS256",
        BROKER_LOG_LEVEL="DEBUG",
        BROKER_ACCESS_TOKEN_AUDIENCE="https://api.example.com",
    )
    # The dev provider is refused on a public issuer, so configure a real one.
    env["BROKER_CONFIG"] = write_config(
        tmp_path,
        "providers:\n  - {id: corp, type: oidc, issuer: 'https://idp.example.com', client_id: b}\n",
    )

    settings = load_settings(env)

    assert settings.issuer == PUBLIC_ISSUER
    assert settings.access_token_ttl == 300
    assert settings.database_url == "postgresql+psycopg://db/broker"
    assert settings.signing_alg == "RS256"
    assert settings.log_level == "DEBUG"
    assert settings.audience == "https://api.example.com"
    assert settings.keyring.serialize() == keys
    assert settings.keyring_is_generated is False


def test_the_body_cap_is_64_kib_unless_its_variable_says_otherwise(
    env: dict[str, str], keys: str
) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys)
    assert load_settings(env).max_body_bytes == 64 * 1024
    env.update(BROKER_MAX_BODY_BYTES="1048576")
    assert load_settings(env).max_body_bytes == 1024 * 1024
    env.update(BROKER_MAX_BODY_BYTES="0")
    with pytest.raises(ConfigError, match="BROKER_MAX_BODY_BYTES"):
        load_settings(env)


def test_invalid_environment_value_names_the_variable(env: dict[str, str], keys: str) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_ACCESS_TOKEN_TTL="fifteen minutes")

    with pytest.raises(ConfigError, match="BROKER_ACCESS_TOKEN_TTL"):
        load_settings(env)


def test_out_of_range_environment_value_names_the_variable(env: dict[str, str], keys: str) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_CODE_TTL="3600")

    with pytest.raises(ConfigError, match="BROKER_CODE_TTL"):
        load_settings(env)


def test_abuse_limits_come_from_the_environment_and_zero_turns_one_off(
    env: dict[str, str], keys: str
) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_ABUSE_WINDOW="60",
        BROKER_CLIENT_AUTH_FAILURE_LIMIT="5",
        BROKER_CLIENT_AUTH_ADDRESS_FAILURE_LIMIT="0",
        BROKER_CLIENT_AUTH_CLIENT_FAILURE_LIMIT="50",
        BROKER_LOGIN_START_LIMIT="0",
        BROKER_ABUSE_KEY_PREFIX="tenant-a:limits",
    )

    settings = load_settings(env)

    assert settings.abuse_window == 60
    assert settings.client_auth_failure_limit == 5
    assert settings.client_auth_address_failure_limit == 0
    assert settings.client_auth_client_failure_limit == 50
    assert settings.login_start_limit == 0
    assert settings.abuse_key_prefix == "tenant-a:limits"
    env["BROKER_LOGIN_START_LIMIT"] = "-1"
    with pytest.raises(ConfigError, match="BROKER_LOGIN_START_LIMIT"):
        load_settings(env)


def test_default_abuse_limits_are_far_above_legitimate_use() -> None:
    # The acceptance tests sign in about a dozen times a minute from one address; a relying
    # party with the right secret never fails at all.
    settings = make_settings()
    logins_per_window = 12 * settings.abuse_window / 60
    assert settings.login_start_limit >= 10 * logins_per_window
    assert settings.client_auth_failure_limit >= 10
    assert settings.client_auth_address_failure_limit >= settings.client_auth_failure_limit
    assert settings.client_auth_client_failure_limit >= settings.client_auth_address_failure_limit


def test_reuse_response_comes_from_its_variable_and_defaults_to_the_family(
    env: dict[str, str], keys: str
) -> None:
    env["BROKER_ENCRYPTION_KEYS"] = keys
    assert load_settings(env).reuse_response == "family"
    for policy in ("family", "user", "user_and_upstream"):
        assert load_settings({**env, "BROKER_REUSE_RESPONSE": policy}).reuse_response == policy
    with pytest.raises(ConfigError, match="BROKER_REUSE_RESPONSE"):
        load_settings({**env, "BROKER_REUSE_RESPONSE": "everything"})


def test_reuse_interval_defaults_to_a_bounded_retry_window_and_zero_stays_strict(
    env: dict[str, str], keys: str
) -> None:
    env["BROKER_ENCRYPTION_KEYS"] = keys
    # docs/decisions.md "Retrying a refresh": long enough for a restart and a client's retries.
    assert load_settings(env).refresh_reuse_interval == 60
    for seconds in ("0", "3", "300"):
        settings = load_settings({**env, "BROKER_REFRESH_REUSE_INTERVAL": seconds})
        assert settings.refresh_reuse_interval == int(seconds)
    for seconds in ("301", "-1", "a minute"):
        with pytest.raises(ConfigError, match="BROKER_REFRESH_REUSE_INTERVAL"):
            load_settings({**env, "BROKER_REFRESH_REUSE_INTERVAL": seconds})


def test_malformed_encryption_keys_name_the_variable(env: dict[str, str]) -> None:
    env["BROKER_ENCRYPTION_KEYS"] = "k1:dG9vLXNob3J0"

    with pytest.raises(ConfigError, match="BROKER_ENCRYPTION_KEYS"):
        load_settings(env)


# --- the issuer ---------------------------------------------------------------------------------


def test_issuer_with_trailing_slash_is_refused(env: dict[str, str], keys: str) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_ISSUER=PUBLIC_ISSUER + "/")

    with pytest.raises(ConfigError, match=r"BROKER_ISSUER: .*must not end with '/'"):
        load_settings(env)


def test_http_issuer_on_a_public_host_is_refused(env: dict[str, str], keys: str) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_ISSUER="http://broker.example.com")

    with pytest.raises(ConfigError, match=r"BROKER_ISSUER: .*https"):
        load_settings(env)


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8000", "http://localhost:8000"])
def test_http_issuer_on_loopback_is_accepted(env: dict[str, str], keys: str, issuer: str) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_ISSUER=issuer)

    assert load_settings(env).issuer == issuer


# --- the dev provider ---------------------------------------------------------------------------


def test_dev_provider_is_refused_on_a_public_issuer(env: dict[str, str], keys: str) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_ISSUER=PUBLIC_ISSUER)

    with pytest.raises(ConfigError, match="dev provider"):
        load_settings(env)


def test_dev_provider_on_a_public_issuer_is_allowed_with_insecure_dev(
    env: dict[str, str], keys: str
) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys, BROKER_ISSUER=PUBLIC_ISSUER, BROKER_INSECURE_DEV="1")

    settings = load_settings(env)

    assert settings.insecure_dev is True
    assert [p.type for p in settings.providers] == ["dev"]


# --- the encryption keyring ---------------------------------------------------------------------


def test_missing_encryption_keys_on_a_public_issuer_is_refused(env: dict[str, str]) -> None:
    env.update(BROKER_ISSUER=PUBLIC_ISSUER, BROKER_INSECURE_DEV="1")

    with pytest.raises(ConfigError, match="BROKER_ENCRYPTION_KEYS"):
        load_settings(env)


def test_missing_encryption_keys_on_a_public_issuer_writes_no_key_file(
    env: dict[str, str],
) -> None:
    env.update(BROKER_ISSUER=PUBLIC_ISSUER, BROKER_INSECURE_DEV="1")

    with pytest.raises(ConfigError):
        load_settings(env)

    assert not (Path(env["BROKER_VAR_DIR"]) / DEV_KEYRING_FILE).exists()


def test_loopback_issuer_without_keys_creates_a_dev_keyring_and_reuses_it(
    env: dict[str, str],
) -> None:
    key_file = Path(env["BROKER_VAR_DIR"]) / DEV_KEYRING_FILE

    first = load_settings(env)

    assert first.keyring_is_generated is True
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    second = load_settings(env)
    assert second.keyring.serialize() == first.keyring.serialize()
    # What the first process sealed, the second can open.
    sealed = first.keyring.encrypt(b"upstream token", b"row-1")
    assert second.keyring.decrypt(sealed, b"row-1") == b"upstream token"


# --- the YAML file ------------------------------------------------------------------------------


def test_yaml_file_is_read_with_variable_substitution(
    env: dict[str, str], keys: str, tmp_path: Path
) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_CONFIG=write_config(tmp_path, OIDC_PROVIDER_YAML),
        CORP_CLIENT_ID="broker-at-corp",
        CORP_CLIENT_SECRET="s3cret-from-env",
    )

    settings = load_settings(env)

    provider = settings.provider("corp")
    assert provider is not None and provider.type == "oidc"
    assert provider.client_id == "broker-at-corp"
    assert provider.client_secret is not None
    assert provider.client_secret.get_secret_value() == "s3cret-from-env"


def test_missing_substitution_variable_names_the_variable(
    env: dict[str, str], keys: str, tmp_path: Path
) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_CONFIG=write_config(tmp_path, OIDC_PROVIDER_YAML),
        CORP_CLIENT_ID="broker-at-corp",
    )

    with pytest.raises(ConfigError, match="CORP_CLIENT_SECRET"):
        load_settings(env)


def test_invalid_yaml_field_names_its_path(env: dict[str, str], keys: str, tmp_path: Path) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_CONFIG=write_config(
            tmp_path,
            "providers:\n"
            "  - {id: dev, type: dev}\n"
            "  - {id: corp, type: oidc, issuer: 'https://idp.example.com', client_id: ''}\n",
        ),
    )

    with pytest.raises(ConfigError, match=r"providers\[1\]\.client_id"):
        load_settings(env)


def test_invalid_client_field_names_its_path(
    env: dict[str, str], keys: str, tmp_path: Path
) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_CONFIG=write_config(
            tmp_path, "clients:\n  - {id: web, redirect_uris: ['https://app.example/cb#frag']}\n"
        ),
    )

    with pytest.raises(ConfigError, match=r"clients\[0\]\.redirect_uris"):
        load_settings(env)


def test_unknown_top_level_yaml_key_is_refused(
    env: dict[str, str], keys: str, tmp_path: Path
) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_CONFIG=write_config(tmp_path, "issuer: http://127.0.0.1:8000\nprovider: []\n"),
    )

    with pytest.raises(ConfigError, match="unknown top-level key 'provider'"):
        load_settings(env)


def test_duplicate_provider_ids_are_refused(env: dict[str, str], keys: str, tmp_path: Path) -> None:
    env.update(
        BROKER_ENCRYPTION_KEYS=keys,
        BROKER_CONFIG=write_config(
            tmp_path,
            "providers:\n"
            "  - {id: corp, type: dev}\n"
            "  - {id: corp, type: oidc, issuer: 'https://idp.example.com', client_id: b}\n",
        ),
    )

    with pytest.raises(ConfigError, match="'corp' appears twice"):
        load_settings(env)


def test_unreadable_config_file_is_a_config_error(env: dict[str, str], tmp_path: Path) -> None:
    env["BROKER_CONFIG"] = str(tmp_path / "missing.yaml")

    with pytest.raises(ConfigError, match="BROKER_CONFIG"):
        load_settings(env)


# --- clients and make_settings ------------------------------------------------------------------


def test_client_without_secret_is_public_and_with_one_is_confidential() -> None:
    public = ClientConfig(id="spa", redirect_uris=("https://app.example/cb",))
    confidential = ClientConfig(
        id="web", secret="x" * 32, redirect_uris=("https://app.example/cb",)
    )

    assert public.is_public is True
    assert confidential.is_public is False


def test_make_settings_applies_overrides_and_validates_them() -> None:
    settings = make_settings(access_token_ttl=120, signing_alg="RS256")

    assert isinstance(settings, Settings)
    assert settings.access_token_ttl == 120
    assert settings.signing_alg == "RS256"
    assert settings.keyring_is_generated is False
    with pytest.raises(ConfigError, match="issuer"):
        make_settings(issuer="https://broker.example.com/")


def test_default_access_token_audience_is_the_issuer_not_a_client() -> None:
    settings = make_settings()

    assert settings.audience == settings.issuer
    assert settings.audience not in {client.id for client in settings.clients}


@pytest.mark.parametrize("entry", ["alice@example.com", "user:alice", "corp:", ":x", "Corp:x"])
def test_admins_are_named_by_user_id_or_provider_and_subject_only(entry: str) -> None:
    with pytest.raises(ConfigError, match="admins"):
        make_settings(keyring=Keyring.generate(), admins=[entry])
    corp = {"id": "corp", "type": "oidc", "issuer": "https://sso.example.com", "client_id": "b"}
    admins = ["corp:alice", "user:6F1C0B9E-0C1D-4C59-9D0A-2B1F7E3C8A11"]
    settings = make_settings(keyring=Keyring.generate(), providers=[corp], admins=admins)
    # Compared as the broker writes user ids: lower case, with hyphens.
    assert settings.admins == ("corp:alice", "user:6f1c0b9e-0c1d-4c59-9d0a-2b1f7e3c8a11")
    providers = [corp, {"id": "dev", "type": "dev"}]
    for refused in ("github:1", "dev:alice@example.com"):  # unconfigured; dev: any typed address
        with pytest.raises(ConfigError, match="admins"):
            make_settings(keyring=Keyring.generate(), providers=providers, admins=[refused])


@pytest.mark.parametrize("secret", ["", "x", "x" * 31])
def test_a_short_or_empty_client_secret_is_refused_naming_the_client(secret: str) -> None:
    with pytest.raises(ConfigError, match=r"clients\[1\].*client 'backend': secret"):
        make_settings(
            clients=[
                {"id": "spa", "redirect_uris": ["https://app.example/cb"]},
                {"id": "backend", "secret": secret, "redirect_uris": ["https://app.example/cb"]},
            ]
        )
    assert (
        make_settings(
            clients=[
                {"id": "backend", "secret": "x" * 32, "redirect_uris": ["https://a.example/cb"]}
            ]
        )
        .clients[0]
        .secret
        is not None
    )


def test_a_client_secret_variable_that_expands_to_nothing_stops_the_broker_with_exit_code_2(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env["WEB_CLIENT_SECRET"] = ""
    env["BROKER_CONFIG"] = write_config(
        tmp_path,
        "clients:\n"
        "  - id: web\n"
        "    secret: ${WEB_CLIENT_SECRET}\n"
        "    redirect_uris: [http://127.0.0.1:3000/callback]\n",
    )
    with pytest.raises(SystemExit) as stopped:
        broker_cli.main(["migrate"], environ=env)

    assert stopped.value.code == 2
    assert "client 'web': secret is empty" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "broker.example.com"])
def test_serve_refuses_the_dev_provider_on_a_non_loopback_listen_address(
    env: dict[str, str], host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default configuration: a loopback issuer and the dev provider.
    with pytest.raises(SystemExit) as stopped:
        broker_cli.main(["serve", "--host", host], environ=env)

    assert stopped.value.code == 2
    assert "dev provider 'dev'" in capsys.readouterr().err


def test_insecure_dev_or_a_loopback_listen_address_lets_the_dev_provider_serve(
    env: dict[str, str],
) -> None:
    settings = load_settings(env)
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        broker_cli.refuse_dev_provider_on_public_bind(settings, host)  # no SystemExit
    insecure = load_settings({**env, "BROKER_INSECURE_DEV": "1"})
    broker_cli.refuse_dev_provider_on_public_bind(insecure, "0.0.0.0")
    disabled = make_settings(providers=[{"id": "dev", "type": "dev", "disabled": True}])
    broker_cli.refuse_dev_provider_on_public_bind(disabled, "0.0.0.0")


def test_link_max_auth_age_defaults_to_five_minutes_and_is_set_by_its_variable(
    env: dict[str, str],
) -> None:
    assert load_settings(env).link_max_auth_age == 300
    assert load_settings({**env, "BROKER_LINK_MAX_AUTH_AGE": "0"}).link_max_auth_age == 0
    with pytest.raises(ConfigError, match="BROKER_LINK_MAX_AUTH_AGE"):
        load_settings({**env, "BROKER_LINK_MAX_AUTH_AGE": "-1"})


def test_refresh_group_commit_is_on_with_groups_of_64_and_its_variables_set_both(
    env: dict[str, str],
) -> None:
    settings = load_settings(env)
    assert (settings.refresh_group_commit, settings.refresh_group_max) == (True, 64)
    for off in ("0", "false", "off", "no"):
        assert (
            load_settings({**env, "BROKER_REFRESH_GROUP_COMMIT": off}).refresh_group_commit is False
        )
    assert load_settings({**env, "BROKER_REFRESH_GROUP_COMMIT": "on"}).refresh_group_commit is True
    for size in ("1", "1000"):
        settings = load_settings({**env, "BROKER_REFRESH_GROUP_MAX": size})
        assert settings.refresh_group_max == int(size)
    for size in ("0", "1001", "many"):
        with pytest.raises(ConfigError, match="BROKER_REFRESH_GROUP_MAX"):
            load_settings({**env, "BROKER_REFRESH_GROUP_MAX": size})


def test_audit_retention_is_400_days_unless_its_variable_says_otherwise(
    env: dict[str, str], keys: str
) -> None:
    env.update(BROKER_ENCRYPTION_KEYS=keys)
    assert load_settings(env).audit_retention == 400
    env.update(BROKER_AUDIT_RETENTION="30")
    assert load_settings(env).audit_retention == 30
    env.update(BROKER_AUDIT_RETENTION="0")  # kept for ever
    assert load_settings(env).audit_retention == 0
    env.update(BROKER_AUDIT_RETENTION="-1")
    with pytest.raises(ConfigError, match="BROKER_AUDIT_RETENTION"):
        load_settings(env)
