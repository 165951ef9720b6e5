"""ASGI (Starlette) middleware: only requests with a valid broker access token get through."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from oidc_broker_verifier.challenges import challenge
from oidc_broker_verifier.verifier import AccessTokenVerifier, JWKSUnavailable, TokenRejected

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CLAIMS_KEY = "access_token_claims"


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """RFC 6750 §2.1: the token of an ``Authorization: Bearer`` header, if there is one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AccessTokenMiddleware:
    """ASGI middleware: every HTTP request needs a valid broker access token.

    The claims land in ``request.state.access_token_claims`` (``scope["state"]``); anything
    else is a 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3).
    Paths in ``public_paths`` (exact matches, such as ``/healthz``) pass without a token.
    """

    def __init__(
        self, app: ASGIApp, *, verifier: AccessTokenVerifier, public_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        try:
            if token is None:
                raise TokenRejected("an access token is required")
            claims = await self.verifier.verify(token)
        except JWKSUnavailable:
            await _deny(send, 503, "temporarily_unavailable", "cannot check tokens right now")
            return
        except TokenRejected as exc:
            await _deny(send, 401, "invalid_token", str(exc))
            return
        scope.setdefault("state", {})[CLAIMS_KEY] = claims
        await self.app(scope, receive, send)


async def _deny(send: Send, status: int, error: str, description: str) -> None:
    body = json.dumps({"error": error, "error_description": description}).encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    if status == 401:
        # docs/security.md "Header values from input": the description may quote the token (its
        # alg).
        value = challenge("Bearer", {"error": error, "error_description": description})
        headers.append((b"www-authenticate", value.encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def access_token_claims(request: Any) -> Mapping[str, Any]:
    """In a Starlette endpoint behind the middleware: the verified claims of the caller."""
    claims: Mapping[str, Any] = request.state.access_token_claims
    return claims
