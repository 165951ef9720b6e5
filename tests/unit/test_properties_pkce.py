"""Properties of PKCE (RFC 7636; docs/security.md "PKCE"): ``/authorize`` takes only an S256
``code_challenge`` of the §4.2 form, the token endpoint only a §4.1 ``code_verifier``, and a
verifier's S256 is always a challenge the broker accepts."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from broker.http.errors import InvalidGrant, InvalidRequest
from broker.oauth.authorization import validate_authorization_request
from broker.oauth.codes import _check_verifier, s256
from hypothesis import given
from hypothesis import strategies as st
from shared.settings import ClientConfig, Settings, make_settings

from tests.support.properties import any_text, budget

REDIRECT = "https://app.example/cb"
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# RFC 7636 §4.1 (code_verifier) and §4.2 (code_challenge): 43 to 128 unreserved characters.
RFC7636_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}")

verifiers = st.text(UNRESERVED, min_size=43, max_size=128)
# Near misses as well as anything: one character off, one too short or long, a newline added.
near_misses = st.one_of(
    any_text,
    st.text(UNRESERVED, min_size=40, max_size=131),
    st.tuples(
        verifiers, st.sampled_from(["\n", "\r\n", " ", "=", "+", "/", "\x00", "é", "%7E"])
    ).map("".join),
    st.tuples(st.sampled_from(["\n", " ", "="]), verifiers).map("".join),
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(clients=[{"id": "spa", "redirect_uris": [REDIRECT]}])


@pytest.fixture(scope="module")
def client(settings: Settings) -> ClientConfig:
    found = settings.client("spa")
    assert found is not None
    return found


def authorize(settings: Settings, client: ClientConfig, **pkce: str) -> tuple[str | None, ...]:
    params = {"response_type": "code", "scope": "openid", **pkce}
    request = validate_authorization_request(settings, client, REDIRECT, params)
    return request.code_challenge, request.code_challenge_method


@budget(200)
@given(near_misses)
def test_only_an_rfc7636_challenge_is_accepted(settings, client, challenge: str):
    try:
        accepted = authorize(
            settings, client, code_challenge=challenge, code_challenge_method="S256"
        )
    except InvalidRequest:
        assert not RFC7636_VALUE.fullmatch(challenge)
        return
    assert RFC7636_VALUE.fullmatch(challenge)
    assert accepted == (challenge, "S256")


@budget(50)
@given(verifiers, st.none() | any_text.filter(lambda method: method != "S256"))
def test_any_method_but_s256_is_refused(settings, client, verifier: str, method: str | None):
    pkce = {"code_challenge": s256(verifier)}
    if method is not None:
        pkce["code_challenge_method"] = method
    with pytest.raises(InvalidRequest):
        authorize(settings, client, **pkce)


@budget(100)
@given(verifiers)
def test_a_verifiers_s256_is_an_accepted_challenge_that_decodes_to_its_sha256(
    settings, client, verifier: str
):
    challenge = s256(verifier)

    assert authorize(settings, client, code_challenge=challenge, code_challenge_method="S256") == (
        challenge,
        "S256",
    )
    assert len(challenge) == 43
    digest = base64.urlsafe_b64decode(challenge + "=")
    assert digest == hashlib.sha256(verifier.encode("ascii")).digest()


@budget(200)
@given(st.one_of(verifiers, near_misses))
def test_only_an_rfc7636_verifier_is_accepted(verifier: str):
    try:
        _check_verifier(verifier)
    except InvalidGrant:
        assert not RFC7636_VALUE.fullmatch(verifier)
        return
    assert RFC7636_VALUE.fullmatch(verifier)
    s256(verifier)  # ASCII, so hashing it cannot fail


# Regressions these properties found, one plain example each.


def test_a_challenge_with_a_trailing_newline_is_refused(settings, client):
    # Was accepted ("$" matches before a final newline) and stored: no verifier could match it.
    challenge = s256("v" * 43) + "\n"
    with pytest.raises(InvalidRequest, match="code_challenge is malformed"):
        authorize(settings, client, code_challenge=challenge, code_challenge_method="S256")
