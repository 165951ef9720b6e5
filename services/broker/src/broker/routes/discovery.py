"""``/.well-known/openid-configuration`` and ``/.well-known/jwks.json``: bytes built once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.settings import Settings
from shared.settings.client_keys import ASSERTION_ALGORITHMS
from shared.signing_keys import KeySnapshot, KeyStore
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from broker.http.openapi import (
    Answer,
    Contract,
    Operation,
    Parameter,
    Schema,
    json_answer,
    ref,
    strict_object,
)

# OIDC Core §9: how a confidential client may authenticate; private_key_jwt's assertions are
# signed with one of ASSERTION_ALGORITHMS (RFC 8414 §2: the *_auth_signing_alg_values_supported).
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


def discovery_document(settings: Settings, signing_algs: Sequence[str]) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "end_session_endpoint": f"{issuer}/logout",
        "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        # RS256 first: the default for a client that registered no preference (OIDC Core §2).
        "id_token_signing_alg_values_supported": sorted(signing_algs, key=lambda a: a != "RS256"),
        "token_endpoint_auth_methods_supported": [*CONFIDENTIAL_AUTH_METHODS, "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": [*CONFIDENTIAL_AUTH_METHODS, "none"],
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": list(CONFIDENTIAL_AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
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
            "groups",
        ],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        # OpenID Connect Back-Channel Logout 1.0 §2.1: Logout Tokens to each client's
        # backchannel_logout_uri, always with sid (docs/security.md "Back-channel Logout Tokens").
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
    }


def serialize(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class PrebuiltResponse:
    """An ASGI app that answers every request with one response built once.

    Each request gets its own copy of the header list, so a middleware that edits the
    response headers in place cannot change what later requests receive.
    """

    def __init__(self, response: Response) -> None:
        self._status = response.status_code
        self._headers = tuple(response.raw_headers)
        self._body = bytes(response.body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self._status, "headers": list(self._headers)}
        )
        await send({"type": "http.response.body", "body": self._body})


def discovery_response(settings: Settings, signing_algs: Sequence[str]) -> PrebuiltResponse:
    """Built once at startup: the same document answers every request."""
    return PrebuiltResponse(
        Response(
            serialize(discovery_document(settings, signing_algs)),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"},
        )
    )


class JWKSEndpoint:
    """``GET /.well-known/jwks.json``, the endpoint every resource server polls.

    A raw ASGI app (an instance, so Starlette does not wrap it in a Request/Response cycle):
    the 200 and 304 responses are rebuilt only when the key snapshot changes, and a request
    costs one scan of its headers for ``If-None-Match``.
    """

    def __init__(self, keys: KeyStore, max_age: int) -> None:
        self._keys = keys
        self._max_age = max_age
        self._snapshot: KeySnapshot | None = None
        self._ok = PrebuiltResponse(Response())
        self._not_modified = self._ok
        self._etag = b""

    def responses(self) -> tuple[PrebuiltResponse, PrebuiltResponse, bytes]:
        """The 200 and 304 responses for the current keys, and their ETag."""
        snapshot = self._keys.snapshot
        if snapshot is not self._snapshot:
            headers = {
                # N is at most the lead time by which a new key is published before it signs.
                "Cache-Control": f"public, max-age={self._max_age}",
                "ETag": snapshot.etag,
                "Access-Control-Allow-Origin": "*",
            }
            self._ok = PrebuiltResponse(
                Response(snapshot.jwks_body, media_type="application/json", headers=headers)
            )
            self._not_modified = PrebuiltResponse(Response(status_code=304, headers=headers))
            self._etag = snapshot.etag.encode("ascii")
            self._snapshot = snapshot
        return self._ok, self._not_modified, self._etag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok, not_modified, etag = self.responses()
        response = ok
        for name, value in scope["headers"]:  # raw ASGI headers: names are lower-case
            if name == b"if-none-match" and _matches(value, etag):
                response = not_modified
                break
        await response(scope, receive, send)


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 §13.1.2: If-None-Match compares weakly (a proxy may have weakened the tag)."""
    if if_none_match.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in if_none_match.split(b","))


_URL: Schema = {"type": "string", "format": "uri"}
_NAMES: Schema = {"type": "array", "items": {"type": "string"}}
_URLS = ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
_MORE_URLS = ("revocation_endpoint", "introspection_endpoint", "end_session_endpoint")
_LISTS = (
    "scopes_supported",
    "response_types_supported",
    "response_modes_supported",
    "grant_types_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "revocation_endpoint_auth_methods_supported",
    "revocation_endpoint_auth_signing_alg_values_supported",
    "introspection_endpoint_auth_methods_supported",
    "introspection_endpoint_auth_signing_alg_values_supported",
    "code_challenge_methods_supported",
    "claims_supported",
    "prompt_values_supported",
)
_FLAGS = (
    "claims_parameter_supported",
    "request_parameter_supported",
    "request_uri_parameter_supported",
    "authorization_response_iss_parameter_supported",
    "backchannel_logout_supported",
    "backchannel_logout_session_supported",
)
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
_CACHE_HEADERS: dict[str, Schema] = {"Cache-Control": {"type": "string"}}

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/.well-known/openid-configuration",
            "discovery",
            "OpenID Provider metadata (OpenID Connect Discovery 1.0 §3)",
            "OpenID Connect",
            answers=(json_answer(200, "the provider metadata", ref("ProviderMetadata")),),
            reads_database=False,
        ),
        Operation(
            "GET",
            "/.well-known/jwks.json",
            "jwks",
            "The public signing keys: current, next, and retired but unexpired (RFC 7517)",
            "OpenID Connect",
            parameters=(
                Parameter(
                    "If-None-Match",
                    "header",
                    {"type": "string"},
                    "an ETag of an earlier answer: 304 while the keys are unchanged",
                ),
            ),
            answers=(
                json_answer(
                    200, "the key set", ref("JWKSet"), ETag={"type": "string"}, **_CACHE_HEADERS
                ),
                Answer(304, "the keys have not changed", headers={"ETag": {"type": "string"}}),
            ),
            reads_database=False,
        ),
    ),
    schemas={
        "ProviderMetadata": strict_object(
            {
                **{name: _URL for name in (*_URLS, *_MORE_URLS)},
                **{name: _NAMES for name in _LISTS},
                **{name: {"type": "boolean"} for name in _FLAGS},
            },
            required=(*_URLS, *_MORE_URLS, *_LISTS, *_FLAGS),
        ),
        "JWKSet": strict_object(
            {"keys": {"type": "array", "items": ref("JWK")}}, required=["keys"]
        ),
        "JWK": {
            "type": "object",
            "description": "A public key; private members never appear.",
            "properties": {
                "kty": {"enum": ["EC", "RSA"]},
                "kid": {"type": "string"},
                "alg": {"type": "string"},
                "use": {"const": "sig"},
                **{name: False for name in _PRIVATE_JWK_MEMBERS},
            },
            "required": ["kty", "kid", "alg", "use"],
            "additionalProperties": {"type": "string"},
        },
    },
)
