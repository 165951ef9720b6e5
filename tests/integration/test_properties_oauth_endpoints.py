"""Properties of the endpoints that parse request input, through the real app and PostgreSQL:
whatever a client or browser sends — a valid request with one hostile value, a hostile
``Authorization`` header, a body of any bytes — the answer is the documented one (an OAuth
error with its RFC code and status, an error page, a redirect to a registered URI), never a
5xx (docs/http-api.md "CORS, outages and errors": bad input never gets a 500)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from shared.crypto.keyring import Keyring

from tests.conftest import WEB_REDIRECT, broker_settings
from tests.support.accounts import sign_in
from tests.support.flows import pkce_pair
from tests.support.properties import budget, decoded_text, header_text, tricky_text
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

BACKEND_SECRET = "backend-secret-at-least-32-characters"
RFC_CODES = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
}


@dataclass(frozen=True)
class Broker:
    http: httpx2.AsyncClient
    upstream: str  # the upstream IdP's origin: where a started login goes
    user: dict[str, str]  # a signed-in user's Bearer headers


@pytest.fixture(scope="module")
async def broker(database_url: str, upstream_idp: str, keyring: Keyring) -> AsyncIterator[Broker]:
    """One broker for every example of this module, with a signed-in user. Abuse limits are
    off: a property sends many bad requests on purpose."""
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        client_auth_failure_limit=0,
        client_auth_address_failure_limit=0,
        client_auth_client_failure_limit=0,
        login_start_limit=0,
    )
    async with (
        running_broker(settings) as (_runtime, http),
        httpx2.AsyncClient(base_url=upstream_idp) as idp,
    ):
        _subject, headers = await sign_in(http, idp)
        yield Broker(http, upstream_idp, headers)


# Values that a decoded parameter may hold, and that no endpoint should choke on.
hostile = st.one_of(
    tricky_text,
    st.sampled_from(["\x00", "a\x00b", "\ufffd", "\u202e", "é", "\U0001f511", "%00", "a" * 3000]),
)
ODD_CHARACTERS = ["\x00", "\n", " ", "\ufffd", "\u00b2", "é", "%00", "/", "#", "\U0001f511"]
hostile_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


@dataclass(frozen=True)
class Mutation:
    """One way to spoil a valid request, tried on each of its parameters in turn (so that no
    parameter escapes however few examples run): append an odd character to the value,
    replace it, remove the parameter, or send it twice."""

    kind: str
    value: str

    def applied(self, base: dict[str, str], names: list[str]) -> Iterator[list[tuple[str, str]]]:
        for name in names:
            params = dict(base)
            if self.kind == "remove":
                params.pop(name, None)
            elif self.kind == "append":
                params[name] = params.get(name, "1") + self.value
            else:
                params[name] = self.value
            pairs = list(params.items())
            if self.kind == "repeat":
                pairs.append((name, base.get(name, "1")))
            yield pairs


# Always tried as well as what the generator draws: a few dozen examples may not reach them.
NUL_APPENDED = Mutation("append", "\x00")
mutations = st.one_of(
    st.builds(Mutation, st.just("append"), st.sampled_from(ODD_CHARACTERS)),
    st.builds(Mutation, st.sampled_from(["replace", "repeat"]), hostile),
    st.just(Mutation("remove", "")),
)


def assert_oauth_error(response: httpx2.Response, *statuses: int) -> None:
    """A JSON OAuth error with a registered code, or one of the success ``statuses``."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code in statuses:
        return
    body = response.json()
    assert body["error"] in RFC_CODES, body
    if response.status_code == 401:
        assert response.headers["www-authenticate"].split()[0] in ("Basic", "Bearer")


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


authorization_headers = st.one_of(
    st.none(),
    st.just(basic("backend", BACKEND_SECRET)),
    header_text.map(lambda text: f"Basic {text}"),
    header_text.map(lambda text: f"Bearer {text}"),
    st.tuples(hostile, hostile).map(lambda pair: basic(*pair)),
    header_text,
)


def headers_of(authorization: str | None, content_type: str) -> dict[str, bytes]:
    headers = {"content-type": content_type.encode()}
    if authorization is not None:  # sent as the bytes a client would (httpx2 wants ASCII str)
        headers["authorization"] = authorization.encode("latin-1")
    return headers


VERIFIER, CHALLENGE = pkce_pair()
AUTHORIZE = {
    "client_id": "web",
    "redirect_uri": WEB_REDIRECT,
    "response_type": "code",
    "scope": "openid email",
    "state": "s",
    "nonce": "n",
    "code_challenge": CHALLENGE,
    "code_challenge_method": "S256",
    "provider": "corp",
}
AUTHORIZE_NAMES = [*AUTHORIZE, "prompt", "max_age", "response_mode", "request", "request_uri"]


@budget(15, shrink=False)
@given(
    st.sampled_from(["/authorize", "/auth/oauth2/corp/login", "/auth/oauth2/dev/login"]),
    mutations,
)
@example(path="/authorize", mutation=NUL_APPENDED)
async def test_any_authorization_request_is_a_page_or_a_redirect_to_a_known_place(
    broker: Broker, path: str, mutation: Mutation
):
    for pairs in mutation.applied(AUTHORIZE, AUTHORIZE_NAMES):
        response = await broker.http.get(path, params=pairs)

        status = response.status_code
        assert status in (200, 302, 400, 404), (pairs, status, response.text[:300])
        if status != 302:
            assert "location" not in response.headers
            continue
        location = response.headers["location"]
        if location.startswith(WEB_REDIRECT + "?"):
            query = urlsplit(location).query
            assert "error=" in query or "code=" in query
            continue
        # A login started: upstream, or the dev provider's form on the broker.
        assert location.startswith((broker.upstream, "http://127.0.0.1:8000/auth/oauth2/dev/"))


TOKEN_FORMS = [
    {"grant_type": "authorization_code", "code": "c", "redirect_uri": WEB_REDIRECT},
    {"grant_type": "refresh_token", "refresh_token": "r", "scope": "openid"},
]
TOKEN_NAMES = ["grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope"]


@budget(10, shrink=False)
@given(st.sampled_from(TOKEN_FORMS), mutations, authorization_headers)
@example(form=TOKEN_FORMS[0], mutation=NUL_APPENDED, authorization=None)
@example(form=TOKEN_FORMS[1], mutation=NUL_APPENDED, authorization=None)
async def test_any_token_request_is_an_oauth_error(
    broker: Broker, form: dict[str, str], mutation: Mutation, authorization: str | None
):
    base = {**form, "client_id": "web", "code_verifier": VERIFIER}
    headers = headers_of(authorization, "application/x-www-form-urlencoded")
    for pairs in mutation.applied(base, [*TOKEN_NAMES, "client_id", "client_secret"]):
        body = str(httpx2.QueryParams(pairs)).encode()

        response = await broker.http.post("/token", content=body, headers=headers)

        assert_oauth_error(response)


@budget(60, shrink=False)
@given(
    st.sampled_from(["/token", "/revoke", "/introspect", "/userinfo", "/auth/oauth2/refresh"]),
    hostile_bytes,
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "text/plain",
            "multipart/form-data",
        ]
    ),
    authorization_headers,
)
async def test_any_body_to_a_token_endpoint_is_an_oauth_error_or_its_answer(
    broker: Broker, path: str, body: bytes, content_type: str, authorization: str | None
):
    response = await broker.http.post(
        path, content=body, headers=headers_of(authorization, content_type)
    )

    assert_oauth_error(response, 200)


@budget(10, shrink=False)
@given(st.sampled_from(["/revoke", "/introspect"]), mutations)
@example(path="/revoke", mutation=NUL_APPENDED)
@example(path="/introspect", mutation=NUL_APPENDED)
async def test_any_revocation_or_introspection_is_its_answer_or_an_oauth_error(
    broker: Broker, path: str, mutation: Mutation
):
    base = {"token": "t", "token_type_hint": "refresh_token"}
    headers = headers_of(basic("backend", BACKEND_SECRET), "application/x-www-form-urlencoded")
    for pairs in mutation.applied(base, ["token", "token_type_hint", "client_id"]):
        body = str(httpx2.QueryParams(pairs)).encode()

        response = await broker.http.post(path, content=body, headers=headers)

        assert_oauth_error(response, 200)


json_documents = st.one_of(
    st.dictionaries(
        st.sampled_from(["refresh_token", "client_id", "client_secret", "scope"]) | decoded_text,
        hostile | st.integers() | st.none() | st.lists(st.none()),
    ).map(lambda document: json.dumps(document).encode()),
    hostile_bytes,
)


@budget(40, shrink=False)
@given(json_documents, authorization_headers)
async def test_any_json_refresh_is_an_oauth_error(
    broker: Broker, body: bytes, authorization: str | None
):
    headers = headers_of(authorization, "application/json")

    response = await broker.http.post("/auth/oauth2/refresh", content=body, headers=headers)

    assert_oauth_error(response)


BROWSER_RETURN = {"state": "s", "code": "c", "client_id": "web", "id_token_hint": "a.b.c"}
BROWSER_NAMES = [*BROWSER_RETURN, "post_logout_redirect_uri", "error", "error_description"]


@budget(10, shrink=False)
@given(
    st.sampled_from(["/logout", "/auth/oauth2/corp/callback", "/auth/oauth2/dev/dev-login"]),
    mutations,
)
@example(path="/logout", mutation=NUL_APPENDED)
@example(path="/auth/oauth2/corp/callback", mutation=NUL_APPENDED)
async def test_any_browser_return_is_a_page(broker: Broker, path: str, mutation: Mutation):
    for pairs in mutation.applied(BROWSER_RETURN, BROWSER_NAMES):
        response = await broker.http.get(path, params=pairs)

        assert response.status_code in (200, 303, 400, 404), (pairs, response.status_code)
        assert response.headers["content-type"].startswith("text/html")


@budget(40, shrink=False)
@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["state", "email", "name"]) | decoded_text,
            hostile | st.sampled_from(["a@b.example", "s"]),
        ).map(lambda form: str(httpx2.QueryParams(form)).encode()),
        hostile_bytes,
    )
)
async def test_any_dev_login_form_is_a_redirect_to_the_callback_or_a_page(
    broker: Broker, body: bytes
):
    headers = {"content-type": "application/x-www-form-urlencoded"}

    response = await broker.http.post("/auth/oauth2/dev/dev-login", content=body, headers=headers)

    # 413: a form of many huge values is over the body cap (docs/security.md "Body limits").
    assert response.status_code in (303, 400, 413), (response.status_code, response.text[:300])
    if response.status_code == 303:
        assert response.headers["location"].startswith(
            "http://127.0.0.1:8000/auth/oauth2/dev/callback?"
        )


profile_edits = st.dictionaries(
    st.sampled_from(["display_name", "primary_email_provider", "primary_avatar_provider", "email"])
    | decoded_text,
    hostile | st.none() | st.integers() | st.sampled_from(["corp", "dev"]),
    max_size=3,
).map(lambda document: json.dumps(document).encode())


@budget(40, shrink=False)
@given(
    st.sampled_from(["PUT /auth/oauth2/profile", "POST /auth/oauth2/profile/sync"]),
    profile_edits | hostile_bytes,
    hostile,
)
async def test_any_profile_request_of_a_signed_in_user_is_its_answer_or_an_oauth_error(
    broker: Broker, endpoint: str, body: bytes, provider: str
):
    method, path = endpoint.split()
    params = {"provider": provider} if method == "POST" else None
    headers = {**broker.user, "content-type": "application/json"}

    response = await broker.http.request(method, path, content=body, params=params, headers=headers)

    assert_oauth_error(response, 200, 202, 404)


path_segments = st.one_of(
    hostile,
    st.sampled_from(["corp", "dev", "github", "x" * 300]),
    st.tuples(st.sampled_from(["corp", "dev"]), st.sampled_from(ODD_CHARACTERS)).map("".join),
).filter(lambda segment: segment not in ("", ".", ".."))


PATH_ENDPOINTS = [
    "DELETE /auth/oauth2/links/{}",
    "GET /auth/oauth2/{}/login",
    "GET /auth/oauth2/{}/callback",
    "GET /auth/oauth2/{}/link",
    "GET /auth/oauth2/{}/dev-login",
    "POST /auth/oauth2/{}/dev-login",
    "GET /avatars/{}",
]


@budget(25, shrink=False)
@given(path_segments)
@example(segment="corp\x00")
@example(segment="\u00b2")
async def test_any_path_parameter_is_its_answer_or_a_4xx(broker: Broker, segment: str):
    for endpoint in PATH_ENDPOINTS:  # each in turn, as with the mutations
        method, template = endpoint.split()
        path = template.format(quote(segment, safe=""))

        response = await broker.http.request(method, path, headers=broker.user)

        # The signed-in user has one link (corp): unlinking it is 409, the last way in.
        assert 200 <= response.status_code < 500, (path, response.status_code, response.text[:300])


# Regressions these properties found, one plain example each.


@pytest.mark.parametrize("name", ["state", "nonce"])
async def test_a_nul_in_state_or_nonce_goes_back_to_the_client_as_invalid_request(
    broker: Broker, name: str
):
    # Was a DataError storing the login in flight (PostgreSQL text cannot hold NUL): a 500.
    params = {**AUTHORIZE, name: "s\x00"}

    response = await broker.http.get("/authorize", params=params)

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(WEB_REDIRECT + "?error=invalid_request")
    assert f"{name}+must+not+contain+NUL" in location


async def test_unlinking_a_provider_whose_id_has_nul_is_404(broker: Broker):
    # Was a DataError looking the link's tokens up: a 500 for any signed-in user.
    response = await broker.http.delete("/auth/oauth2/links/corp%00", headers=broker.user)

    assert response.status_code == 404
    assert response.json()["error"] == "invalid_request"
