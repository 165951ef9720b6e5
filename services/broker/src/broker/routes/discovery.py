"""``/.well-known/openid-configuration`` and ``/.well-known/jwks.json``: bytes built once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.settings import Settings
from starlette.requests import Request
from starlette.responses import Response

from broker.routes.context import runtime_of


def discovery_document(settings: Settings, signing_algs: Sequence[str]) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "scopes_supported": ["openid", "email", "profile", "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(signing_algs),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "sid",
            "azp",
            "email",
            "email_verified",
            "name",
            "picture",
            "preferred_username",
        ],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
    }


def serialize(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def openid_configuration(request: Request) -> Response:
    body: bytes = request.app.state.discovery_body
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"},
    )


async def jwks(request: Request) -> Response:
    runtime = runtime_of(request)
    snapshot = runtime.keys.snapshot
    headers = {
        # N is at most the lead time by which a new key is published before it signs.
        "Cache-Control": f"public, max-age={runtime.settings.jwks_max_age}",
        "ETag": snapshot.etag,
        "Access-Control-Allow-Origin": "*",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and snapshot.etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(snapshot.jwks_body, media_type="application/json", headers=headers)
