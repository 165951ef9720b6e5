"""Client authentication at the token endpoint (RFC 6749 §2.3, §5.2; docs/security.md "Client
authentication failures")."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from urllib.parse import quote_plus

import pytest
from broker.http.errors import InvalidClient, InvalidRequest
from broker.oauth.clients import presented_credentials, verify_client
from shared.settings import ClientConfig, Settings, make_settings

# A secret with characters that RFC 6749 §2.3.1 form-urlencoding changes.
ODD_SECRET = "p@ss:w+rd/é % and at least 32 characters"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(
        clients=[
            {
                "id": "web",
                "secret": "web-secret-at-least-32-characters-long",
                "redirect_uris": ["https://a.example/cb"],
            },
            {"id": "odd.client~1", "secret": ODD_SECRET, "redirect_uris": ["https://a.example/cb"]},
            {"id": "spa", "redirect_uris": ["http://127.0.0.1:3000/callback"]},
        ]
    )


def authenticate_client(
    settings: Settings, authorization: str | None, params: Mapping[str, str]
) -> ClientConfig:
    """The checks of ``abuse_limits.authenticate`` without its counters (no assertion here)."""
    credentials = presented_credentials(authorization, params)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return verify_client(settings, credentials, now=now, audiences=()).client


def basic(client_id: str, secret: str) -> str:
    """An Authorization header as RFC 6749 §2.3.1 builds it: form-urlencode, then Base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_basic_authentication_with_the_right_secret_is_accepted(settings: Settings) -> None:
    client = authenticate_client(
        settings, basic("web", "web-secret-at-least-32-characters-long"), {}
    )

    assert client.id == "web"


def test_basic_credentials_are_form_urldecoded(settings: Settings) -> None:
    header = basic("odd.client~1", ODD_SECRET)
    assert quote_plus(ODD_SECRET) != ODD_SECRET  # the encoding really changes it

    client = authenticate_client(settings, header, {})

    assert client.id == "odd.client~1"


def test_basic_scheme_name_is_case_insensitive(settings: Settings) -> None:
    header = basic("web", "web-secret-at-least-32-characters-long").replace("Basic", "bAsIc")

    assert authenticate_client(settings, header, {}).id == "web"


def test_basic_with_a_matching_client_id_parameter_is_accepted(settings: Settings) -> None:
    client = authenticate_client(
        settings, basic("web", "web-secret-at-least-32-characters-long"), {"client_id": "web"}
    )

    assert client.id == "web"


def test_basic_with_a_different_client_id_parameter_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidRequest):
        authenticate_client(
            settings, basic("web", "web-secret-at-least-32-characters-long"), {"client_id": "spa"}
        )


def test_client_secret_post_is_accepted(settings: Settings) -> None:
    params = {"client_id": "web", "client_secret": "web-secret-at-least-32-characters-long"}

    assert authenticate_client(settings, None, params).id == "web"


def test_public_client_with_only_its_client_id_is_accepted(settings: Settings) -> None:
    client = authenticate_client(settings, None, {"client_id": "spa"})

    assert client.id == "spa"
    assert client.is_public


@pytest.mark.parametrize(
    ("authorization", "params"),
    [
        (basic("web", "wrong"), {}),
        (basic("web", ""), {}),
        (None, {"client_id": "web", "client_secret": "wrong"}),
        (None, {"client_id": "web"}),
        (None, {"client_id": "nobody", "client_secret": "x"}),
        (basic("nobody", "x"), {}),
        (None, {}),
    ],
    ids=[
        "basic-wrong-secret",
        "basic-empty-secret",
        "post-wrong-secret",
        "confidential-without-secret",
        "post-unknown-client",
        "basic-unknown-client",
        "nothing",
    ],
)
def test_failed_client_authentication_is_401_invalid_client_with_basic_challenge(
    settings: Settings, authorization: str | None, params: dict[str, str]
) -> None:
    with pytest.raises(InvalidClient) as caught:
        authenticate_client(settings, authorization, params)

    error = caught.value
    assert error.status_code == 401
    assert error.body()["error"] == "invalid_client"
    assert error.headers()["WWW-Authenticate"].startswith("Basic ")
    response = error.response()
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert response.headers["cache-control"] == "no-store"


def test_two_authentication_methods_at_once_are_refused(settings: Settings) -> None:
    params = {"client_id": "web", "client_secret": "web-secret-at-least-32-characters-long"}

    with pytest.raises(InvalidRequest, match="one client authentication method"):
        authenticate_client(
            settings, basic("web", "web-secret-at-least-32-characters-long"), params
        )


@pytest.mark.parametrize("how", ["post", "basic"])
def test_public_client_sending_a_secret_is_refused(settings: Settings, how: str) -> None:
    if how == "post":
        arguments: tuple[str | None, dict[str, str]] = (
            None,
            {"client_id": "spa", "client_secret": "guess"},
        )
    else:
        arguments = (basic("spa", "guess"), {})

    with pytest.raises(InvalidClient):
        authenticate_client(settings, *arguments)


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
    ],
    ids=["empty", "not-base64", "no-colon", "not-utf8"],
)
def test_malformed_basic_credentials_are_invalid_client(settings: Settings, header: str) -> None:
    with pytest.raises(InvalidClient, match="malformed"):
        authenticate_client(settings, header, {"client_id": "web"})
