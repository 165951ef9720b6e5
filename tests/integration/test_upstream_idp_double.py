"""Checks that the upstream OpenID Provider double behaves like a real one over HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "broker"
CLIENT_SECRET = "broker-secret"
REDIRECT_URI = "http://127.0.0.1:1/callback"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def issuer(upstream_idp: str) -> str:
    """The run's provider process (tests/conftest.py)."""
    return upstream_idp


@pytest.fixture
def http(issuer: str) -> Iterator[httpx2.Client]:
    """An HTTP client bound to the provider, with the provider reset to its defaults."""
    with httpx2.Client(base_url=issuer, follow_redirects=False, timeout=5.0) as client:
        client.post("/_control/reset").raise_for_status()
        yield client


def _authorize(http: httpx2.Client, *, nonce: str = "n-0S6_WzA2Mj") -> dict[str, Any]:
    """Run the front-channel part of a code flow; return the callback parameters."""
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    response = http.get(
        "/authorize",
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    params = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert params["state"] == state
    assert params["iss"] == str(http.base_url).rstrip("/")
    return {**params, "verifier": verifier, "nonce": nonce}


def _exchange(http: httpx2.Client, callback: dict[str, Any]) -> httpx2.Response:
    """Redeem the code with client_secret_basic."""
    return http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": callback["verifier"],
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )


def _keys(http: httpx2.Client) -> KeySet:
    jwks = http.get("/jwks").json()
    for key in jwks["keys"]:
        assert key["use"] == "sig" and key["alg"] == "RS256" and key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()
    return KeySet.import_key_set(jwks)


def test_discovery_describes_the_provider(http: httpx2.Client, issuer: str) -> None:
    metadata = http.get("/.well-known/openid-configuration").json()
    assert metadata["issuer"] == issuer
    for name in ("authorization", "token", "userinfo", "revocation"):
        assert metadata[f"{name}_endpoint"].startswith(issuer)
    assert metadata["jwks_uri"] == f"{issuer}/jwks"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }

    http.post("/_control/discovery_issuer", json={"issuer": "https://evil.example"})
    assert http.get("/.well-known/openid-configuration").json()["issuer"] == "https://evil.example"


def test_code_flow_issues_verifiable_tokens(http: httpx2.Client, issuer: str) -> None:
    callback = _authorize(http)
    response = _exchange(http, callback)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["refresh_token"] and tokens["access_token"]

    id_token = jwt.decode(tokens["id_token"], _keys(http), algorithms=["RS256"])
    assert id_token.header["typ"] == "JWT" and id_token.header["kid"]
    claims = id_token.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        sub={"essential": True, "value": "alice-sub"},
        nonce={"essential": True, "value": callback["nonce"]},
    ).validate(claims)
    assert claims["aud"] == [CLIENT_ID] and claims["azp"] == CLIENT_ID
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert claims["at_hash"] == _b64url(digest[:16])
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True

    replay = _exchange(http, callback)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


def test_token_endpoint_rejects_bad_client_and_bad_verifier(http: httpx2.Client) -> None:
    callback = _authorize(http)
    wrong_secret = http.post(
        "/token",
        data={"grant_type": "authorization_code", "code": callback["code"]},
        auth=(CLIENT_ID, "wrong"),
    )
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"

    bad_verifier = _exchange(http, {**callback, "verifier": secrets.token_urlsafe(48)})
    assert bad_verifier.status_code == 400 and bad_verifier.json()["error"] == "invalid_grant"

    no_pkce = http.get(
        "/authorize",
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "s",
        },
    )
    assert parse_qs(urlsplit(no_pkce.headers["location"]).query)["error"] == ["invalid_request"]


def test_refresh_rotates_and_userinfo_answers(http: httpx2.Client) -> None:
    http.post("/_control/user", json={"sub": "bob-sub", "email": "bob@example.com"})
    tokens = _exchange(http, _authorize(http)).json()

    userinfo = http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200
    assert userinfo.json() == {"sub": "bob-sub", "email": "bob@example.com"}
    invalid = http.get("/userinfo", headers={"Authorization": "Bearer nope"})
    assert invalid.status_code == 401
    assert invalid.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    renewed = http.post("/token", data=form)
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    fresh_claims = jwt.decode(fresh["id_token"], _keys(http)).claims
    assert fresh_claims["sub"] == "bob-sub" and "nonce" not in fresh_claims

    reused = http.post("/token", data=form)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_wrong_aud_is_one_shot(http: httpx2.Client) -> None:
    http.post("/_control/misbehave", json={"mode": "wrong_aud"}).raise_for_status()
    first = jwt.decode(_exchange(http, _authorize(http)).json()["id_token"], _keys(http))
    assert CLIENT_ID not in first.claims["aud"]
    second = jwt.decode(_exchange(http, _authorize(http)).json()["id_token"], _keys(http))
    assert second.claims["aud"] == [CLIENT_ID]


def test_signature_misbehaviours(http: httpx2.Client) -> None:
    http.post("/_control/misbehave", json={"mode": "bad_signature"})
    forged = _exchange(http, _authorize(http)).json()["id_token"]
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, _keys(http))

    http.post("/_control/misbehave", json={"mode": "alg_none"})
    unsigned = _exchange(http, _authorize(http)).json()["id_token"]
    header = unsigned.split(".")[0]
    assert base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)) == (
        b'{"alg":"none","typ":"JWT"}'
    )
    assert unsigned.endswith(".")


def test_deny_and_token_errors(http: httpx2.Client) -> None:
    http.post("/_control/misbehave", json={"mode": "deny"})
    denied = http.get(
        "/authorize",
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "st",
            "code_challenge": _b64url(hashlib.sha256(b"x" * 43).digest()),
            "code_challenge_method": "S256",
        },
    )
    params = parse_qs(urlsplit(denied.headers["location"]).query)
    assert params["error"] == ["access_denied"] and params["state"] == ["st"]

    http.post("/_control/misbehave", json={"mode": "token_error_500"})
    assert _exchange(http, _authorize(http)).status_code == 500


def test_control_records_token_requests(http: httpx2.Client) -> None:
    assert http.get("/_control/requests").json() == []
    callback = _authorize(http)
    assert http.get("/_control/requests").json() == []
    _exchange(http, callback)
    recorded = http.get("/_control/requests").json()
    assert len(recorded) == 1
    assert recorded[0]["method"] == "POST" and recorded[0]["path"] == "/token"
    assert recorded[0]["form"]["code"] == callback["code"]
    assert recorded[0]["form"]["code_verifier"] == callback["verifier"]
