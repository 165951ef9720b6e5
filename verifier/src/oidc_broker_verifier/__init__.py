"""Verify the OIDC broker's access tokens in a resource server: offline, against its JWKS.

Needs only an HTTP client (httpx2) and joserfc: no database, Redis or broker settings::

    from oidc_broker_verifier import AccessTokenVerifier, TokenRejected

    verifier = AccessTokenVerifier("https://login.example.com", audience="https://api.internal")
    claims = await verifier.verify(token)  # or TokenRejected, with a reason safe to log

A Starlette/ASGI service can let :class:`AccessTokenMiddleware` guard every request instead.
What is checked: ``oidc_broker_verifier.verifier``.
"""

from oidc_broker_verifier.middleware import (
    AccessTokenMiddleware,
    access_token_claims,
    bearer_token,
)
from oidc_broker_verifier.verifier import AccessTokenVerifier, JWKSUnavailable, TokenRejected

__all__ = [
    "AccessTokenMiddleware",
    "AccessTokenVerifier",
    "JWKSUnavailable",
    "TokenRejected",
    "access_token_claims",
    "bearer_token",
]
