"""End to end over real HTTP: a service gets tokens for itself from ``broker serve``.

The broker runs under uvicorn with a YAML config; this test is two services using authlib's
OAuth 2.0 client exactly as a backend would: one authenticating with ``private_key_jwt`` (an RSA
key pair generated here, its public half in the broker's config), one with
``client_secret_basic``. Each asks for ``client_credentials`` tokens, introspects and revokes
them through authlib, and a resource server checks them with ``oidc_broker_verifier``
(docs/security.md "Service tokens", "Client assertions").
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx2
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import RSAKey
from oidc_broker_verifier import AccessTokenVerifier, TokenRejected, token_kind

from tests.support.processes import broker_process

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
API = "https://api.internal"
REPORTS_SECRET = "reports-secret-at-least-32-characters"


def _write_config(path: Path, key: RSAKey) -> None:
    public = json.dumps(key.as_dict(private=False))
    path.write_text(
        textwrap.dedent(
            f"""\
            providers:
              - {{id: dev, type: dev}}
            clients:
              - id: billing
                grant_types: [client_credentials]
                token_endpoint_auth_method: private_key_jwt
                jwks: {{keys: [{public}]}}
                scopes: [billing.read, billing.write]
                audience: [{API}]
              - id: reports
                secret: ${{REPORTS_SECRET}}
                grant_types: [client_credentials]
                token_endpoint_auth_method: client_secret_basic
                scopes: [reports.read]
                audience: [{API}]
            """
        )
    )


async def test_services_get_introspect_and_revoke_their_own_tokens_with_authlib(
    tmp_path, database_url, keyring
):
    key = RSAKey.generate_key(2048, parameters={"kid": "billing-2026"})
    config = tmp_path / "broker.yaml"
    _write_config(config, key)
    with broker_process(
        config,
        database_url=database_url,
        keyring=keyring,
        cwd=str(ROOT),
        REPORTS_SECRET=REPORTS_SECRET,
        BROKER_LOG_LEVEL="DEBUG",
        BROKER_PERIODIC_JOBS="0",
    ) as broker:
        issuer = broker.issuer
        async with httpx2.AsyncClient() as http:
            metadata = (await http.get(f"{issuer}/.well-known/openid-configuration")).json()
        token_endpoint = metadata["token_endpoint"]
        assert "client_credentials" in metadata["grant_types_supported"]
        assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
        assert "RS256" in metadata["token_endpoint_auth_signing_alg_values_supported"]

        # authlib's private_key_jwt: an RS256 assertion (aud = the token endpoint, a fresh jti
        # each time, exp an hour ahead) in place of a secret.
        billing = AsyncOAuth2Client(
            client_id="billing",
            client_secret=key,
            token_endpoint_auth_method="private_key_jwt",
            revocation_endpoint_auth_method="private_key_jwt",
            scope="billing.read",
        )
        billing.register_client_auth_method(PrivateKeyJWT(token_endpoint))
        token = await billing.fetch_token(token_endpoint, grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "billing.read"
        assert "refresh_token" not in token and "id_token" not in token
        second = await billing.fetch_token(token_endpoint, grant_type="client_credentials")
        assert second["access_token"] != token["access_token"]

        reports = AsyncOAuth2Client(
            client_id="reports",
            client_secret=REPORTS_SECRET,
            token_endpoint_auth_method="client_secret_basic",
        )
        reports_token = await reports.fetch_token(token_endpoint, grant_type="client_credentials")
        assert reports_token["scope"] == "reports.read"

        # A resource server verifies both offline, and can tell a service from a user.
        verifier = AccessTokenVerifier(issuer, audience=API)
        claims = await verifier.verify(token["access_token"])
        assert claims["sub"] == claims["client_id"] == "billing"
        assert token_kind(claims) == "service" and "sid" not in claims
        users_only = AccessTokenVerifier(issuer, audience=API, accept=("user",))
        with pytest.raises(TokenRejected):
            await users_only.verify(reports_token["access_token"])

        # Introspection and revocation through authlib, authenticated the same way.
        introspection_endpoint = metadata["introspection_endpoint"]
        described = (
            await billing.introspect_token(introspection_endpoint, token=token["access_token"])
        ).json()
        assert described["active"] is True and described["sub"] == "billing"
        revoked = await billing.revoke_token(
            metadata["revocation_endpoint"], token=token["access_token"]
        )
        assert revoked.status_code == 200, revoked.text
        after = (
            await reports.introspect_token(introspection_endpoint, token=token["access_token"])
        ).json()
        assert after == {"active": False}
        still = (
            await reports.introspect_token(introspection_endpoint, token=second["access_token"])
        ).json()
        assert still["active"] is True

        # An assertion is good once: the same one again is invalid_client.
        assertion = private_key_jwt_sign(key, client_id="billing", token_endpoint=token_endpoint)
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        async with httpx2.AsyncClient() as http:
            first = await http.post(token_endpoint, data=data)
            replayed = await http.post(token_endpoint, data=data)
            userinfo = await http.get(
                metadata["userinfo_endpoint"],
                headers={"Authorization": f"Bearer {second['access_token']}"},
            )
        assert first.status_code == 200, first.text
        assert replayed.status_code == 401
        assert replayed.json()["error"] == "invalid_client"
        # A service token has no user.
        assert userinfo.status_code == 401
        assert 'error="invalid_token"' in userinfo.headers["www-authenticate"]
        for client in (billing, reports):
            await client.aclose()
        await verifier.aclose()
        await users_only.aclose()

        # docs/security.md "No secrets in logs": at DEBUG, no token, assertion or secret.
        log = broker.process.read_log()
        for secret in (
            token["access_token"],
            second["access_token"],
            reports_token["access_token"],
            assertion,
            REPORTS_SECRET,
        ):
            assert secret not in log
        routes = [
            entry["route"]
            for entry in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
            if entry.get("event") == "http.request"
        ]
        assert routes.count("/token") == 5
