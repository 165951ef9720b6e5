"""Properties of the ``/authorize`` request checks (``broker.oauth.authorization``): whatever the
parameters, the client check gives a client or ``ClientRejected`` (an error page), and the checks
after it an ``AuthorizationRequest`` or an ``OAuthError`` to redirect — never another exception,
which would be a 500 (OIDC Core §3.1.2.1, RFC 6749 §4.1.2.1)."""

from __future__ import annotations

import pytest
from broker.http.errors import InvalidRequest, OAuthError
from broker.oauth.authorization import (
    MAX_AGE_LIMIT,
    ClientRejected,
    validate_authorization_request,
    validate_client,
)
from hypothesis import given
from hypothesis import strategies as st
from shared.settings import Settings, make_settings

from tests.support.properties import budget, tricky_text

REDIRECT = "https://app.example/cb"
NAMES = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "response_mode",
    "code_challenge",
    "code_challenge_method",
    "provider",
    "request",
    "request_uri",
    "unknown",
]
VALUES = {
    "client_id": st.sampled_from(["app", "web", ""]),
    "redirect_uri": st.sampled_from([REDIRECT, REDIRECT + "/", ""]),
    "response_type": st.sampled_from(["code", "token", "code id_token", ""]),
    "scope": st.sampled_from(["openid", "openid email", "email", "openid admin", ""]),
    "prompt": st.sampled_from(["none", "login", "consent select_account", "none login", "x"]),
    "response_mode": st.sampled_from(["query", "form_post", "fragment", ""]),
    "code_challenge_method": st.sampled_from(["S256", "plain", ""]),
}
params = st.fixed_dictionaries(
    {},
    optional={name: VALUES.get(name, tricky_text) | tricky_text for name in NAMES},
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(
        clients=[
            {
                "id": "app",
                "secret": "app-secret-at-least-32-characters-long",
                "redirect_uris": [REDIRECT],
            }
        ]
    )


@budget(300)
@given(params)
def test_any_authorization_request_is_accepted_or_refused_with_an_oauth_error(
    settings: Settings, query: dict[str, str]
):
    try:
        client, redirect_uri = validate_client(settings, query)
    except ClientRejected:
        return
    try:
        request = validate_authorization_request(settings, client, redirect_uri, query)
    except OAuthError as exc:
        assert 400 <= exc.status_code < 500
        return
    assert request.redirect_uri == REDIRECT
    assert "openid" in request.scope.split()
    assert request.max_age is None or 0 <= request.max_age <= MAX_AGE_LIMIT


@budget(100)
@given(tricky_text)
def test_max_age_is_a_number_of_seconds_or_invalid_request(settings: Settings, max_age: str):
    client = settings.client("app")
    assert client is not None
    query = {"response_type": "code", "scope": "openid", "max_age": max_age}
    try:
        request = validate_authorization_request(settings, client, REDIRECT, query)
    except InvalidRequest:
        return
    assert max_age.isascii() and max_age.isdigit()
    assert request.max_age == int(max_age) <= MAX_AGE_LIMIT


# Regressions these properties found, one plain example each.


@pytest.mark.parametrize("max_age", ["\u00b2", "\u0661\u0662", "9" * 4301])
def test_max_age_in_other_digits_or_beyond_int_is_invalid_request(settings: Settings, max_age):
    # Was a ValueError from int() (a 500) for the superscript two and 4,301 nines, and 12
    # seconds for Arabic-Indic "12".
    client = settings.client("app")
    assert client is not None
    query = {"response_type": "code", "scope": "openid", "max_age": max_age}
    with pytest.raises(InvalidRequest, match="max_age"):
        validate_authorization_request(settings, client, REDIRECT, query)
