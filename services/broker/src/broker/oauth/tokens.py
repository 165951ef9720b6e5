"""Minting the broker's JWTs (RFC 9068 access tokens, OIDC ID tokens) and verifying its own.

Signing uses the in-memory ``KeySnapshot``: no database work on this path. Verification pins the
algorithms and checks ``typ``, ``iss`` and ``exp`` (docs/security.md "Access-token format",
"ID-token claims", "Token verification"); the broker's own APIs
accept any audience, so ``aud`` is checked by callers that care.

Two kinds of access token: a user's (``sub`` the broker user id, ``sid`` its session) and a
service token from the ``client_credentials`` grant (``sub`` the client id, no ``sid``:
``is_service_token``; docs/security.md "Service tokens").
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from shared.crypto.jwt_signer import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE
from shared.providers.oidc import at_hash
from shared.settings import ClientConfig, Settings
from shared.signing_keys import KeySnapshot

CLOCK_LEEWAY = 30


@dataclass(frozen=True)
class UserClaims:
    """What the broker knows about a user, for ID tokens and /userinfo."""

    sub: str
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    picture: str | None = None
    preferred_username: str | None = None
    groups: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, user_id: str, row: Mapping[str, Any] | None) -> UserClaims:
        """From ``users`` columns (``display_name`` is the ``name`` claim)."""
        row = row or {}
        return cls(
            sub=user_id,
            email=row.get("email"),
            email_verified=bool(row.get("email_verified")),
            name=row.get("display_name"),
            picture=row.get("picture"),
            preferred_username=row.get("preferred_username"),
            groups=tuple(row.get("groups") or ()),
        )

    def for_scopes(self, scopes: set[str]) -> dict[str, Any]:
        """OIDC Core §5.4: `email` and `profile` scopes select the claims released."""
        claims: dict[str, Any] = {"sub": self.sub}
        if "email" in scopes:
            if self.email:
                claims["email"] = self.email
            # Known even without an address: e.g. a GitHub account with no verified email.
            claims["email_verified"] = bool(self.email and self.email_verified)
        if "profile" in scopes:
            for name in ("name", "picture", "preferred_username"):
                value = getattr(self, name)
                if value:
                    claims[name] = value
        if "groups" in scopes and self.groups:
            claims["groups"] = list(self.groups)
        return claims


def _epoch(value: dt.datetime) -> int:
    return int(value.timestamp())


def access_token_audience(settings: Settings, client: ClientConfig) -> str | list[str]:
    audience = client.audience or (settings.audience,)
    return audience[0] if len(audience) == 1 else list(audience)


def new_jti() -> str:
    """128 random bits (RFC 9068 §2.2: unique per token)."""
    return secrets.token_urlsafe(16)


def _access_claims(
    settings: Settings,
    *,
    client: ClientConfig,
    subject: str,
    audience: str | list[str],
    now: dt.datetime,
) -> dict[str, Any]:
    """RFC 9068 §2.2: the claims every access token carries."""
    issued = _epoch(now)
    return {
        "iss": settings.issuer,
        "sub": subject,
        "aud": audience,
        "exp": issued + settings.access_token_ttl,
        "iat": issued,
        "nbf": issued,
        "jti": new_jti(),
        "client_id": client.id,
    }


def mint_access_token(
    keys: KeySnapshot,
    settings: Settings,
    *,
    client: ClientConfig,
    subject: str,
    session_id: str,
    scope: str,
    auth_time: dt.datetime,
    now: dt.datetime,
) -> str:
    """RFC 9068 §2: typ at+jwt, iss sub aud exp iat jti client_id scope (+ sid, auth_time)."""
    claims = _access_claims(
        settings,
        client=client,
        subject=subject,
        audience=access_token_audience(settings, client),
        now=now,
    )
    claims.update(scope=scope, sid=session_id, auth_time=_epoch(auth_time))
    return keys.signer(settings.signing_alg).sign(ACCESS_TOKEN_TYPE, claims)


def service_token_claims(
    settings: Settings,
    *,
    client: ClientConfig,
    scope: str,
    audience: tuple[str, ...],
    now: dt.datetime,
) -> dict[str, Any]:
    """A ``client_credentials`` token's claims (RFC 9068 §2.2, RFC 6749 §4.4): ``sub`` is the
    client itself, and there is no ``sid`` or ``auth_time``: no user, no session. ``scope``
    only when some was granted."""
    claims = _access_claims(
        settings,
        client=client,
        subject=client.id,
        audience=audience[0] if len(audience) == 1 else list(audience),
        now=now,
    )
    if scope:
        claims["scope"] = scope
    return claims


def sign_service_token(keys: KeySnapshot, settings: Settings, claims: Mapping[str, Any]) -> str:
    return keys.signer(settings.signing_alg).sign(ACCESS_TOKEN_TYPE, dict(claims))


def is_service_token(claims: Mapping[str, Any]) -> bool:
    """A ``client_credentials`` token: no ``sid``. Every token issued to a user has one (the
    broker session), so its absence is what marks a token that has no user."""
    return "sid" not in claims


def mint_id_token(
    keys: KeySnapshot,
    settings: Settings,
    *,
    client: ClientConfig,
    user: UserClaims,
    session_id: str,
    scope: str,
    auth_time: dt.datetime,
    now: dt.datetime,
    access_token: str,
    nonce: str | None,
) -> str:
    """OIDC Core §2 / §3.1.3.6: aud is the client, with nonce, at_hash, auth_time and sid."""
    signer = keys.signer(client.id_token_signed_response_alg)
    issued = _epoch(now)
    claims: dict[str, Any] = user.for_scopes(set(scope.split()))
    claims.update(
        iss=settings.issuer,
        aud=client.id,
        azp=client.id,
        exp=issued + settings.id_token_ttl,
        iat=issued,
        auth_time=_epoch(auth_time),
        at_hash=at_hash(access_token, signer.alg),
        sid=session_id,
    )
    if nonce is not None:
        claims["nonce"] = nonce
    return signer.sign(ID_TOKEN_TYPE, claims)


class TokenInvalid(Exception):
    """The token is not a valid broker access token (the reason is safe to show)."""


def verify_access_token(
    token: str, keys: KeySnapshot, settings: Settings, now: dt.datetime
) -> Mapping[str, Any]:
    """RFC 8725 §3.1/§3.11 and RFC 9068 §4: pinned alg, typ at+jwt, our iss, unexpired."""
    try:
        decoded = jwt.decode(token, keys.verification, algorithms=[settings.signing_alg])
    except (JoseError, ValueError, TypeError):
        raise TokenInvalid("the access token is malformed or its signature is invalid") from None
    typ = str(decoded.header.get("typ", "")).lower()
    if typ not in ("at+jwt", "application/at+jwt"):
        raise TokenInvalid("the token is not an access token")
    try:
        jwt.JWTClaimsRegistry(
            now=_epoch(now),
            leeway=CLOCK_LEEWAY,
            iss={"essential": True, "value": settings.issuer},
            sub={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            client_id={"essential": True},
        ).validate(decoded.claims)
    except JoseError:
        raise TokenInvalid("the access token is expired or not issued by this broker") from None
    claims = decoded.claims
    if is_service_token(claims) and claims["sub"] != claims["client_id"]:
        # A token without a session is a service token, whose subject is its client.
        raise TokenInvalid("the access token is not issued by this broker")
    return claims


def verify_id_token_hint(token: str, keys: KeySnapshot, settings: Settings) -> Mapping[str, Any]:
    """An ID token this broker issued, for RP-initiated logout: signature, ``iss``, ``typ``.

    Its expiry is not checked: OpenID Connect RP-Initiated Logout §2 lets a relying party send
    an expired ID token as the hint (users sign out long after signing in).
    """
    try:
        decoded = jwt.decode(token, keys.verification, algorithms=list(keys.signing))
    except (JoseError, ValueError, TypeError):
        raise TokenInvalid("the ID token is malformed or its signature is invalid") from None
    if str(decoded.header.get("typ", "JWT")).upper() != "JWT":
        raise TokenInvalid("the token is not an ID token")
    try:
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": settings.issuer},
            sub={"essential": True},
            aud={"essential": True},
            sid={"essential": True},
        ).validate(decoded.claims)
    except JoseError:
        raise TokenInvalid("the ID token was not issued by this broker") from None
    return decoded.claims
