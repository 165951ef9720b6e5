"""Verify the OIDC broker's access tokens in a resource server: offline, against its JWKS.

Needs only an HTTP client (httpx2) and joserfc: no database, Redis or broker settings::

    from oidc_broker_verifier import AccessTokenVerifier, TokenRejected

    verifier = AccessTokenVerifier("https://login.example.com", audience="https://api.internal")
    claims = await verifier.verify(token)  # or TokenRejected, with a reason safe to log

A Starlette/ASGI service can let :class:`AccessTokenMiddleware` guard every request instead.
Service tokens (``client_credentials``: no user, ``sub`` is the client id) verify too unless the
verifier is built with ``accept=("user",)``; :func:`token_kind` tells the two apart.
What is checked: ``oidc_broker_verifier.verifier``.
"""

from oidc_broker_verifier.middleware import (
    AccessTokenMiddleware,
    access_token_claims,
    bearer_token,
)
from oidc_broker_verifier.verifier import (
    AccessTokenVerifier,
    JWKSUnavailable,
    TokenKind,
    TokenRejected,
    is_service_token,
    token_kind,
)

__all__ = [
    "AccessTokenMiddleware",
    "AccessTokenVerifier",
    "JWKSUnavailable",
    "TokenKind",
    "TokenRejected",
    "access_token_claims",
    "bearer_token",
    "is_service_token",
    "token_kind",
]
