"""``/authorize`` request validation (docs/security.md "Exact redirect URIs", "PKCE", "Issuer in
authorization responses"; RFC 6749 §4.1.2.1, RFC 9700 §2.1)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from broker.http.errors import (
    InvalidRequest,
    InvalidScope,
    LoginRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    UnsupportedResponseType,
)
from broker.http.forms import single_params
from broker.oauth.authorization import (
    ClientRejected,
    redirect_with,
    validate_authorization_request,
    validate_client,
)
from broker.oauth.codes import s256
from broker.oauth.responses import error_response
from shared.settings import ClientConfig, Settings, make_settings

ISSUER = "http://127.0.0.1:8000"
REDIRECT = "http://127.0.0.1:3000/callback"
LOCALHOST_REDIRECT = "http://localhost:3000/callback"
CHALLENGE = s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(
        issuer=ISSUER,
        clients=[
            {"id": "spa", "redirect_uris": [REDIRECT, LOCALHOST_REDIRECT]},
            {
                "id": "web",
                "secret": "web-secret-at-least-32-characters-long",
                "redirect_uris": ["https://app.example.com/cb?tenant=acme"],
                "scopes": ["openid", "email"],
            },
        ],
    )


def spa(settings: Settings) -> ClientConfig:
    client = settings.client("spa")
    assert client is not None
    return client


def web(settings: Settings) -> ClientConfig:
    client = settings.client("web")
    assert client is not None
    return client


def pkce_params(**overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "spa",
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "xyz",
        "nonce": "n-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return params


# --- client and redirect URI --------------------------------------------------------------------


@pytest.mark.parametrize("uri", [REDIRECT, LOCALHOST_REDIRECT])
def test_registered_redirect_uri_is_accepted(settings: Settings, uri: str) -> None:
    client, redirect_uri = validate_client(settings, {"client_id": "spa", "redirect_uri": uri})

    assert client.id == "spa"
    assert redirect_uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        REDIRECT + "/",
        "http://127.0.0.1:3000/Callback",
        "http://LOCALHOST:3000/callback",
        REDIRECT + "?next=/admin",
        "http://127.0.0.1:3001/callback",
        "http://127.0.0.1/callback",
        "https://127.0.0.1:3000/callback",
        REDIRECT + "#fragment",
        "https://evil.example/callback",
    ],
    ids=[
        "trailing-slash",
        "path-case",
        "host-case",
        "extra-query",
        "other-port",
        "no-port",
        "other-scheme",
        "fragment",
        "other-host",
    ],
)
def test_redirect_uri_differing_from_the_registered_one_is_refused(
    settings: Settings, uri: str
) -> None:
    with pytest.raises(ClientRejected, match="not registered"):
        validate_client(settings, {"client_id": "spa", "redirect_uri": uri})


def test_redirect_uri_registered_for_another_client_is_refused(settings: Settings) -> None:
    with pytest.raises(ClientRejected):
        validate_client(settings, {"client_id": "web", "redirect_uri": REDIRECT})


def test_missing_redirect_uri_is_refused(settings: Settings) -> None:
    with pytest.raises(ClientRejected, match="redirect_uri"):
        validate_client(settings, {"client_id": "spa"})


def test_unknown_client_is_refused(settings: Settings) -> None:
    with pytest.raises(ClientRejected, match="not registered"):
        validate_client(settings, {"client_id": "nobody", "redirect_uri": REDIRECT})


def test_missing_client_id_is_refused(settings: Settings) -> None:
    with pytest.raises(ClientRejected, match="client_id"):
        validate_client(settings, {"redirect_uri": REDIRECT})


# --- parameters ---------------------------------------------------------------------------------


def test_repeated_parameter_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="state"):
        single_params([("client_id", "spa"), ("state", "a"), ("state", "b")])


def test_over_long_parameter_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="too long"):
        single_params([("state", "x" * 5000)])


def test_single_parameters_are_kept() -> None:
    assert single_params([("client_id", "spa"), ("state", "a")]) == {
        "client_id": "spa",
        "state": "a",
    }


# --- the authorization request ------------------------------------------------------------------


def test_valid_public_client_request_with_s256_is_accepted(settings: Settings) -> None:
    request = validate_authorization_request(settings, spa(settings), REDIRECT, pkce_params())

    assert request.client.id == "spa"
    assert request.redirect_uri == REDIRECT
    assert request.scope == "openid email"
    assert request.state == "xyz"
    assert request.nonce == "n-1"
    assert request.code_challenge == CHALLENGE
    assert request.code_challenge_method == "S256"


def test_missing_response_type_is_invalid_request(settings: Settings) -> None:
    params = pkce_params()
    del params["response_type"]

    with pytest.raises(InvalidRequest, match="response_type"):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


@pytest.mark.parametrize("response_type", ["token", "id_token", "code id_token"])
def test_response_type_other_than_code_is_unsupported(
    settings: Settings, response_type: str
) -> None:
    params = pkce_params(response_type=response_type)

    with pytest.raises(UnsupportedResponseType):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_public_client_without_code_challenge_is_refused(settings: Settings) -> None:
    params = pkce_params()
    del params["code_challenge"], params["code_challenge_method"]

    with pytest.raises(InvalidRequest, match="PKCE"):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_plain_code_challenge_method_is_refused(settings: Settings) -> None:
    params = pkce_params(code_challenge="x" * 43, code_challenge_method="plain")

    with pytest.raises(InvalidRequest, match="S256"):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_code_challenge_without_method_is_refused(settings: Settings) -> None:
    # RFC 7636 §4.3: an omitted method means `plain`.
    params = pkce_params()
    del params["code_challenge_method"]

    with pytest.raises(InvalidRequest, match="S256"):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_malformed_code_challenge_is_refused(settings: Settings) -> None:
    params = pkce_params(code_challenge="too-short")

    with pytest.raises(InvalidRequest, match="malformed"):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_confidential_client_without_pkce_is_accepted(settings: Settings) -> None:
    redirect = "https://app.example.com/cb?tenant=acme"
    params = {"response_type": "code", "client_id": "web", "redirect_uri": redirect}
    params["scope"] = "openid"

    request = validate_authorization_request(settings, web(settings), redirect, params)

    assert request.code_challenge is None
    assert request.code_challenge_method is None


def test_scope_without_openid_is_invalid_scope(settings: Settings) -> None:
    params = pkce_params(scope="email profile")

    with pytest.raises(InvalidScope):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_unknown_and_unallowed_scopes_are_dropped_from_the_grant(settings: Settings) -> None:
    redirect = "https://app.example.com/cb?tenant=acme"
    params = {
        "response_type": "code",
        "scope": "openid admin email profile email",
        "redirect_uri": redirect,
    }

    request = validate_authorization_request(settings, web(settings), redirect, params)

    # `admin` is unknown, `profile` is not registered for this client, `email` once.
    assert request.scope == "openid email"


def test_prompt_none_requires_login(settings: Settings) -> None:
    with pytest.raises(LoginRequired):
        validate_authorization_request(
            settings, spa(settings), REDIRECT, pkce_params(prompt="none")
        )


def test_prompt_none_combined_with_another_value_is_invalid(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="prompt"):
        validate_authorization_request(
            settings, spa(settings), REDIRECT, pkce_params(prompt="none login")
        )


def test_request_object_is_not_supported(settings: Settings) -> None:
    params = pkce_params(request="eyJhbGciOiJub25lIn0.e30.")

    with pytest.raises(RequestNotSupported):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_request_uri_is_not_supported(settings: Settings) -> None:
    params = pkce_params(request_uri="https://evil.example/req.jwt")

    with pytest.raises(RequestUriNotSupported):
        validate_authorization_request(settings, spa(settings), REDIRECT, params)


def test_form_post_response_mode_is_accepted_and_others_refused(settings: Settings) -> None:
    accepted = validate_authorization_request(
        settings, spa(settings), REDIRECT, pkce_params(response_mode="form_post")
    )
    assert accepted.response_mode == "form_post"
    with pytest.raises(InvalidRequest, match="response_mode"):
        validate_authorization_request(
            settings, spa(settings), REDIRECT, pkce_params(response_mode="fragment")
        )


# --- redirects back to the client ---------------------------------------------------------------


def test_redirect_with_keeps_the_redirect_uri_query_and_adds_parameters() -> None:
    location = redirect_with(
        "https://app.example.com/cb?tenant=acme", {"code": "c-1", "state": "s 1", "iss": ISSUER}
    )

    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "app.example.com", "/cb")
    assert parse_qs(parts.query) == {
        "tenant": ["acme"],
        "code": ["c-1"],
        "state": ["s 1"],
        "iss": [ISSUER],
    }


def test_redirect_with_leaves_out_absent_values() -> None:
    location = redirect_with(REDIRECT, {"code": "c-1", "state": None})

    assert parse_qs(urlsplit(location).query) == {"code": ["c-1"]}


def test_error_redirect_carries_error_state_and_issuer() -> None:
    response = error_response(
        ISSUER, REDIRECT, InvalidScope("the openid scope is required"), "xyz", "query"
    )
    location = response.headers["location"]

    assert location.startswith(REDIRECT + "?")
    assert parse_qs(urlsplit(location).query) == {
        "error": ["invalid_scope"],
        "error_description": ["the openid scope is required"],
        "state": ["xyz"],
        "iss": [ISSUER],
    }


def test_form_post_errors_are_posted_to_the_redirect_uri_with_a_tight_csp() -> None:
    response = error_response(ISSUER, REDIRECT, InvalidScope("<b>x</b>"), "s&1", "form_post")
    body = response.body.decode()
    assert response.status_code == 200
    assert f'action="{REDIRECT}"' in body
    assert 'name="state" value="s&amp;1"' in body
    assert "<b>" not in body
    csp = response.headers["content-security-policy"]
    assert "form-action http://127.0.0.1:3000" in csp
    assert "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
