"""Self-tests of the GitHub, Microsoft and Google stand-ins, each a real process over HTTP (the
run's own, tests/conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from standins.kit.images import TINY_PNG
from standins.microsoft import CONSUMERS_TENANT, DEFAULT_TENANT

CLIENT_ID = "broker"
CLIENT_SECRET = "broker-secret"
REDIRECT_URI = "http://127.0.0.1:1/callback"
TENANT_GUID = "33333333-3333-3333-3333-333333333333"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64url(hashlib.sha256(verifier.encode()).digest())


def _client(url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=url, follow_redirects=False, timeout=5.0) as client:
        client.post("/_control/reset").raise_for_status()
        yield client


def _callback(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {name: values[0] for name, values in parse_qs(location.query).items()}


# The run's stand-in processes (tests/conftest.py); each test resets the one it uses.
@pytest.fixture
def github_url(github_upstream: str) -> str:
    return github_upstream


@pytest.fixture
def microsoft_url(microsoft_upstream: str) -> str:
    return microsoft_upstream


@pytest.fixture
def google_url(google_upstream: str) -> str:
    return google_upstream


@pytest.fixture
def github(github_url: str) -> Iterator[httpx2.Client]:
    yield from _client(github_url)


@pytest.fixture
def microsoft(microsoft_url: str) -> Iterator[httpx2.Client]:
    yield from _client(microsoft_url)


@pytest.fixture
def google(google_url: str) -> Iterator[httpx2.Client]:
    yield from _client(google_url)


# ---------------------------------------------------------------------------------- GitHub


def _github_code(http: httpx2.Client) -> tuple[str, str]:
    verifier, challenge = _pkce()
    callback = _callback(
        http.get(
            "/login/oauth/authorize",
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "scope": "read:user user:email",
                "state": "st",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
    )
    assert callback.keys() == {"code", "state"} and callback["state"] == "st"
    return callback["code"], verifier


def _github_token(
    http: httpx2.Client, form: dict[str, str], *, json: bool = True
) -> httpx2.Response:
    headers = {"Accept": "application/json"} if json else {}
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return http.post("/login/oauth/access_token", data=body, headers=headers)


def _github_exchange(http: httpx2.Client, *, json: bool = True) -> httpx2.Response:
    code, verifier = _github_code(http)
    form = {"code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    return _github_token(http, form, json=json)


def test_github_token_response_is_form_unless_json_is_asked(github: httpx2.Client) -> None:
    assert github.get("/login/oauth/authorize", params={"client_id": "nope"}).status_code == 404

    form = _github_exchange(github, json=False)
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")
    tokens = {name: values[0] for name, values in parse_qs(form.text).items()}
    assert tokens["access_token"].startswith("ghu_") and tokens["refresh_token"].startswith("ghr_")
    assert tokens["expires_in"] == "28800" and tokens["refresh_token_expires_in"] == "15897600"
    assert tokens["token_type"] == "bearer"

    as_json = _github_exchange(github).json()
    assert as_json["expires_in"] == 28800 and as_json["scope"] == ""

    code, verifier = _github_code(github)
    errors = {
        "incorrect_client_credentials": {"client_secret": "wrong", "code": code},
        "redirect_uri_mismatch": {
            "code": code,
            "redirect_uri": "http://127.0.0.1:1/other",
            "code_verifier": verifier,
        },
        "bad_verification_code": {"code": code, "redirect_uri": REDIRECT_URI},  # burnt above
    }
    for error, body in errors.items():
        response = _github_token(github, body)
        assert response.status_code == 200 and response.json()["error"] == error
        assert response.json()["error_uri"].startswith("https://docs.github.com/")

    code, _ = _github_code(github)
    wrong_verifier = {"code": code, "redirect_uri": REDIRECT_URI, "code_verifier": "x" * 43}
    assert _github_token(github, wrong_verifier).json()["error"] == "bad_verification_code"

    recorded = github.get("/_control/requests").json()
    assert recorded[0]["accept"] != "application/json" and recorded[1]["accept"] == (
        "application/json"
    )
    assert recorded[0]["form"]["code_verifier"]


def test_github_refresh_rotates_and_kills_the_old_pair(github: httpx2.Client) -> None:
    first = _github_exchange(github).json()
    renewal = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = _github_token(github, renewal).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"].startswith("ghu_")

    reused = _github_token(github, renewal)
    assert reused.status_code == 200 and reused.json()["error"] == "bad_refresh_token"
    old = github.get("/api/v3/user", headers={"Authorization": f"Bearer {first['access_token']}"})
    assert old.status_code == 401 and old.json()["message"] == "Bad credentials"
    new = github.get("/api/v3/user", headers={"Authorization": f"token {second['access_token']}"})
    assert new.status_code == 200 and new.json()["id"] == 583231


def test_github_non_expiring_tokens(github: httpx2.Client) -> None:
    github.post("/_control/token_mode", json={"mode": "non_expiring"}).raise_for_status()
    tokens = _github_exchange(github).json()
    assert tokens == {
        "access_token": tokens["access_token"],
        "scope": "read:user,user:email",
        "token_type": "bearer",
    }
    assert tokens["access_token"].startswith("gho_")
    user = github.get("/api/v3/user", headers={"Authorization": f"token {tokens['access_token']}"})
    assert user.headers["x-oauth-scopes"] == "read:user, user:email"


def test_github_api(github: httpx2.Client) -> None:
    github.post(
        "/_control/user",
        json={
            "id": 42,
            "login": "hubot",
            "name": "Hubot",
            "emails": [
                {"email": "old@example.com", "primary": False, "verified": True},
                {"email": "hubot@example.com", "primary": True, "verified": True},
            ],
            "orgs": ["acme", "other"],
            "teams": [{"org": "acme", "slug": "platform"}],
        },
    ).raise_for_status()
    token = _github_exchange(github).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    user = github.get("/api/v3/user", headers=auth).json()
    assert (user["login"], user["id"], user["email"], user["type"]) == ("hubot", 42, None, "User")
    emails = github.get("/api/v3/user/emails", headers=auth).json()
    assert {
        "email": "hubot@example.com",
        "primary": True,
        "verified": True,
        "visibility": None,
    } in (emails)
    page = github.get("/api/v3/user/orgs", params={"per_page": 1, "page": 1}, headers=auth)
    assert [org["login"] for org in page.json()] == ["acme"] and 'rel="next"' in page.headers[
        "link"
    ]
    teams = github.get("/api/v3/user/teams", headers=auth).json()
    assert [(team["organization"]["login"], team["slug"]) for team in teams] == [
        ("acme", "platform")
    ]

    github.post("/_control/misbehave", json={"mode": "emails_403"}).raise_for_status()
    for _ in range(2):
        denied = github.get("/api/v3/user/emails", headers=auth)
        assert denied.status_code == 403
        assert denied.json()["message"] == "Resource not accessible by integration"
    assert github.get("/api/v3/meta").status_code == 200

    revoke = {"access_token": token}
    wrong_app = github.request(
        "DELETE", f"/api/v3/applications/{CLIENT_ID}/token", json=revoke, auth=(CLIENT_ID, "no")
    )
    assert wrong_app.status_code == 401
    path = f"/api/v3/applications/{CLIENT_ID}/token"
    creds = (CLIENT_ID, CLIENT_SECRET)
    assert github.request("DELETE", path, json=revoke, auth=creds).status_code == 204
    assert github.get("/api/v3/user", headers=auth).status_code == 401
    assert github.request("DELETE", path, json=revoke, auth=creds).status_code == 404
    assert github.request("DELETE", path, json={}, auth=creds).status_code == 422

    calls = [(r["method"], r["path"]) for r in github.get("/_control/requests").json()]
    assert ("GET", "/api/v3/user/teams") in calls and ("DELETE", path) in calls

    github.post("/_control/misbehave", json={"mode": "token_error_500"})
    assert _github_exchange(github).status_code == 500
    assert _github_exchange(github).status_code == 200


# ---------------------------------------------------------------------------------- Microsoft


def _microsoft_tokens(
    http: httpx2.Client, tenant: str = "common", *, nonce: str = "n-1"
) -> dict[str, Any]:
    verifier, challenge = _pkce()
    callback = _callback(
        http.get(
            f"/{tenant}/oauth2/v2.0/authorize",
            params={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "redirect_uri": REDIRECT_URI,
                "response_mode": "query",
                "scope": "openid profile email offline_access User.Read",
                "state": "st",
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
    )
    assert "iss" not in callback and callback["state"] == "st"
    response = http.post(
        f"/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 200, response.text
    return {**response.json(), "code": callback["code"], "verifier": verifier}


def _microsoft_claims(http: httpx2.Client, id_token: str, tenant: str = "common") -> Any:
    keys = KeySet.import_key_set(http.get(f"/{tenant}/discovery/v2.0/keys").json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    assert token.header["kid"] in {key["kid"] for key in keys.as_dict()["keys"]}
    return token.claims


def test_microsoft_discovery_per_tenant(microsoft: httpx2.Client, microsoft_url: str) -> None:
    expected = {
        "common": f"{microsoft_url}/{{tenantid}}/v2.0",
        "organizations": f"{microsoft_url}/{{tenantid}}/v2.0",
        "consumers": f"{microsoft_url}/{CONSUMERS_TENANT}/v2.0",
        TENANT_GUID: f"{microsoft_url}/{TENANT_GUID}/v2.0",
    }
    for tenant, issuer in expected.items():
        metadata = microsoft.get(f"/{tenant}/v2.0/.well-known/openid-configuration").json()
        assert metadata["issuer"] == issuer
        assert metadata["token_endpoint"] == f"{microsoft_url}/{tenant}/oauth2/v2.0/token"
        assert metadata["jwks_uri"] == f"{microsoft_url}/{tenant}/discovery/v2.0/keys"
        assert metadata["userinfo_endpoint"] == f"{microsoft_url}/graph/oidc/userinfo"
        assert "authorization_response_iss_parameter_supported" not in metadata
        keys = microsoft.get(metadata["jwks_uri"]).json()["keys"]
        assert keys[0]["kid"] and keys[0]["issuer"] == issuer
    unknown = microsoft.get("/nowhere/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]
    paths = [entry["path"] for entry in microsoft.get("/_control/requests").json()]
    assert paths[:2] == [
        "/common/v2.0/.well-known/openid-configuration",
        "/common/discovery/v2.0/keys",
    ]


def test_microsoft_id_token_and_misbehaviours(microsoft: httpx2.Client, microsoft_url: str) -> None:
    tokens = _microsoft_tokens(microsoft)
    assert tokens["token_type"] == "Bearer" and tokens["ext_expires_in"] == tokens["expires_in"]
    claims = _microsoft_claims(microsoft, tokens["id_token"])
    assert claims["iss"] == f"{microsoft_url}/{DEFAULT_TENANT}/v2.0"
    assert claims["tid"] == DEFAULT_TENANT and claims["ver"] == "2.0"
    assert claims["aud"] == CLIENT_ID and claims["nonce"] == "n-1"
    assert claims["xms_edov"] is True and claims["email"] == "adele@contoso.example"

    replay = microsoft.post(
        "/common/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "code": tokens["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": tokens["verifier"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant" and replay.json()["error_codes"] == [54005]
    assert replay.json()["error_description"].startswith("AADSTS54005:")

    renewed = microsoft.post(
        "/common/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    ).json()
    assert renewed["refresh_token"] != tokens["refresh_token"] and renewed["id_token"]

    microsoft.post("/_control/user", json={"tid": TENANT_GUID, "oid": TENANT_GUID})
    microsoft.post("/_control/misbehave", json={"mode": "iss_other_tenant"})
    other = _microsoft_claims(microsoft, _microsoft_tokens(microsoft)["id_token"])
    assert other["tid"] == TENANT_GUID and TENANT_GUID not in other["iss"]
    assert "email" not in other and "xms_edov" not in other
    microsoft.post("/_control/misbehave", json={"mode": "iss_v1"})
    v1 = _microsoft_claims(microsoft, _microsoft_tokens(microsoft)["id_token"])
    assert v1["iss"] == f"https://sts.windows.net/{TENANT_GUID}/"
    again = _microsoft_claims(microsoft, _microsoft_tokens(microsoft)["id_token"])
    assert again["iss"] == f"{microsoft_url}/{TENANT_GUID}/v2.0"

    form_post = microsoft.get(
        "/common/oauth2/v2.0/authorize",
        params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_mode": "form_post"},
    )
    assert _callback(form_post)["error"] == "invalid_request"


def test_microsoft_graph_photo(microsoft: httpx2.Client) -> None:
    tokens = _microsoft_tokens(microsoft)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    jpeg = microsoft.get("/graph/v1.0/me/photo/$value", headers=auth)
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content.startswith(b"\xff\xd8\xff")
    userinfo = microsoft.get("/graph/oidc/userinfo", headers=auth).json()
    assert userinfo["sub"] == _microsoft_claims(microsoft, tokens["id_token"])["sub"]
    assert userinfo["picture"].endswith("/graph/v1.0/me/photo/$value")

    bad = microsoft.get("/graph/v1.0/me/photo/$value", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "InvalidAuthenticationToken"

    user = {"tid": DEFAULT_TENANT, "oid": TENANT_GUID, "name": "No Photo", "photo": None}
    microsoft.post("/_control/user", json=user).raise_for_status()
    auth = {"Authorization": f"Bearer {_microsoft_tokens(microsoft)['access_token']}"}
    missing = microsoft.get("/graph/v1.0/me/photo/$value", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ImageNotFound"

    microsoft.post("/_control/user", json={**user, "photo": "png"}).raise_for_status()
    auth = {"Authorization": f"Bearer {_microsoft_tokens(microsoft)['access_token']}"}
    png = microsoft.get("/graph/v1.0/me/photo/$value", headers=auth)
    assert png.headers["content-type"] == "image/png" and png.content == TINY_PNG


# ---------------------------------------------------------------------------------- Google


def _google_tokens(http: httpx2.Client, **extra: str) -> dict[str, Any]:
    verifier, challenge = _pkce()
    callback = _callback(
        http.get(
            "/authorize",
            params={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "redirect_uri": REDIRECT_URI,
                "scope": "openid email profile",
                "state": "st",
                "nonce": "n",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                **extra,
            },
        )
    )
    response = http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _google_claims(http: httpx2.Client, id_token: str) -> Any:
    return jwt.decode(id_token, KeySet.import_key_set(http.get("/jwks").json())).claims


def test_google_refresh_token_only_on_first_offline_consent(google: httpx2.Client) -> None:
    google.post(
        "/_control/user",
        json={
            "sub": "1079",
            "email": "ann@corp.example",
            "email_verified": True,
            "hd": "corp.example",
        },
    ).raise_for_status()
    assert "refresh_token" not in _google_tokens(google)
    first = _google_tokens(google, access_type="offline")
    assert first["refresh_token"]
    assert "https://www.googleapis.com/auth/userinfo.email" in first["scope"].split()
    claims = _google_claims(google, first["id_token"])
    assert claims["hd"] == "corp.example" and claims["aud"] == CLIENT_ID
    assert "refresh_token" not in _google_tokens(google, access_type="offline")
    assert _google_tokens(google, access_type="offline", prompt="consent")["refresh_token"]

    form = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    for _ in range(2):  # no rotation: the same refresh token keeps working
        renewed = google.post("/token", data=form)
        assert renewed.status_code == 200 and "refresh_token" not in renewed.json()
    recorded = google.get("/_control/authorize_requests").json()
    assert recorded[-1]["access_type"] == "offline" and recorded[-1]["prompt"] == "consent"


def test_google_bare_iss(google: httpx2.Client, google_url: str) -> None:
    google.post("/_control/google", json={"bare_iss": True}).raise_for_status()
    bare = _google_claims(google, _google_tokens(google)["id_token"])
    assert bare["iss"] == google_url.removeprefix("http://")
    google.post("/_control/reset").raise_for_status()
    assert _google_claims(google, _google_tokens(google)["id_token"])["iss"] == google_url
