"""Discovery and JWKS: what relying parties and resource servers read (docs/security.md "Issuer in
authorization responses", "JWKS and key rotation")."""

from __future__ import annotations


async def test_discovery_advertises_the_contract(broker):
    response = await broker.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    document = response.json()
    issuer = "http://127.0.0.1:8000"
    assert document["issuer"] == issuer
    assert document["authorization_endpoint"] == f"{issuer}/authorize"
    assert document["token_endpoint"] == f"{issuer}/token"
    assert document["userinfo_endpoint"] == f"{issuer}/userinfo"
    assert document["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["response_types_supported"] == ["code"]
    assert document["id_token_signing_alg_values_supported"][0] == "RS256"  # the default
    assert "ES256" in document["id_token_signing_alg_values_supported"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    }
    assert set(document["introspection_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    for endpoint in ("token", "revocation", "introspection"):
        # RFC 8414 §2: the algorithms of private_key_jwt assertions; never none or HMAC.
        algorithms = document[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert set(algorithms) == {"ES256", "PS256", "RS256"}
    assert "client_credentials" in document["grant_types_supported"]


async def test_jwks_has_public_members_only_with_kid_alg_and_use(broker):
    response = await broker.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert {key["alg"] for key in keys} >= {"ES256", "RS256"}
    for key in keys:
        assert key["kid"] and key["use"] == "sig"
        for private in ("d", "p", "q", "dp", "dq", "qi"):
            assert private not in key


async def test_jwks_is_cacheable_with_a_strong_etag_and_304(broker, runtime):
    response = await broker.get("/.well-known/jwks.json")
    etag = response.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert response.headers["cache-control"] == (f"public, max-age={runtime.settings.jwks_max_age}")
    cached = await broker.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    stale = await broker.get("/.well-known/jwks.json", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200
    weakened = await broker.get(
        "/.well-known/jwks.json", headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert weakened.status_code == 304  # RFC 9110 §13.1.2: weak comparison
    assert (
        await broker.get("/.well-known/jwks.json", headers={"If-None-Match": "*"})
    ).status_code == 304


async def test_unknown_paths_and_methods_answer_json_errors(broker):
    missing = await broker.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong_method = await broker.get("/token")
    assert wrong_method.status_code == 405
    for path in ("/.well-known/jwks.json", "/.well-known/openid-configuration"):
        posted = await broker.post(path)
        assert posted.status_code == 405
        assert posted.json()["error"] == "method_not_allowed"


async def test_health_and_readiness(broker):
    assert (await broker.get("/healthz")).json() == {"status": "ok"}
    ready = await broker.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] is True
