"""End to end over real HTTP: three processes on 127.0.0.1.

The broker runs under uvicorn (``broker serve``) with a YAML config, an upstream OpenID Provider
process plays the corporate IdP, and this test is the relying party, using authlib's OAuth client
exactly as a frontend's backend would. The access token is verified with joserfc against the
broker's JWKS.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.processes import broker_process

ROOT = Path(__file__).resolve().parents[2]
REDIRECT_URI = "http://127.0.0.1:3000/callback"


def _write_config(path: Path, upstream: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            providers:
              - id: corp
                type: oidc
                display_name: Corp SSO
                issuer: {upstream}
                client_id: broker
                client_secret: ${{CORP_CLIENT_SECRET}}
                scopes: [openid, email, profile, offline_access]
            clients:
              - id: portal
                secret: ${{PORTAL_SECRET}}
                redirect_uris: [{REDIRECT_URI}]
            """
        )
    )


async def _browser_follow(url: str) -> tuple[str, list[str]]:
    """Follow redirects as a browser (with cookies) until the client's redirect URI.

    Returns the final URL and every ``code`` and ``state`` value seen on the way.
    """
    seen: list[str] = []
    async with httpx2.AsyncClient() as browser:
        for _ in range(8):
            response = await browser.get(url)
            assert response.status_code in (302, 303), response.text[:500]
            url = response.headers["location"]
            query = parse_qs(urlsplit(url).query)
            seen += query.get("code", []) + query.get("state", [])
            if url.startswith(REDIRECT_URI):
                return url, seen
    raise AssertionError("the flow did not come back to the client")


async def test_certified_style_client_logs_in_refreshes_and_calls_userinfo(
    tmp_path, database_url, upstream_idp, keyring
):
    async with httpx2.AsyncClient() as control:
        await control.post(f"{upstream_idp}/_control/reset")
    config = tmp_path / "broker.yaml"
    _write_config(config, upstream_idp)
    with broker_process(
        config,
        database_url=database_url,
        keyring=keyring,
        cwd=str(ROOT),
        CORP_CLIENT_SECRET="broker-secret",
        PORTAL_SECRET="portal-secret-at-least-32-characters",
        BROKER_LOG_LEVEL="DEBUG",
    ) as broker:
        issuer = broker.issuer
        async with httpx2.AsyncClient() as http:
            metadata = (await http.get(f"{issuer}/.well-known/openid-configuration")).json()
        assert metadata["issuer"] == issuer
        client = AsyncOAuth2Client(
            client_id="portal",
            client_secret="portal-secret-at-least-32-characters",
            token_endpoint_auth_method="client_secret_basic",
            redirect_uri=REDIRECT_URI,
            scope="openid email profile",
            code_challenge_method="S256",
        )
        verifier, nonce = generate_token(48), generate_token(20)
        url, _state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        final, front_channel_secrets = await _browser_follow(url)
        assert f"iss={issuer.replace(':', '%3A').replace('/', '%2F')}" in final
        token = await client.fetch_token(
            metadata["token_endpoint"], authorization_response=final, code_verifier=verifier
        )
        for name in ("access_token", "refresh_token", "id_token", "expires_in", "scope"):
            assert token.get(name), name
        assert token["token_type"] == "Bearer"

        async with httpx2.AsyncClient() as http:
            jwks = KeySet.import_key_set((await http.get(metadata["jwks_uri"])).json())
        access = jwt.decode(token["access_token"], jwks, algorithms=["ES256"])
        assert access.header["typ"] == "at+jwt"
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": issuer},
            exp={"essential": True},
            client_id={"essential": True, "value": "portal"},
        ).validate(access.claims)
        id_token = jwt.decode(token["id_token"], jwks, algorithms=["RS256"])
        assert id_token.header["alg"] == "RS256"  # what RPs at default settings accept
        assert id_token.claims["nonce"] == nonce
        assert id_token.claims["aud"] == "portal"

        userinfo = (await client.get(metadata["userinfo_endpoint"])).json()
        assert userinfo["sub"] == access.claims["sub"]
        assert userinfo["email"] == "alice@example.com"

        old_refresh = token["refresh_token"]
        refreshed = await client.refresh_token(
            metadata["token_endpoint"], refresh_token=old_refresh
        )
        assert refreshed["refresh_token"] != old_refresh
        assert refreshed["access_token"] != token["access_token"]
        onward = await client.refresh_token(
            metadata["token_endpoint"], refresh_token=refreshed["refresh_token"]
        )
        assert onward["refresh_token"] != refreshed["refresh_token"]
        # Its successor was used: the old token presented again is a replay.
        async with httpx2.AsyncClient() as http:
            replay = await http.post(
                metadata["token_endpoint"],
                data={"grant_type": "refresh_token", "refresh_token": old_refresh},
                auth=("portal", "portal-secret-at-least-32-characters"),
            )
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        await client.aclose()

        # docs/security.md "No secrets in logs": a full login, refresh and replay at DEBUG never
        # logs a secret.
        log = broker.process.read_log()
        for secret in (
            token["access_token"],
            old_refresh,
            refreshed["refresh_token"],
            onward["refresh_token"],
            token["id_token"],
            verifier,
            "portal-secret-at-least-32-characters",
            "broker-secret",
            *front_channel_secrets,
        ):
            assert secret not in log
        assert "broker.started" in log
        # One JSON access line per request: the route template, never the URL with its query.
        access_lines = [
            entry
            for entry in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
            if entry.get("event") == "http.request"
        ]
        routes = [entry["route"] for entry in access_lines]
        assert "/auth/oauth2/{provider}/callback" in routes
        assert routes.count("/token") == 4  # code, two refreshes, replay
        assert all(entry["request_id"] for entry in access_lines)
        token_lines = [entry for entry in access_lines if entry["route"] == "/token"]
        assert {entry["client_id"] for entry in token_lines} == {"portal"}
        assert [entry.get("user_id") for entry in token_lines] == [
            access.claims["sub"],
            access.claims["sub"],
            access.claims["sub"],
            None,  # the replay: refused, no user named
        ]
