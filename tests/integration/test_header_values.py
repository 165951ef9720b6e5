"""Values quoted from a request are safe to send (docs/security.md "Header values from input").

Tokens whose JOSE header or claims carry characters outside Latin-1, and Bearer values that are
not ASCII, get 401 ``invalid_token`` at ``/userinfo`` and the first-party API, ``active: false``
at ``/introspect`` and a rejection from ``oidc_broker_verifier``: never a 500. Redirects
whose parameters (``state``, an error description quoting the request) are not ASCII carry a
valid percent-encoded ``Location`` that gives the values back. An error quoting a JSON key that
is a lone surrogate is a 400, not a 500.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from oidc_broker_verifier import AccessTokenMiddleware, AccessTokenVerifier, TokenRejected
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import BROKER_ISSUER, WEB_REDIRECT
from tests.support.flows import authorize, login, query_of

pytestmark = pytest.mark.integration

BACKEND = ("backend", "backend-secret-at-least-32-characters")
SIGNED_OUT = "http://127.0.0.1:3000/signed-out"
JSON = "application/json"
# Not Latin-1, Latin-1 but not ASCII, and everything that needs escaping in a URL or a header.
HOSTILE_STATE = 'ключ clé "q" <a> \\ \x7f %zz +&=#'
# RFC 6750 §3 quoted values: %x20-21 / %x23-5B / %x5D-7E.
_PARAM = r'[a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_BEARER_CHALLENGE = re.compile(rf'Bearer realm="oidc-broker", error="invalid_token"(, {_PARAM})*')


def _b64(document: object) -> str:
    raw = json.dumps(document, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims() -> dict[str, Any]:
    return {
        "iss": BROKER_ISSUER,
        "sub": "00000000-0000-4000-8000-000000000000",
        "aud": BROKER_ISSUER,
        "exp": 4_000_000_000,
        "iat": 1_700_000_000,
        "jti": "j",
        "client_id": "web",
        "sid": "00000000-0000-4000-8000-000000000001",
    }


def hostile_tokens() -> dict[str, str]:
    """Tokens (ASCII on the wire: the strange characters are inside the base64url)."""
    stranger = ECKey.generate_key("P-256", parameters={"kid": "ключ"})
    unsigned = ".".join((_b64(_claims()), "c2ln"))
    return {
        "kid not Latin-1": jwt.encode(
            {"alg": "ES256", "kid": "ключ", "typ": "at+jwt"}, _claims(), stranger
        ),
        "alg not Latin-1": _b64({"alg": "ключ", "kid": "k", "typ": "at+jwt"}) + "." + unsigned,
        "typ not Latin-1": jwt.encode(
            {"alg": "ES256", "kid": "ключ", "typ": "ключ"}, _claims(), stranger
        ),
        "claims not Latin-1": jwt.encode(
            {"alg": "ES256", "kid": "ключ", "typ": "at+jwt"},
            {**_claims(), "iss": "ключ", "sub": "ключ", "client_id": 'é"\\'},
            stranger,
        ),
        "header quotes": _b64({"alg": 'ES256"\\', "kid": "k", "typ": "at+jwt"}) + "." + unsigned,
        "header not JSON": base64.urlsafe_b64encode("ключ".encode()).decode() + ".e30.c2ln",
    }


TOKENS = hostile_tokens()
# Authorization header values that are not ASCII at all (UTF-8, Latin-1 bytes, quotes).
RAW_BEARERS = {
    "UTF-8 bytes": "Bearer ключ.ключ.ключ".encode(),
    "Latin-1 bytes": b"Bearer \xe9t\xe9.\xe9.\xe9",
    "quotes and backslashes": b'Bearer "a".\\b\\."c"',
}
AUTHORIZATIONS = {
    **{name: f"Bearer {token}".encode() for name, token in TOKENS.items()},
    **RAW_BEARERS,
}


def assert_invalid_token(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    challenge = response.headers.raw  # the bytes on the wire
    (value,) = [v for k, v in challenge if k.lower() == b"www-authenticate"]
    assert _BEARER_CHALLENGE.fullmatch(value.decode("ascii")), value


@pytest.mark.parametrize("authorization", AUTHORIZATIONS.values(), ids=list(AUTHORIZATIONS))
async def test_userinfo_and_the_profile_api_answer_401_for_any_bearer_value(broker, authorization):
    headers = {"Authorization": authorization}
    assert_invalid_token(await broker.get("/userinfo", headers=headers))
    assert_invalid_token(await broker.post("/userinfo", headers=headers))
    assert_invalid_token(await broker.get("/auth/oauth2/profile", headers=headers))
    assert_invalid_token(
        await broker.put("/auth/oauth2/profile", headers=headers, json={"display_name": "x"})
    )


@pytest.mark.parametrize("token", TOKENS.values(), ids=list(TOKENS))
async def test_a_hostile_token_in_the_form_body_is_a_401_too(broker, token):
    assert_invalid_token(await broker.post("/userinfo", data={"access_token": token}))


@pytest.mark.parametrize(
    "token", [*TOKENS.values(), "ключ", "ключ.ключ.ключ", 'é"\\'], ids=[*TOKENS, "a", "b", "c"]
)
async def test_introspection_of_a_hostile_token_is_just_inactive(broker, token):
    response = await broker.post("/introspect", data={"token": token}, auth=BACKEND)
    assert response.status_code == 200
    assert response.json() == {"active": False}


@pytest.fixture
async def verifier(broker: httpx2.AsyncClient) -> AsyncIterator[AccessTokenVerifier]:
    """The verifier a resource server runs, fetching the broker's JWKS in-process."""
    yield AccessTokenVerifier(BROKER_ISSUER, audience=BROKER_ISSUER, http=broker)


@pytest.mark.parametrize("token", TOKENS.values(), ids=list(TOKENS))
async def test_the_shipped_verifier_rejects_a_hostile_token(verifier, token):
    with pytest.raises(TokenRejected):
        await verifier.verify(token)


@pytest.mark.parametrize("authorization", AUTHORIZATIONS.values(), ids=list(AUTHORIZATIONS))
async def test_the_verifier_middleware_answers_401_for_any_bearer_value(verifier, authorization):
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"sub": "never"})

    service = Starlette(routes=[Route("/whoami", whoami)])
    service.add_middleware(AccessTokenMiddleware, verifier=verifier)
    transport = httpx2.ASGITransport(app=service)
    async with httpx2.AsyncClient(transport=transport, base_url="http://svc") as client:
        response = await client.get("/whoami", headers={"Authorization": authorization})
    assert response.status_code == 401
    (value,) = [v for k, v in response.headers.raw if k.lower() == b"www-authenticate"]
    assert re.fullmatch(rf'Bearer error="invalid_token"(, {_PARAM})*', value.decode("ascii"))


def assert_location_gives_back(response: httpx2.Response, **expected: str) -> dict[str, str]:
    """A redirect whose Location is printable ASCII (percent-encoded) and whose query decodes
    to ``expected``."""
    assert response.status_code in (302, 303), response.text[:300]
    location = response.headers["location"]
    assert re.fullmatch(r"[\x21-\x7e]+", location), location
    assert not set(location) & set('"<>\\^`{|}'), location
    params = query_of(location)
    for name, value in expected.items():
        assert params[name] == value, (name, params)
    return params


def _authorize_params(**extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": WEB_REDIRECT,
        "scope": "openid",
        "state": HOSTILE_STATE,
        **extra,
    }


async def test_an_authorization_error_redirect_percent_encodes_state_and_description(broker):
    params = _authorize_params(prompt="ключ")  # refused, quoted in the error description
    response = await broker.get("/authorize", params=params)
    back = assert_location_gives_back(response, state=HOSTILE_STATE, error="invalid_request")
    assert "ключ" in back["error_description"]
    posted = await broker.post("/authorize", data=params)
    assert_location_gives_back(posted, state=HOSTILE_STATE, error="invalid_request")


async def test_a_successful_sign_in_gives_back_a_hostile_state_percent_encoded(broker):
    result = await authorize(broker, provider="dev", extra={"state": HOSTILE_STATE})
    assert_location_gives_back(result.hops[-1], state=HOSTILE_STATE)
    assert result.params["code"]


async def test_the_dev_login_form_redirects_with_a_hostile_state_percent_encoded(broker):
    response = await broker.post(
        "/auth/oauth2/dev/dev-login",
        data={"state": HOSTILE_STATE, "email": "ada@example.com", "name": "Ада"},
    )
    assert_location_gives_back(response, state=HOSTILE_STATE)


async def test_logout_redirects_with_a_hostile_state_percent_encoded(broker):
    tokens = await login(broker, provider="dev")
    response = await broker.get(
        "/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": SIGNED_OUT,
            "state": HOSTILE_STATE,
        },
    )
    assert_location_gives_back(response, state=HOSTILE_STATE)


async def test_an_error_quoting_a_lone_surrogate_is_a_400_not_a_500(broker):
    tokens = await login(broker, provider="dev")
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "content-type": JSON}
    body = b'{"\\ud800": "x"}'  # valid JSON; the key is no valid UTF-8
    for method, path in (("PUT", "/auth/oauth2/profile"), ("DELETE", "/auth/oauth2/revoke")):
        response = await broker.request(method, path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {
            "error": "invalid_request",
            "error_description": "unknown field: \\ud800",
        }
