"""Verifying the broker's access tokens inside another service: offline, against its JWKS.

What it checks (RFC 9068 §4, RFC 8725 §3.1/§3.11, docs/security.md "Token verification"): the
signature, with an
algorithm from the allow-list (``ES256`` unless told) and a key from the broker's JWKS named by
the token's ``kid``; ``typ`` ``at+jwt``; ``iss`` equal to the broker's issuer; ``aud`` holding the
expected audience; ``exp`` and ``nbf`` with a small leeway; ``sub``, ``client_id``, ``iat`` and
``jti`` present. ``alg: none``, HS256 keyed with the public key, an ID token (``typ: JWT``) and a
token of another issuer or audience are all rejected.

The JWKS is fetched (from the issuer's discovery document, or ``jwks_uri``) on first use and kept
for the response's ``Cache-Control: max-age`` (bounded by ``min_cache``/``max_cache``), revalidated
with ``If-None-Match``. A token with an unknown ``kid`` makes the verifier fetch again at once,
but at most once per ``refetch_interval``, and concurrent callers share one fetch. Once the keys
are cached, verifying is CPU work only.

A revoked session's tokens keep verifying here until they expire (15 minutes by default); a
service that must refuse them sooner reads the broker's revocation stream (``broker:revocations``)
or asks ``/introspect``. A key revoked at the broker is refused once the cached JWKS is refreshed.

Two kinds of token (:func:`token_kind`): a **user** token carries ``sid`` (the broker session)
and its ``sub`` is the broker user id; a **service** token, from the ``client_credentials``
grant, has no ``sid`` and its ``sub`` is the client id (a token without ``sid`` whose ``sub`` is
not its ``client_id`` is rejected: the broker issues none). ``accept`` says which kinds a
verifier lets through (both by default): an endpoint that acts for a user passes
``accept=("user",)``, one for machine callers only ``accept=("service",)``. A revoked service
token keeps verifying here until it expires; only ``/introspect`` knows it was revoked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

import httpx2
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
_MAX_AGE = re.compile(r"max-age=(\d+)")
_MAX_TOKEN_LENGTH = 8192

Key = ECKey | RSAKey
TokenKind = Literal["user", "service"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("user", "service")


def token_kind(claims: Mapping[str, Any]) -> TokenKind:
    """``user`` for a token issued to a signed-in user (it has ``sid``), ``service`` for a
    ``client_credentials`` token (no ``sid``; ``sub`` is the client id)."""
    return "user" if "sid" in claims else "service"


def is_service_token(claims: Mapping[str, Any]) -> bool:
    """Whether verified claims are a service token's (no user behind them)."""
    return token_kind(claims) == "service"


class TokenRejected(Exception):
    """The token is not a valid, current broker access token; ``str()`` says why."""


class JWKSUnavailable(TokenRejected):
    """The broker's JWKS could not be fetched (the token cannot be checked right now)."""


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


class AccessTokenVerifier:
    """Verifies broker access tokens; one instance per service, shared by all requests."""

    def __init__(
        self,
        issuer: str,
        *,
        audience: str,
        algorithms: Collection[str] = ("ES256",),
        leeway: int = 10,
        jwks_uri: str | None = None,
        http: httpx2.AsyncClient | None = None,
        min_cache: float = 60,
        max_cache: float = 3600,
        refetch_interval: float = 60,
        clock: Callable[[], float] = time.time,
        accept: Collection[TokenKind] = TOKEN_KINDS,
    ) -> None:
        if not algorithms or not set(algorithms) <= {"ES256", "ES384", "RS256", "PS256"}:
            raise ValueError("algorithms must be asymmetric JWS algorithms (ES256, RS256, ...)")
        if not accept or not set(accept) <= set(TOKEN_KINDS):
            raise ValueError("accept takes user and/or service")
        self.accept = frozenset(accept)
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self._jwks_uri = jwks_uri
        self._http = http or httpx2.AsyncClient(timeout=httpx2.Timeout(5.0))
        self._owns_http = http is None
        self._min_cache, self._max_cache = min_cache, max_cache
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._keys: dict[str, Key] = {}
        self._etag: str | None = None
        self._fresh_until = 0.0
        self._fetched_at = float("-inf")
        self._fetching: asyncio.Lock | None = None
        self.fetches = 0  # JWKS downloads so far (for metrics and tests)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims, or ``TokenRejected``."""
        header = self._header(token)
        key = await self._key_for(header["kid"])
        return self._verified_claims(token, key)

    # ------------------------------------------------------------------ checks

    def _header(self, token: str) -> Mapping[str, Any]:
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise TokenRejected("not a JWS compact token")
        try:
            header = _b64json(token.split(".", 1)[0])
        except (ValueError, binascii.Error, RecursionError):  # nested past json's depth limit
            raise TokenRejected("the token header is not JSON") from None
        if not isinstance(header, dict):
            raise TokenRejected("the token header is not a JSON object")
        if header.get("alg") not in self.algorithms:
            raise TokenRejected(f"algorithm {header.get('alg')!r} is not allowed")
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise TokenRejected("the token is not an access token (typ)")
        if not isinstance(header.get("kid"), str):
            raise TokenRejected("the token names no key (kid)")
        return header

    def _verified_claims(self, token: str, key: Key) -> Mapping[str, Any]:
        try:
            decoded = jws.deserialize_compact(token, key, algorithms=self.algorithms)
            claims = json.loads(decoded.payload)
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("the signature is invalid") from None
        if not isinstance(claims, dict):
            raise TokenRejected("the payload is not a JSON object")
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise TokenRejected(f"claim {missing[0]} is missing")
        if claims["iss"] != self.issuer:
            raise TokenRejected("the token is from another issuer")
        kind = token_kind(claims)
        if kind == "service" and claims["sub"] != claims["client_id"]:
            raise TokenRejected("a token without sid must be a service token (sub = client_id)")
        if kind not in self.accept:
            raise TokenRejected(f"{kind} tokens are not accepted here")
        audience = claims["aud"]
        if audience != self.audience and not (
            isinstance(audience, list) and self.audience in audience
        ):
            raise TokenRejected("the token is for another audience")
        now = self._clock()
        try:
            if float(claims["exp"]) + self.leeway < now:
                raise TokenRejected("the token has expired")
            if "nbf" in claims and float(claims["nbf"]) - self.leeway > now:
                raise TokenRejected("the token is not valid yet")
        except (TypeError, ValueError):
            raise TokenRejected("exp or nbf is not a number") from None
        return claims

    # ------------------------------------------------------------------ keys

    async def _key_for(self, kid: str) -> Key:
        now = self._clock()
        key = self._keys.get(kid)
        if key is not None and now < self._fresh_until:
            return key
        # Stale cache, or a kid we have not seen (a rotation): fetch, unless one just happened.
        if now < self._fresh_until and now - self._fetched_at < self._refetch_interval:
            raise TokenRejected("the token's key is not in the broker's JWKS")
        await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise TokenRejected("the token's key is not in the broker's JWKS")
        return key

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        fetched_before = self._fetched_at
        async with self._fetching:
            if self._fetched_at != fetched_before:
                return  # another caller fetched while we waited
            await self._fetch()

    async def _fetch(self) -> None:
        try:
            uri = self._jwks_uri or await self._discover()
            headers = {"If-None-Match": self._etag} if self._etag and self._keys else {}
            response = await self._http.get(uri, headers=headers)
        except httpx2.HTTPError as exc:
            raise JWKSUnavailable(
                f"the broker's JWKS is unreachable: {type(exc).__name__}"
            ) from None
        now = self._clock()
        self._fetched_at = now
        self.fetches += 1
        if response.status_code == 304 and self._keys:
            self._fresh_until = now + self._cache_time(response)
            return
        if response.status_code != 200:
            raise JWKSUnavailable(f"the broker's JWKS answered {response.status_code}")
        try:
            keys = KeySet.import_key_set(response.json())
        except (JoseError, ValueError, TypeError, KeyError):
            raise JWKSUnavailable("the broker's JWKS is malformed") from None
        self._keys = {
            key.kid: key  # type: ignore[misc]
            for key in keys.keys
            if key.kid and isinstance(key, ECKey | RSAKey) and not key.is_private
        }
        self._etag = response.headers.get("etag")
        self._fresh_until = now + self._cache_time(response)

    def _cache_time(self, response: httpx2.Response) -> float:
        match = _MAX_AGE.search(response.headers.get("cache-control", ""))
        seconds = float(match.group(1)) if match else self._min_cache
        return min(max(seconds, self._min_cache), self._max_cache)

    async def _discover(self) -> str:
        response = await self._http.get(f"{self.issuer}/.well-known/openid-configuration")
        if response.status_code != 200:
            raise JWKSUnavailable(f"the broker's discovery answered {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise JWKSUnavailable("the broker's discovery document is not JSON") from None
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise JWKSUnavailable("the broker's discovery document does not match its issuer")
        if not isinstance(document.get("jwks_uri"), str):
            raise JWKSUnavailable("the broker's discovery document does not match its issuer")
        self._jwks_uri = str(document["jwks_uri"])
        return self._jwks_uri
