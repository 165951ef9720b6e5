"""``/.well-known/openid-configuration`` and ``/.well-known/jwks.json``: bytes built once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.settings import Settings
from shared.signing_keys import KeySnapshot
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
        "response_modes_supported": ["query", "form_post"],
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


def discovery_response(document: dict[str, Any]) -> Response:
    """Built once at startup; the same immutable response answers every request."""
    return Response(
        serialize(document),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"},
    )


async def openid_configuration(request: Request) -> Response:
    response: Response = request.app.state.discovery_response
    return response


class JWKSResponses:
    """The JWKS 200 and 304 responses, built once per key snapshot (the endpoint's hot path)."""

    def __init__(self) -> None:
        self._snapshot: KeySnapshot | None = None
        self._ok = Response()
        self._not_modified = Response()

    def for_snapshot(self, snapshot: KeySnapshot, max_age: int) -> tuple[Response, Response]:
        if snapshot is not self._snapshot:
            headers = {
                # N is at most the lead time by which a new key is published before it signs.
                "Cache-Control": f"public, max-age={max_age}",
                "ETag": snapshot.etag,
                "Access-Control-Allow-Origin": "*",
            }
            self._ok = Response(snapshot.jwks_body, media_type="application/json", headers=headers)
            self._not_modified = Response(status_code=304, headers=headers)
            self._snapshot = snapshot
        return self._ok, self._not_modified


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match compares weakly (a proxy may have weakened the tag)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


async def jwks(request: Request) -> Response:
    runtime = runtime_of(request)
    responses: JWKSResponses = request.app.state.jwks_responses
    ok, not_modified = responses.for_snapshot(runtime.keys.snapshot, runtime.settings.jwks_max_age)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _matches(if_none_match, ok.headers["etag"]):
        return not_modified
    return ok
