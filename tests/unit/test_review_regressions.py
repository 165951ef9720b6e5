"""Regressions: secrets in reprs, RFC 6749 Basic encoding upstream, malformed upstream fields,
column limits of upstream identities, and non-ASCII client credentials."""

from __future__ import annotations

import base64
from urllib.parse import unquote_plus

import httpx2
import pytest
from broker.http.errors import InvalidClient
from broker.oauth.clients import presented_credentials
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.profile_columns import UnusableIdentity, fit_columns
from shared.providers.base import LoginStart, UpstreamProfile
from shared.providers.errors import ProviderInvalidResponse
from shared.providers.oauth2 import OAuth2Credentials, OAuth2Endpoints, OAuth2Flow
from shared.settings import make_settings

ENDPOINTS = OAuth2Endpoints("https://idp.test/authorize", "https://idp.test/token")
START = LoginStart("https://broker.test/cb", "state", "nonce", "v" * 64)


def test_keyring_and_settings_reprs_never_show_key_material():
    keyring = Keyring.generate("k1")
    material = keyring.keys[0][1]
    for text in (repr(keyring), repr(make_settings(keyring=keyring))):
        assert "k1" in text
        assert repr(material) not in text
        assert base64.urlsafe_b64encode(material).decode().rstrip("=") not in text


def _flow(handler, secret: str = "s+cr%t:x") -> OAuth2Flow:
    return OAuth2Flow(
        OAuth2Credentials("broker id", secret, "client_secret_basic"),
        scopes=("openid",),
        clock=FrozenClock(),
        transport=httpx2.MockTransport(handler),
    )


async def test_upstream_basic_credentials_are_form_urlencoded_first():
    seen: dict[str, str] = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen["authorization"] = request.headers["authorization"]
        return httpx2.Response(200, json={"access_token": "a", "token_type": "Bearer"})

    await _flow(handler).exchange_code(ENDPOINTS, "code", START)
    decoded = base64.b64decode(seen["authorization"].removeprefix("Basic ")).decode()
    encoded_id, _, encoded_secret = decoded.partition(":")
    assert encoded_id == "broker+id"  # RFC 6749 §2.3.1 / application/x-www-form-urlencoded
    assert unquote_plus(encoded_secret) == "s+cr%t:x"
    assert ":" not in encoded_secret


async def test_a_token_response_field_of_the_wrong_type_is_an_invalid_response():
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"access_token": "a", "expires_in": [3600]})

    with pytest.raises(ProviderInvalidResponse):
        await _flow(handler).exchange_code(ENDPOINTS, "code", START)


def test_display_fields_are_clipped_and_an_overlong_email_is_dropped_unverified():
    profile = fit_columns(
        UpstreamProfile(
            subject="s",
            name="n" * 500,
            email="e" * 400 + "@x.example",
            email_verified=True,
            picture="https://x/" + "p" * 3000,
        )
    )
    assert profile.name == "n" * 200
    assert profile.email is None and profile.email_verified is False
    assert profile.picture is None


@pytest.mark.parametrize("subject", ["", "s" * 256])
def test_an_unusable_subject_is_refused_not_truncated(subject):
    with pytest.raises(UnusableIdentity):
        fit_columns(UpstreamProfile(subject=subject))


def test_non_ascii_basic_credentials_are_invalid_client_not_a_crash():
    with pytest.raises(InvalidClient):
        presented_credentials("Basic \xe9\xe9", {})
