"""``WWW-Authenticate`` values built from any text are printable ASCII quoted-strings
(RFC 6750 §3, RFC 7235 §2.1): the broker's errors and the verifier's middleware."""

from __future__ import annotations

import base64
import json
import re

import pytest
from broker.http.errors import InvalidClient, InvalidToken
from oidc_broker_verifier import AccessTokenMiddleware, AccessTokenVerifier
from oidc_broker_verifier.challenges import MAX_VALUE_LENGTH, challenge
from starlette.types import Message, Receive, Scope, Send

HOSTILE = {
    "not Latin-1": "ключ",  # Starlette cannot even encode such a header
    "Latin-1, not ASCII": "clé",
    "quotes": 'say "hi"',
    "backslash": "back\\slash",
    "CR LF": "line\r\nSet-Cookie: a=b",
    "controls": "nul\x00 del\x7f tab\t",
    "lone surrogate": "\ud800 lone surrogate",
    "very long": "🔑" * 500,
}
# RFC 6750 §3: error_description="%x20-21 / %x23-5B / %x5D-7E" (so no quote, no backslash).
_PARAM = r'[a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_CHALLENGE = re.compile(rf"(Bearer|Basic) {_PARAM}(, {_PARAM})*")


def assert_safe(value: str) -> None:
    assert _CHALLENGE.fullmatch(value), value
    value.encode("ascii")


@pytest.mark.parametrize("text", HOSTILE.values(), ids=list(HOSTILE))
def test_a_challenge_value_is_printable_ascii_without_quotes_or_backslashes(text):
    value = challenge("Bearer", {"error": "invalid_token", "error_description": text})
    assert_safe(value)
    assert len(value) < 60 + MAX_VALUE_LENGTH


def test_a_challenge_keeps_what_is_already_safe():
    value = challenge("Bearer", {"realm": "oidc-broker", "error_description": "it's 100% fine"})
    assert value == 'Bearer realm="oidc-broker", error_description="it\'s 100% fine"'


@pytest.mark.parametrize("text", HOSTILE.values(), ids=list(HOSTILE))
def test_an_invalid_token_error_with_any_description_renders_a_401(text):
    response = InvalidToken(text).response()  # Starlette encodes the headers here
    assert response.status_code == 401
    assert_safe(response.headers["www-authenticate"])
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="oidc-broker", error="invalid_token", error_description="'
    )
    # The body has it all (a lone surrogate as its escape: no UTF-8 encoder takes it).
    described = json.loads(response.body)["error_description"]
    assert described == text.encode("utf-8", "backslashreplace").decode("utf-8")


def test_the_basic_challenge_is_unchanged():
    headers = InvalidClient("unknown client or bad credentials").response().headers
    assert headers["www-authenticate"] == 'Basic realm="oidc-broker", charset="UTF-8"'


def _b64(document: object) -> str:
    raw = json.dumps(document).encode()  # "\\u043a...": a lone surrogate too comes through
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _guarded_call(token: str) -> list[Message]:
    """One request with ``token`` through the verifier's middleware; what it sent back."""

    async def service(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the token must not get through")

    # These tokens fail on their header, before any key is needed: no JWKS is fetched.
    verifier = AccessTokenVerifier("http://127.0.0.1:9", audience="https://api.internal")
    middleware = AccessTokenMiddleware(service, verifier=verifier)
    scope = {
        "type": "http",
        "path": "/",
        "headers": [(b"authorization", b"Bearer " + token.encode())],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await middleware(scope, receive, send)
    finally:
        await verifier.aclose()
    return sent


@pytest.mark.parametrize("alg", HOSTILE.values(), ids=list(HOSTILE))
async def test_the_verifier_middleware_answers_401_whatever_the_tokens_alg(alg):
    header = {"alg": alg, "kid": "k1", "typ": "at+jwt"}
    sent = await _guarded_call(f"{_b64(header)}.{_b64({'sub': 'x'})}.c2ln")
    start = sent[0]
    assert start["status"] == 401
    challenge_value = dict(start["headers"])[b"www-authenticate"].decode("ascii")
    assert_safe(challenge_value)
    assert challenge_value.startswith('Bearer error="invalid_token", error_description="')
    assert json.loads(sent[1]["body"])["error"] == "invalid_token"
