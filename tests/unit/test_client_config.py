"""The client configuration (``shared.settings.clients``): grant types, how a client
authenticates, its keys; every inconsistency stops startup naming the client and the field."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey
from shared.settings import ConfigError, load_settings, make_settings

from tests.support.client_assertions import ec_key, public_jwks, rsa_key

SECRET = "s" * 32
KEY = ec_key("k1")
REDIRECT = ["https://app.example/cb"]


def _client(**fields: Any) -> dict[str, Any]:
    return {"id": "svc", **fields}


def test_a_client_without_grant_types_signs_users_in_as_before() -> None:
    client = make_settings(clients=[_client(redirect_uris=REDIRECT)]).clients[0]

    assert client.grant_types == ("authorization_code", "refresh_token")
    assert client.is_public and client.auth_methods == ("none",)
    assert "openid" in client.scopes
    # A secret and no registered method: either way of sending it, as before.
    confidential = make_settings(clients=[_client(redirect_uris=REDIRECT, secret=SECRET)])
    assert confidential.clients[0].auth_methods == ("client_secret_basic", "client_secret_post")


def test_a_service_needs_no_redirect_uris_and_has_no_user_scopes_by_default() -> None:
    client = make_settings(
        clients=[_client(grant_types=["client_credentials"], secret=SECRET)]
    ).clients[0]

    assert client.redirect_uris == ()
    assert client.scopes == ()
    assert not client.signs_users_in and not client.is_public


def test_a_service_with_jwks_authenticates_with_private_key_jwt_only() -> None:
    client = make_settings(
        clients=[_client(grant_types=["client_credentials"], jwks=public_jwks(KEY))]
    ).clients[0]

    assert client.auth_methods == ("private_key_jwt",)
    assert client.key_set is not None and [key.kid for key in client.key_set.keys] == ["k1"]


def test_a_registered_method_is_the_only_one() -> None:
    client = make_settings(
        clients=[
            _client(
                grant_types=["client_credentials"],
                secret=SECRET,
                token_endpoint_auth_method="client_secret_post",
            )
        ]
    ).clients[0]

    assert client.auth_methods == ("client_secret_post",)


def test_service_scopes_leave_out_the_user_scopes() -> None:
    client = make_settings(
        clients=[
            _client(
                redirect_uris=REDIRECT,
                secret=SECRET,
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
                scopes=["openid", "email", "admin", "reports.read"],
            )
        ]
    ).clients[0]

    assert client.service_scopes == ("reports.read",)


P384 = ECKey.generate_key("P-384", parameters={"kid": "p384"})
with warnings.catch_warnings():  # joserfc warns about the short key, as it should
    warnings.simplefilter("ignore")
    RSA_1024 = RSAKey.generate_key(1024, parameters={"kid": "short"}, auto_kid=False)

REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "public-service": (
        _client(grant_types=["client_credentials"]),
        "client_credentials needs a confidential client",
    ),
    "sign-in-without-redirect-uris": (_client(secret=SECRET), "redirect_uris is required"),
    "service-with-redirect-uris": (
        _client(grant_types=["client_credentials"], secret=SECRET, redirect_uris=REDIRECT),
        "redirect URIs are only for authorization_code clients",
    ),
    "service-with-a-user-scope": (
        _client(grant_types=["client_credentials"], secret=SECRET, scopes=["openid", "x"]),
        "scope 'openid' is for signing users in",
    ),
    "code-without-refresh": (
        _client(grant_types=["authorization_code"], redirect_uris=REDIRECT),
        "authorization_code and refresh_token together",
    ),
    "refresh-alone": (
        _client(grant_types=["refresh_token"], secret=SECRET),
        "authorization_code and refresh_token together",
    ),
    "unknown-grant": (_client(grant_types=["password"], secret=SECRET), "grant_types"),
    "no-grant": (_client(grant_types=[], secret=SECRET), "grant_types"),
    "grant-twice": (
        _client(grant_types=["client_credentials", "client_credentials"], secret=SECRET),
        "lists a grant twice",
    ),
    "secret-and-jwks": (
        _client(grant_types=["client_credentials"], secret=SECRET, jwks=public_jwks(KEY)),
        "either a secret or jwks",
    ),
    "secret-method-without-secret": (
        _client(redirect_uris=REDIRECT, token_endpoint_auth_method="client_secret_basic"),
        "client_secret_basic needs a secret",
    ),
    "private-key-jwt-without-jwks": (
        _client(redirect_uris=REDIRECT, token_endpoint_auth_method="private_key_jwt"),
        "private_key_jwt needs jwks",
    ),
    "none-with-a-secret": (
        _client(redirect_uris=REDIRECT, secret=SECRET, token_endpoint_auth_method="none"),
        "a public client",
    ),
    "unknown-method": (
        _client(redirect_uris=REDIRECT, token_endpoint_auth_method="client_secret_jwt"),
        "token_endpoint_auth_method",
    ),
    "private-key-in-jwks": (
        _client(grant_types=["client_credentials"], jwks={"keys": [KEY.as_dict(private=True)]}),
        "private member 'd'",
    ),
    "symmetric-key": (
        _client(grant_types=["client_credentials"], jwks={"keys": [{"kty": "oct", "k": "AA"}]}),
        "kty must be RSA or EC",
    ),
    "empty-jwks": (_client(grant_types=["client_credentials"], jwks={"keys": []}), "at least one"),
    "two-keys-without-kids": (
        _client(
            grant_types=["client_credentials"],
            jwks={"keys": [{**KEY.as_dict(private=False), "kid": None}, rsa_key("r").as_dict()]},
        ),
        "every key needs a kid",
    ),
    "kid-twice": (
        _client(grant_types=["client_credentials"], jwks=public_jwks(ec_key("a"), ec_key("a"))),
        "a kid appears twice",
    ),
    "hmac-alg-on-a-key": (
        _client(
            grant_types=["client_credentials"],
            jwks={"keys": [{**KEY.as_dict(private=False), "alg": "HS256"}]},
        ),
        "alg must be one of ES256",
    ),
    "encryption-key": (
        _client(
            grant_types=["client_credentials"],
            jwks={"keys": [{**KEY.as_dict(private=False), "use": "enc"}]},
        ),
        "use must be sig",
    ),
    "p384-key": (
        _client(grant_types=["client_credentials"], jwks=public_jwks(P384)),
        "P-256",
    ),
    "short-rsa-key": (
        _client(grant_types=["client_credentials"], jwks=public_jwks(RSA_1024)),
        "at least 2048 bits",
    ),
    "unreadable-key": (
        _client(grant_types=["client_credentials"], jwks={"keys": [{"kty": "EC", "crv": "P-256"}]}),
        "cannot be read",
    ),
}


@pytest.mark.filterwarnings("ignore:Key size should be")
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_inconsistent_client_is_refused_naming_it(case: str) -> None:
    client, message = REFUSED[case]

    with pytest.raises(ConfigError, match=r"clients\[0\]") as caught:
        make_settings(clients=[client])

    assert message in str(caught.value)


def test_a_service_client_in_the_yaml_file_loads(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(
        "clients:\n"
        "  - id: billing\n"
        "    grant_types: [client_credentials]\n"
        "    token_endpoint_auth_method: private_key_jwt\n"
        "    jwks:\n"
        "      keys:\n"
        f"        - {{kty: EC, crv: P-256, kid: k1, x: {KEY.as_dict()['x']}, "
        f"y: {KEY.as_dict()['y']}}}\n"
        "    scopes: [billing.read]\n"
        "    audience: [https://api.internal]\n",
        encoding="utf-8",
    )

    settings = load_settings(
        {"BROKER_CONFIG": str(config), "BROKER_VAR_DIR": str(tmp_path / "var")}
    )

    (client,) = settings.clients
    assert client.auth_methods == ("private_key_jwt",)
    assert client.service_scopes == ("billing.read",)


def test_the_client_assertion_lifetime_bound_comes_from_the_environment(tmp_path: Path) -> None:
    environ = {"BROKER_VAR_DIR": str(tmp_path / "var")}

    assert load_settings(environ).client_assertion_max_lifetime == 3600
    assert (
        load_settings(
            {**environ, "BROKER_CLIENT_ASSERTION_MAX_LIFETIME": "300"}
        ).client_assertion_max_lifetime
        == 300
    )
    for refused in ("30", "100000", "soon"):
        with pytest.raises(ConfigError, match="BROKER_CLIENT_ASSERTION_MAX_LIFETIME"):
            load_settings({**environ, "BROKER_CLIENT_ASSERTION_MAX_LIFETIME": refused})
