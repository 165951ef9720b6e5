"""Properties of the ``Authorization`` header parsers: HTTP Basic client authentication
(``broker.oauth.clients``, RFC 6749 §2.3.1) and Bearer extraction (``broker.oauth.callers``,
RFC 6750 §2). Any header is credentials, a token, or the documented 401/400, never another
exception."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any
from urllib.parse import quote_plus

import pytest
from broker.http.errors import InvalidClient, InvalidRequest, InvalidToken, OAuthError
from broker.oauth.callers import bearer_token
from broker.oauth.clients import Credentials, presented_credentials, verify_client
from hypothesis import given
from hypothesis import strategies as st
from shared.settings import Settings, make_settings
from starlette.requests import Request

from tests.support.properties import budget, decoded_text, header_text

SECRET = "web-secret-at-least-32-characters-long"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings(
        clients=[
            {"id": "web", "secret": SECRET, "redirect_uris": ["https://a.example/cb"]},
            {"id": "spa", "redirect_uris": ["https://a.example/spa"]},
        ]
    )


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode each part, join with a colon, then Base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


scheme = st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "Digest", "", "Basic\t"])
basic_headers = st.one_of(
    header_text,
    st.tuples(scheme, header_text).map(" ".join),
    # Base64 of anything: no colon, invalid UTF-8, NUL, percent escapes, '+'.
    st.binary(max_size=80).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
    st.tuples(decoded_text, decoded_text).map(
        lambda pair: "Basic " + base64.b64encode(":".join(pair).encode()).decode()
    ),
    # Base64 with missing or extra padding, or the URL-safe alphabet.
    st.binary(min_size=1, max_size=40).map(
        lambda raw: "Basic " + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    ),
)
form_params = st.dictionaries(
    st.sampled_from(["client_id", "client_secret", "grant_type"]), decoded_text, max_size=3
)


@budget(200)
@given(basic_headers, form_params)
def test_any_authorization_header_is_credentials_or_the_documented_error(
    header: str, params: dict[str, str]
):
    try:
        credentials = presented_credentials(header, params)
    except (InvalidClient, InvalidRequest) as exc:
        _assert_renders(exc)
        return
    assert isinstance(credentials.client_id, str)


@budget(100)
@given(decoded_text, decoded_text)
def test_basic_credentials_round_trip_through_form_urlencoding(client_id: str, secret: str):
    credentials = presented_credentials(basic(client_id, secret), {})

    assert credentials == Credentials(client_id, secret, "client_secret_basic")


@budget(50)
@given(decoded_text.filter(lambda text: ":" not in text))
def test_basic_credentials_without_a_colon_are_invalid_client(user_pass: str):
    header = "Basic " + base64.b64encode(user_pass.encode()).decode()

    with pytest.raises(InvalidClient):
        presented_credentials(header, {})


@budget(100)
@given(st.sampled_from(["web", "spa", "unknown", ""]), st.none() | decoded_text)
def test_only_the_registered_secret_authenticates(
    settings: Settings, client_id: str, secret: str | None
):
    method = "none" if secret is None else "client_secret_post"
    try:
        client = verify_client(
            settings, Credentials(client_id, secret, method), now=NOW, audiences=()
        ).client
    except InvalidClient as exc:
        assert exc.status_code == 401
        assert exc.headers()["WWW-Authenticate"].startswith("Basic ")
        return
    assert (client.id, secret) in {("web", SECRET), ("spa", None), ("spa", "")}


def request_with(
    authorization: bytes | None, body: bytes = b"", method: str = "GET", form: bool = False
) -> Request:
    headers = [(b"authorization", authorization)] if authorization is not None else []
    if form:
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    scope = {"type": "http", "method": method, "path": "/", "headers": headers, "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


bearer_headers = st.one_of(
    st.none(),
    st.binary(max_size=120),
    st.tuples(
        st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b"", b"Bearer\t"]),
        st.binary(max_size=120),
    ).map(b" ".join),
)
bodies = st.one_of(
    st.binary(max_size=120),
    st.lists(st.tuples(st.sampled_from([b"access_token", b"a"]), st.binary(max_size=20))).map(
        lambda pairs: b"&".join(name + b"=" + value for name, value in pairs)
    ),
)


@budget(200)
@given(bearer_headers, bodies, st.sampled_from(["GET", "POST"]), st.booleans(), st.booleans())
async def test_any_bearer_request_is_a_token_or_the_documented_error(
    header: bytes | None, body: bytes, method: str, form: bool, allow_form: bool
):
    request = request_with(header, body, method, form)
    try:
        token = await bearer_token(request, allow_form=allow_form)
    except (InvalidToken, InvalidRequest) as exc:
        _assert_renders(exc)
        return
    assert token
    assert token == token.strip() or not header  # a header's token comes trimmed


def _assert_renders(error: OAuthError) -> None:
    """The error becomes a response that can be sent: a 4xx, headers Latin-1."""
    response = error.response()
    assert 400 <= response.status_code < 500
    for name, value in response.raw_headers:
        name.decode("latin-1")
        value.decode("latin-1")
