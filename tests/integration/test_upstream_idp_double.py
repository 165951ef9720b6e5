"""Checks that the upstream OpenID Provider double behaves like a real one over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
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
GRANT_SCOPE = "openid email profile offline_access"
CAROL = {"sub": "carol-sub", "email": "carol@example.com", "name": "Carol Example"}


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


def _grants(http: httpx2.Client, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """Mint grants through the control API for CAROL (unless ``user`` says otherwise)."""
    body = {"client_id": CLIENT_ID, "user": CAROL, "count": count, **fields}
    response = http.post("/_control/grants", json=body)
    assert response.status_code == 200, response.text
    grants: list[dict[str, Any]] = response.json()["grants"]
    assert len(grants) == count
    return grants


def _refresh(http: httpx2.Client, refresh_token: str, **options: Any) -> httpx2.Response:
    """Redeem a refresh token with client_secret_basic."""
    return http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(CLIENT_ID, CLIENT_SECRET),
        **options,
    )


def _userinfo(http: httpx2.Client, access_token: str) -> httpx2.Response:
    return http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def _fault(http: httpx2.Client, mode: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/_control/refresh_faults", json={"mode": mode, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refresh_log(http: httpx2.Client) -> dict[str, Any]:
    body: dict[str, Any] = http.get("/_control/refresh_log").json()
    return body


def test_control_grants_are_what_a_token_response_returns(http: httpx2.Client, issuer: str) -> None:
    grants = _grants(http, count=3)
    assert len({grant["access_token"] for grant in grants}) == 3
    assert len({grant["refresh_token"] for grant in grants}) == 3
    keys = _keys(http)
    for grant in grants:
        assert grant["token_type"] == "Bearer" and grant["expires_in"] == 3600
        assert grant["scope"] == GRANT_SCOPE
        claims = jwt.decode(grant["id_token"], keys, algorithms=["RS256"]).claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            sub={"essential": True, "value": "carol-sub"},
        ).validate(claims)
        assert claims["aud"] == [CLIENT_ID] and "nonce" not in claims
        assert claims["email"] == "carol@example.com" and claims["name"] == "Carol Example"
        digest = hashlib.sha256(grant["access_token"].encode()).digest()
        assert claims["at_hash"] == _b64url(digest[:16])
        assert _userinfo(http, grant["access_token"]).json() == CAROL

    renewed = _refresh(http, grants[1]["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert jwt.decode(renewed.json()["id_token"], keys).claims["sub"] == "carol-sub"
    assert _refresh(http, grants[1]["refresh_token"]).json()["error"] == "invalid_grant"
    assert _refresh(http, grants[2]["refresh_token"]).status_code == 200
    # Minted without a browser: the token endpoint saw only the three refreshes above.
    assert [r["form"]["grant_type"] for r in http.get("/_control/requests").json()] == [
        "refresh_token"
    ] * 3

    (no_openid,) = _grants(http, scope="email offline_access")
    assert "id_token" not in no_openid and no_openid["refresh_token"]
    assert no_openid["scope"] == "email offline_access"
    assert "id_token" not in _refresh(http, no_openid["refresh_token"]).json()


def test_control_grants_mint_up_to_5000_and_check_their_body(http: httpx2.Client) -> None:
    grants = _grants(http, count=5000, scope="offline_access")
    assert len({grant["refresh_token"] for grant in grants}) == 5000
    assert _refresh(http, grants[0]["refresh_token"]).status_code == 200
    assert _refresh(http, grants[-1]["refresh_token"]).status_code == 200

    for body in (
        {"client_id": CLIENT_ID, "user": CAROL, "count": 5001},
        {"client_id": CLIENT_ID, "user": CAROL, "count": 0},
        {"client_id": CLIENT_ID, "user": CAROL, "count": True},
        {"client_id": CLIENT_ID, "user": {"email": "no-sub@example.com"}},
        {"user": CAROL},
        {"client_id": CLIENT_ID, "user": CAROL, "scope": ""},
        {"client_id": CLIENT_ID, "user": CAROL, "access_token_lifetime": -1},
    ):
        assert http.post("/_control/grants", json=body).status_code == 400, body
    assert http.post("/_control/grants", content=b"[]").status_code == 400


def test_control_grant_access_token_lifetime_is_per_call(http: httpx2.Client) -> None:
    (short,) = _grants(http, access_token_lifetime=120)
    assert short["expires_in"] == 120
    assert _userinfo(http, short["access_token"]).status_code == 200
    # A refresh issues access tokens with the provider's default lifetime again.
    assert _refresh(http, short["refresh_token"]).json()["expires_in"] == 3600
    (default,) = _grants(http)
    assert default["expires_in"] == 3600

    (expired,) = _grants(http, access_token_lifetime=0)
    assert expired["expires_in"] == 0
    assert _userinfo(http, expired["access_token"]).status_code == 401
    renewed = _refresh(http, expired["refresh_token"]).json()
    assert _userinfo(http, renewed["access_token"]).json() == CAROL


def test_refresh_faults_unavailable_and_retry_after(http: httpx2.Client) -> None:
    (grant,) = _grants(http)
    token = grant["refresh_token"]
    assert _fault(http, "unavailable", count=2) == {
        "faults": [{"mode": "unavailable", "count": 2, "seconds": 1.0}]
    }
    for _ in range(2):
        unavailable = _refresh(http, token)
        assert unavailable.status_code == 503
        assert unavailable.json()["error"] == "temporarily_unavailable"
    # The outage left the token alone and is over.
    renewed = _refresh(http, token)
    assert renewed.status_code == 200, renewed.text
    token = renewed.json()["refresh_token"]

    _fault(http, "retry_after", seconds=7)
    limited = _refresh(http, token)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert limited.json()["error"] == "temporarily_unavailable"
    _fault(http, "retry_after", seconds=1.5)
    assert _refresh(http, token).headers["retry-after"] == "1.5"
    assert _refresh(http, token).status_code == 200


def test_refresh_fault_invalid_grant_drops_the_token(http: httpx2.Client) -> None:
    first, second = _grants(http, count=2)
    _fault(http, "invalid_grant")
    rejected = _refresh(http, first["refresh_token"])
    assert rejected.status_code == 400 and rejected.json()["error"] == "invalid_grant"
    # Dropped for good, not just answered once; the fault itself was one-shot.
    assert _refresh(http, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert _refresh(http, second["refresh_token"]).status_code == 200


def test_refresh_faults_run_as_a_script_until_cleared(http: httpx2.Client) -> None:
    (grant,) = _grants(http)
    token = grant["refresh_token"]
    _fault(http, "unavailable", count=-1)
    assert [_refresh(http, token).status_code for _ in range(3)] == [503, 503, 503]
    assert _fault(http, "none") == {"faults": []}
    assert _refresh(http, token).status_code == 200

    (grant,) = _grants(http)
    _fault(http, "retry_after", seconds=2)
    assert _fault(http, "unavailable")["faults"] == [
        {"mode": "retry_after", "count": 1, "seconds": 2.0},
        {"mode": "unavailable", "count": 1, "seconds": 1.0},
    ]
    statuses = [_refresh(http, grant["refresh_token"]).status_code for _ in range(3)]
    assert statuses == [429, 503, 200]


def test_refresh_faults_spare_other_grants_and_bad_bodies(http: httpx2.Client) -> None:
    _fault(http, "unavailable")
    tokens = _exchange(http, _authorize(http))
    assert tokens.status_code == 200, tokens.text
    assert _refresh(http, tokens.json()["refresh_token"]).status_code == 503

    for body in (
        {"mode": "explode"},
        {},
        {"mode": "unavailable", "count": 0},
        {"mode": "unavailable", "count": -2},
        {"mode": "unavailable", "count": 1.5},
        {"mode": "hang", "seconds": -1},
        {"mode": "hang", "seconds": "1"},
    ):
        assert http.post("/_control/refresh_faults", json=body).status_code == 400, body


def test_hang_leaves_the_token_untouched_when_the_client_gives_up(http: httpx2.Client) -> None:
    (grant,) = _grants(http)
    _fault(http, "hang", seconds=1.0)
    with pytest.raises(httpx2.TimeoutException):
        _refresh(http, grant["refresh_token"], timeout=0.2)
    time.sleep(1.3)  # past the hang: had it carried on, it would have rotated the token
    (attempt,) = _refresh_log(http)["refreshes"]
    assert attempt["fault"] == "hang" and attempt["status"] is None
    assert attempt["outcome"] == "unknown"
    assert _refresh(http, grant["refresh_token"]).status_code == 200


async def test_hang_answers_late_and_other_requests_go_on(idp: httpx2.AsyncClient) -> None:
    response = await idp.post(
        "/_control/grants", json={"client_id": CLIENT_ID, "user": CAROL, "count": 2}
    )
    hung, other = response.json()["grants"]
    await idp.post("/_control/refresh_faults", json={"mode": "hang", "seconds": 1.0})

    def refresh(token: str) -> Any:
        return idp.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": token},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=5.0,
        )

    started = time.monotonic()
    hanging = asyncio.create_task(refresh(hung["refresh_token"]))
    await asyncio.sleep(0.2)
    (pending,) = (await idp.get("/_control/refresh_log")).json()["refreshes"]
    assert pending["refresh_token"] == hung["refresh_token"]
    assert pending["fault"] == "hang" and pending["status"] is None

    before = time.monotonic()
    served = await refresh(other["refresh_token"])
    userinfo = await idp.get(
        "/userinfo", headers={"Authorization": f"Bearer {other['access_token']}"}
    )
    assert served.status_code == 200 and userinfo.status_code == 200
    assert time.monotonic() - before < 0.5
    assert not hanging.done()

    answered = await hanging
    assert answered.status_code == 200, answered.text
    assert time.monotonic() - started >= 1.0
    assert answered.json()["refresh_token"] != hung["refresh_token"]
    log = (await idp.get("/_control/refresh_log")).json()["refreshes"]
    assert [(entry["fault"], entry["outcome"], entry["status"]) for entry in log] == [
        ("hang", "ok", 200),
        (None, "ok", 200),
    ]


def test_slow_answers_late_even_to_a_client_that_left(http: httpx2.Client) -> None:
    first, second = _grants(http, count=2)
    _fault(http, "slow", seconds=0.5)
    started = time.monotonic()
    renewed = _refresh(http, first["refresh_token"])
    assert renewed.status_code == 200 and time.monotonic() - started >= 0.5

    _fault(http, "slow", seconds=0.6)
    with pytest.raises(httpx2.TimeoutException):
        _refresh(http, second["refresh_token"], timeout=0.1)
    time.sleep(0.9)
    # Unlike a hang, the refresh went through: the token rotated and the answer was lost.
    last = _refresh_log(http)["refreshes"][-1]
    assert (last["fault"], last["outcome"], last["status"]) == ("slow", "ok", 200)
    assert _refresh(http, second["refresh_token"]).json()["error"] == "invalid_grant"


def test_refresh_log_records_every_refresh_until_reset(http: httpx2.Client) -> None:
    assert _refresh_log(http) == {"refreshes": [], "counts": {}}
    (grant,) = _grants(http)
    token = grant["refresh_token"]
    _exchange(http, _authorize(http))  # a code exchange is not a refresh
    started = time.time()
    _fault(http, "unavailable")
    assert _refresh(http, token).status_code == 503
    rotated = _refresh(http, token).json()["refresh_token"]
    assert _refresh(http, token).status_code == 400  # already rotated away
    wrong_secret = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": rotated},
        auth=(CLIENT_ID, "wrong"),
    )
    assert wrong_secret.status_code == 401
    finished = time.time()

    log = _refresh_log(http)
    assert [entry["refresh_token"] for entry in log["refreshes"]] == [token] * 3 + [rotated]
    assert [(entry["outcome"], entry["fault"], entry["status"]) for entry in log["refreshes"]] == [
        ("unavailable", "unavailable", 503),
        ("ok", None, 200),
        ("invalid_grant", None, 400),
        ("unknown", None, 401),
    ]
    times = [entry["at"] for entry in log["refreshes"]]
    assert times == sorted(times) and started <= times[0] and times[-1] <= finished
    assert log["counts"] == {token: 3, rotated: 1}

    _fault(http, "unavailable", count=-1)
    http.post("/_control/reset").raise_for_status()
    assert _refresh_log(http) == {"refreshes": [], "counts": {}}
    (grant,) = _grants(http)
    assert _refresh(http, grant["refresh_token"]).status_code == 200  # the faults went too


def test_profile_changes_reach_userinfo_and_new_id_tokens(http: httpx2.Client) -> None:
    dave = {
        "sub": "dave-sub",
        "email": "dave@old.example",
        "email_verified": True,
        "name": "Dave",
        "picture": "https://example.com/dave.png",
    }
    (grant,) = _grants(http, user=dave)
    (carol,) = _grants(http)
    changes = {"email": "dave@new.example", "email_verified": False, "name": "David"}
    changed = http.post("/_control/users/dave-sub", json=changes)
    assert changed.status_code == 200
    assert changed.json() == {"sub": "dave-sub", "changes": changes}

    expected = {**dave, **changes}
    assert _userinfo(http, grant["access_token"]).json() == expected
    assert _userinfo(http, carol["access_token"]).json() == CAROL
    renewed = _refresh(http, grant["refresh_token"]).json()
    claims = jwt.decode(renewed["id_token"], _keys(http)).claims
    assert claims["sub"] == "dave-sub" and claims["email"] == "dave@new.example"
    assert claims["email_verified"] is False and claims["name"] == "David"
    assert _userinfo(http, renewed["access_token"]).json() == expected

    # Changes accumulate; null removes a claim.
    more = http.post("/_control/users/dave-sub", json={"picture": None}).json()
    assert more == {"sub": "dave-sub", "changes": {**changes, "picture": None}}
    without_picture = {k: v for k, v in expected.items() if k != "picture"}
    assert _userinfo(http, grant["access_token"]).json() == without_picture
    (fresh,) = _grants(http, user=dave)
    fresh_claims = jwt.decode(fresh["id_token"], _keys(http)).claims
    assert fresh_claims["name"] == "David" and "picture" not in fresh_claims

    http.post("/_control/user", json=dave)
    signed_in = _exchange(http, _authorize(http)).json()
    assert jwt.decode(signed_in["id_token"], _keys(http)).claims["email"] == "dave@new.example"

    assert http.post("/_control/users/dave-sub", json={"sub": "eve-sub"}).status_code == 400
    assert http.post("/_control/users/dave-sub", json=["email"]).status_code == 400
    assert _userinfo(http, grant["access_token"]).json()["sub"] == "dave-sub"

    http.post("/_control/reset").raise_for_status()
    (after_reset,) = _grants(http, user=dave)
    assert _userinfo(http, after_reset["access_token"]).json() == dave


def test_revocations_are_recorded_and_the_revoked_tokens_stop_working(
    http: httpx2.Client,
) -> None:
    (grant,) = _grants(http)
    (other,) = _grants(http, client_id="another-client")

    def revoke(token: str, hint: str | None = None) -> None:
        data = {"token": token} | ({"token_type_hint": hint} if hint else {})
        assert http.post("/revoke", data=data, auth=(CLIENT_ID, CLIENT_SECRET)).status_code == 200

    revoke(grant["refresh_token"], "refresh_token")
    revoke(grant["access_token"])
    revoke(other["refresh_token"])  # another client's: nothing is revoked
    revoke("never-issued")
    assert http.post("/revoke", data={"token": "x"}, auth=(CLIENT_ID, "wrong")).status_code == 401

    assert http.get("/_control/revocations").json()["revocations"] == [
        {"token": grant["refresh_token"], "token_type_hint": "refresh_token",
         "client_id": CLIENT_ID, "revoked": "refresh_token"},
        {"token": grant["access_token"], "token_type_hint": None, "client_id": CLIENT_ID,
         "revoked": "access_token"},
        {"token": other["refresh_token"], "token_type_hint": None, "client_id": CLIENT_ID,
         "revoked": None},
        {"token": "never-issued", "token_type_hint": None, "client_id": CLIENT_ID,
         "revoked": None},
    ]  # fmt: skip
    assert _refresh(http, grant["refresh_token"]).status_code == 400
    assert _userinfo(http, grant["access_token"]).status_code == 401
    http.post("/_control/reset").raise_for_status()
    assert http.get("/_control/revocations").json() == {"revocations": []}
