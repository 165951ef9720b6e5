"""Any OpenID Connect issuer: discovery, ID-token validation, claims and UserInfo.

The checks authlib leaves out are done here (docs/security.md "Upstream ID-token validation",
"Upstream issuer and UserInfo subject" and "Library traps"): the discovery
``issuer`` must equal the configured one, the ID token's ``aud`` must contain our client id, the
algorithm is pinned (never ``none``), ``nonce`` must match, and UserInfo ``sub`` must equal the ID
token's ``sub``. Google and Microsoft reuse this class through ``OIDCQuirks``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from shared.clock import Clock
from shared.providers.base import (
    LoginStart,
    ProbeStep,
    UpstreamLogin,
    UpstreamProfile,
    UpstreamTokens,
)
from shared.providers.errors import ProviderError, ProviderInvalidResponse
from shared.providers.http import get_json_object
from shared.providers.oauth2 import OAuth2Endpoints, OAuth2Flow, check_callback

# Asymmetric algorithms only: `none` and HMAC (keyed with a public key) are never accepted.
ASYMMETRIC_ALGS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
CLOCK_LEEWAY = 60
JWKS_REFETCH_INTERVAL = 60.0


@dataclass(frozen=True)
class OIDCQuirks:
    """Provider-specific adjustments on top of plain OIDC (Google, Microsoft)."""

    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    # Turns the relying party's prompt/max_age into what the upstream understands.
    adapt_start: Callable[[LoginStart], LoginStart] | None = None
    # Accepts the discovery document's `issuer`; default: exactly the configured issuer.
    check_metadata_issuer: Callable[[str], bool] | None = None
    # Validates an ID token's `iss` given the discovery issuer (Microsoft multi-tenant: against
    # the token's own `tid`); default: exact match with the configured issuer.
    check_issuer: Callable[[Mapping[str, Any], str], None] | None = None
    # Builds the normalized profile from the merged ID-token + UserInfo claims.
    to_profile: Callable[[Mapping[str, Any], str], UpstreamProfile] | None = None
    # Whether to call the UserInfo endpoint after the ID token (Microsoft: the ID token is all).
    use_userinfo: bool = True
    # Completes the profile with the user's tokens (Microsoft: the Graph photo).
    enrich: Callable[[UpstreamProfile, UpstreamTokens], Awaitable[UpstreamProfile]] | None = None
    # Repeat a login with prompt=consent when it yields no refresh token (Google offline access).
    reprompts_for_refresh_token: bool = False


def standard_profile(claims: Mapping[str, Any], issuer: str) -> UpstreamProfile:
    """OIDC Core §5.1 standard claims; ``email_verified`` must be literally true.

    A generic issuer that verified an address counts as its authority: the operator opted in to
    trusting it by configuring it (and, for linking, by setting ``link_by_email``).
    """
    verified = claims.get("email_verified") is True
    return UpstreamProfile(
        subject=str(claims["sub"]),
        issuer=issuer,
        email=text_claim(claims.get("email")),
        email_verified=verified,
        email_authoritative=verified,
        name=text_claim(claims.get("name")),
        given_name=text_claim(claims.get("given_name")),
        family_name=text_claim(claims.get("family_name")),
        preferred_username=text_claim(claims.get("preferred_username")),
        picture=text_claim(claims.get("picture")),
        claims=dict(claims),
    )


def text_claim(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_HASH_BY_BITS = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def at_hash(access_token: str, alg: str) -> str:
    """OIDC Core §3.1.3.6: left half of the hash of the access token, base64url."""
    digest_fn = hashlib.sha512 if alg == "EdDSA" else _HASH_BY_BITS.get(alg[-3:], hashlib.sha256)
    digest = digest_fn(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


class OIDCProvider:
    """An upstream OpenID Provider found through discovery."""

    def __init__(
        self,
        *,
        provider_id: str,
        provider_type: str,
        display_name: str,
        issuer: str,
        discovery_url: str | None = None,
        flow: OAuth2Flow,
        http: httpx2.AsyncClient,
        clock: Clock,
        discovery_ttl: float = 3600.0,
        quirks: OIDCQuirks | None = None,
    ) -> None:
        self._id = provider_id
        self._type = provider_type
        self._display_name = display_name
        self._issuer = issuer
        self._discovery_url = discovery_url or (
            issuer.rstrip("/") + "/.well-known/openid-configuration"
        )
        self._flow = flow
        self._http = http
        self._clock = clock
        self._discovery_ttl = discovery_ttl
        self._quirks = quirks or OIDCQuirks()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    @property
    def id(self) -> str:
        return self._id

    @property
    def type(self) -> str:
        return self._type

    @property
    def display_name(self) -> str:
        return self._display_name

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def reprompts_for_refresh_token(self) -> bool:
        return self._quirks.reprompts_for_refresh_token

    def probe_steps(self) -> tuple[ProbeStep, ...]:
        return (ProbeStep("discovery", self._probe_discovery), ProbeStep("jwks", self._fetch_keys))

    async def _probe_discovery(self) -> None:
        await self.metadata(refresh=True)

    def _issuer_accepted(self, advertised: Any) -> bool:
        if not isinstance(advertised, str):
            return False
        if self._quirks.check_metadata_issuer is not None:
            return self._quirks.check_metadata_issuer(advertised)
        return advertised == self._issuer

    async def metadata(self, *, refresh: bool = False) -> dict[str, Any]:
        """Discovery document, cached for ``discovery_ttl`` (authlib would cache it forever)."""

        def fresh() -> bool:
            return (
                not refresh
                and self._metadata is not None
                and self._now() - self._metadata_at < self._discovery_ttl
            )

        if fresh():
            assert self._metadata is not None
            return self._metadata
        async with self._lock:
            if fresh():
                assert self._metadata is not None
                return self._metadata
            document = await self._get_json(self._discovery_url, "discovery")
            # OIDC Discovery §4.3: the document's issuer must be exactly the configured one.
            if not self._issuer_accepted(document.get("issuer")):
                raise ProviderInvalidResponse(
                    "discovery issuer does not match the configured issuer"
                )
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(name), str):
                    raise ProviderInvalidResponse(f"discovery document has no {name}")
            self._metadata = document
            self._metadata_at = self._now()
            return document

    async def _get_json(self, url: str, what: str, *, bearer: str | None = None) -> dict[str, Any]:
        return await get_json_object(self._http, url, what, bearer=bearer)

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        stale = self._now() - self._jwks_at > self._discovery_ttl
        if (
            self._jwks is None
            or stale
            or (refresh and self._now() - self._jwks_at > JWKS_REFETCH_INTERVAL)
        ):
            await self._fetch_keys()
        assert self._jwks is not None
        return self._jwks

    async def _fetch_keys(self) -> None:
        """Read the upstream's JWKS now (from discovery's ``jwks_uri``) and keep it."""
        metadata = await self.metadata()
        document = await self._get_json(metadata["jwks_uri"], "jwks")
        try:
            self._jwks = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise ProviderInvalidResponse("the upstream JWKS could not be read") from None
        self._jwks_at = self._now()

    async def _endpoints(self) -> OAuth2Endpoints:
        metadata = await self.metadata()
        return OAuth2Endpoints(
            authorization_endpoint=metadata["authorization_endpoint"],
            token_endpoint=metadata["token_endpoint"],
            revocation_endpoint=metadata.get("revocation_endpoint"),
        )

    async def authorization_url(self, start: LoginStart) -> str:
        if self._quirks.adapt_start is not None:
            start = self._quirks.adapt_start(start)
        return self._flow.authorization_url(
            await self._endpoints(), start, self._quirks.extra_authorize_params
        )

    async def complete_login(
        self, start: LoginStart, callback_params: Mapping[str, str]
    ) -> UpstreamLogin:
        metadata = await self.metadata()
        code = check_callback(
            callback_params,
            expected_issuer=self._issuer,
            iss_required=metadata.get("authorization_response_iss_parameter_supported") is True,
        )
        raw = await self._flow.exchange_code(await self._endpoints(), code, start)
        tokens = self._flow.tokens_from(raw)
        if not tokens.id_token:
            raise ProviderInvalidResponse("the token response has no id_token")
        claims = await self.validate_id_token(
            tokens.id_token, nonce=start.nonce, access_token=tokens.access_token
        )
        profile = await self._profile(claims, tokens, metadata, subject=str(claims["sub"]))
        return UpstreamLogin(profile=profile, tokens=tokens)

    async def _profile(
        self,
        claims: Mapping[str, Any],
        tokens: UpstreamTokens,
        metadata: Mapping[str, Any],
        *,
        subject: str,
    ) -> UpstreamProfile:
        """The profile from verified ID-token claims (may be empty) merged with UserInfo."""
        merged = dict(claims)
        if self._quirks.use_userinfo and metadata.get("userinfo_endpoint"):
            userinfo = await self.userinfo(tokens.access_token, expected_subject=subject)
            merged = {**userinfo, **{k: v for k, v in claims.items() if k not in userinfo}}
            # Identity claims always come from the verified ID token.
            for name in ("iss", "sub", "aud", "nonce", "tid", "oid"):
                if name in claims:
                    merged[name] = claims[name]
            # email and email_verified are one fact: an address from UserInfo is verified only
            # if UserInfo says so, never by the ID token's flag for another address.
            if "email" in userinfo and userinfo["email"] != claims.get("email"):
                merged["email_verified"] = userinfo.get("email_verified") is True
        if "sub" not in merged:
            raise ProviderInvalidResponse("the upstream offers no profile without a new ID token")
        to_profile = self._quirks.to_profile or standard_profile
        profile = to_profile(merged, self._issuer)
        if self._quirks.enrich is not None:
            profile = await self._quirks.enrich(profile, tokens)
        return profile

    @property
    def syncs_through_refresh(self) -> bool:
        return not self._quirks.use_userinfo

    async def fetch_profile(self, tokens: UpstreamTokens, *, subject: str) -> UpstreamProfile:
        """UserInfo with the access token, over the claims of a fresh ID token if there is one
        (pass one only straight from a refresh: a stored one may have expired)."""
        metadata = await self.metadata()
        claims: dict[str, Any] = {}
        if tokens.id_token:
            claims = await self.validate_id_token(tokens.id_token, nonce=None)
        profile = await self._profile(claims, tokens, metadata, subject=subject)
        if profile.subject != subject:
            raise ProviderInvalidResponse("the upstream profile belongs to another subject")
        return profile

    def _allowed_algorithms(self, metadata: Mapping[str, Any]) -> list[str]:
        advertised = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        allowed = [alg for alg in advertised if alg in ASYMMETRIC_ALGS]
        if not allowed:
            raise ProviderInvalidResponse("the upstream signs ID tokens with no accepted algorithm")
        return allowed

    async def validate_id_token(
        self, id_token: str, *, nonce: str | None, access_token: str | None = None
    ) -> dict[str, Any]:
        """OIDC Core §3.1.3.7: signature, iss, aud, azp, exp, iat, nonce, at_hash."""
        metadata = await self.metadata()
        algorithms = self._allowed_algorithms(metadata)
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(), algorithms=algorithms)
            except (InvalidKeyIdError, BadSignatureError):
                # The upstream may have rotated its keys: re-fetch the JWKS (at most once a minute).
                token = jwt.decode(
                    id_token, await self._key_set(refresh=True), algorithms=algorithms
                )
        except ProviderError:
            raise
        except (JoseError, ValueError, TypeError):
            raise ProviderInvalidResponse("the ID token signature is not valid") from None
        claims = token.claims
        now = int(self._clock.now().timestamp())
        options: dict[str, Any] = {
            "sub": {"essential": True},
            "aud": {"essential": True, "value": self._flow.client_id},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if self._quirks.check_issuer is None:
            options["iss"] = {"essential": True, "value": self._issuer}
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        try:
            # A fresh registry per call: nothing from one validation leaks into the next.
            jwt.JWTClaimsRegistry(now=now, leeway=CLOCK_LEEWAY, **options).validate(claims)
        except JoseError as exc:
            raise ProviderInvalidResponse(f"the ID token failed validation: {exc}") from None
        if isinstance(claims.get("iat"), int | float) and claims["iat"] > now + CLOCK_LEEWAY:
            raise ProviderInvalidResponse("the ID token was issued in the future")
        if self._quirks.check_issuer is not None:
            self._quirks.check_issuer(claims, str(metadata["issuer"]))
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self._flow.client_id:
            raise ProviderInvalidResponse("the ID token was issued to another party (azp)")
        if access_token and "at_hash" in claims:
            if claims["at_hash"] != at_hash(access_token, str(token.header.get("alg"))):
                raise ProviderInvalidResponse("the ID token at_hash does not match")
        return dict(claims)

    async def userinfo(self, access_token: str, *, expected_subject: str) -> dict[str, Any]:
        metadata = await self.metadata()
        # Signed or encrypted (application/jwt) UserInfo is not supported: it fails as non-JSON.
        claims = await self._get_json(
            metadata["userinfo_endpoint"], "userinfo", bearer=access_token
        )
        # OIDC Core §5.3.2: the UserInfo sub must equal the ID token's sub.
        if claims.get("sub") != expected_subject:
            raise ProviderInvalidResponse("userinfo sub does not match the ID token sub")
        return claims

    async def refresh(self, refresh_token: str) -> UpstreamTokens:
        raw = await self._flow.refresh(await self._endpoints(), refresh_token)
        tokens = self._flow.tokens_from(raw, previous_refresh=refresh_token)
        if tokens.id_token:
            # OIDC Core §12.2: a refreshed ID token must still be ours (no nonce on refresh).
            await self.validate_id_token(tokens.id_token, nonce=None)
        return tokens

    async def aclose(self) -> None:
        await self._flow.aclose()

    async def revoke(self, *, access_token: str | None, refresh_token: str | None) -> None:
        # RFC 7009 §2.1: revoking the refresh token revokes the grant (and its access tokens).
        token = refresh_token or access_token
        if token:
            await self._flow.revoke(await self._endpoints(), token)
