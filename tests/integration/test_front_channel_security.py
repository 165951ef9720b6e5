"""docs/security.md "Exact redirect URIs", "PKCE", "Issuer in authorization responses", "Page
headers and escaping", "Same-origin return paths", "Upstream state and mix-up defence", "Login
cookie" at the authorization endpoint and the upstream callback."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.support.flows import authorize, pkce_pair, query_of, relative

WEB = "http://127.0.0.1:3000/callback"


def _params(**overrides: str) -> dict[str, str]:
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": WEB,
        "scope": "openid email",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "provider": "corp",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:3000/callback/",
        "http://127.0.0.1:3000/Callback",
        "http://127.0.0.1:3000/callback?x=1",
        "http://127.0.0.1:3001/callback",
        "http://evil.example/callback",
    ],
)
async def test_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(broker, redirect_uri):
    response = await broker.get("/authorize", params=_params(redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].find("frame-ancestors 'none'") >= 0
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_unknown_client_gets_an_error_page_and_no_redirect(broker):
    response = await broker.get("/authorize", params=_params(client_id="nobody"))
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_public_client_without_pkce_is_redirected_with_invalid_request(broker):
    params = _params()
    del params["code_challenge"], params["code_challenge_method"]
    response = await broker.get("/authorize", params=params)
    assert response.status_code == 302
    back = query_of(response.headers["location"])
    assert response.headers["location"].startswith(WEB)
    assert back["error"] == "invalid_request"
    assert back["state"] == "s1"
    assert back["iss"] == "http://127.0.0.1:8000"


async def test_plain_pkce_is_refused(broker):
    response = await broker.get(
        "/authorize", params=_params(code_challenge_method="plain", code_challenge="x" * 43)
    )
    assert query_of(response.headers["location"])["error"] == "invalid_request"


async def test_code_verifier_without_challenge_is_a_downgrade_and_refused(broker, idp):
    # The confidential client may skip PKCE; sending a verifier at the token endpoint anyway
    # is the PKCE downgrade of RFC 9700 §4.8.
    result = await authorize(
        broker, client_id="backend", redirect_uri="http://127.0.0.1:4000/cb", pkce=False
    )
    response = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": "http://127.0.0.1:4000/cb",
            "code_verifier": "a" * 50,
        },
        auth=("backend", "backend-secret-at-least-32-characters"),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_wrong_code_verifier_is_invalid_grant(broker, idp):
    result = await authorize(broker)
    response = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": WEB,
            "code_verifier": "b" * 64,
            "client_id": "web",
        },
    )
    assert response.json()["error"] == "invalid_grant"


async def test_code_is_bound_to_its_redirect_uri_and_client(broker, idp):
    result = await authorize(broker)
    other_uri = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": "http://127.0.0.1:3000/other",
            "code_verifier": result.verifier,
            "client_id": "web",
        },
    )
    assert other_uri.json()["error"] == "invalid_grant"
    result = await authorize(broker)
    other_client = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": WEB,
            "code_verifier": result.verifier,
        },
        auth=("backend", "backend-secret-at-least-32-characters"),
    )
    assert other_client.json()["error"] == "invalid_grant"


async def _start_upstream_login(broker) -> tuple[str, dict[str, str]]:
    """Go as far as the upstream's redirect back; return the callback URL and its params."""
    import httpx2

    first = await broker.get("/authorize", params=_params())
    assert first.status_code == 302
    async with httpx2.AsyncClient() as upstream:
        back = await upstream.get(first.headers["location"])
    callback = back.headers["location"]
    return callback, query_of(callback)


async def _token_requests(idp) -> int:
    return len((await idp.get("/_control/requests")).json())


async def test_callback_state_is_single_use(broker, idp):
    callback, _ = await _start_upstream_login(broker)
    assert (await broker.get(relative(callback))).status_code == 302
    before = await _token_requests(idp)
    replay = await broker.get(relative(callback))
    assert replay.status_code == 400
    assert await _token_requests(idp) == before


async def test_callback_from_another_browser_is_refused_before_any_token_request(broker, idp):
    callback, _ = await _start_upstream_login(broker)
    broker.cookies.clear()  # the same URL opened in a browser without the login cookie
    response = await broker.get(relative(callback))
    assert response.status_code == 400
    assert await _token_requests(idp) == 0


async def test_callback_at_another_providers_path_is_refused(broker, idp):
    callback, _ = await _start_upstream_login(broker)
    response = await broker.get(relative(callback).replace("/corp/", "/dev/"))
    assert response.status_code == 400
    assert await _token_requests(idp) == 0


async def test_unknown_state_is_refused(broker, idp):
    response = await broker.get("/auth/oauth2/corp/callback?code=abc&state=forged")
    assert response.status_code == 400
    assert await _token_requests(idp) == 0


async def test_iss_response_parameter_from_another_issuer_is_refused(broker, idp):
    callback, _ = await _start_upstream_login(broker)
    tampered = relative(callback).replace(
        "iss=http%3A%2F%2F127.0.0.1", "iss=http%3A%2F%2Fevil.example"
    )
    assert tampered != relative(callback)
    response = await broker.get(tampered)
    assert response.status_code == 302
    assert query_of(response.headers["location"])["error"] == "server_error"
    assert await _token_requests(idp) == 0


async def test_upstream_error_description_is_escaped_on_pages(broker):
    response = await broker.get(
        "/auth/oauth2/corp/callback",
        params={"state": "x", "error": "access_denied", "error_description": "<script>x</script>"},
    )
    assert response.status_code == 400
    assert "<script>" not in response.text


async def test_upstream_denial_is_returned_to_the_client_as_access_denied(broker, idp):
    await idp.post("/_control/misbehave", json={"mode": "deny"})
    result = await authorize(broker)
    assert result.params["error"] == "access_denied"
    assert result.params["state"] == result.state
    assert result.params["iss"] == "http://127.0.0.1:8000"


async def test_login_cookie_is_httponly_and_samesite_lax(broker):
    response = await broker.get("/authorize", params=_params())
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert urlsplit(response.headers["location"]).netloc.startswith("127.0.0.1:")


async def test_form_post_response_mode_posts_the_code_to_the_client(broker, idp):
    from html.parser import HTMLParser

    result = await authorize(broker, extra={"response_mode": "form_post"})
    page = result.hops[-1]
    assert page.status_code == 200
    assert "form-action http://127.0.0.1:3000" in page.headers["content-security-policy"]

    class Inputs(HTMLParser):
        values: dict[str, str] = {}

        def handle_starttag(self, tag, attrs):
            attributes = dict(attrs)
            if tag == "input":
                self.values[attributes["name"]] = attributes["value"]
            if tag == "form":
                self.values["_action"] = attributes["action"]

    parser = Inputs()
    parser.feed(page.text)
    assert parser.values["_action"] == WEB
    assert parser.values["state"] == result.state
    assert parser.values["iss"] == "http://127.0.0.1:8000"
    response = await broker.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": parser.values["code"],
            "redirect_uri": WEB,
            "code_verifier": result.verifier,
            "client_id": "web",
        },
    )
    assert response.status_code == 200, response.text


async def test_authorization_request_may_be_posted(broker, idp):
    response = await broker.post("/authorize", data=_params())
    assert response.status_code == 302
    assert response.headers["location"].startswith(idp.base_url.join("/authorize").__str__())
