"""Microsoft Entra ID (identity platform v2.0): OpenID Connect with a tenant in every URL.

* Discovery is ``{authority}/{tenant}/v2.0/.well-known/openid-configuration``.
* For the multi-tenant endpoints (``common``, ``organizations``) the discovery ``issuer`` is a
  template, ``{authority}/{tenantid}/v2.0``; each ID token is checked against its *own* ``tid``:
  ``iss`` must be exactly ``{authority}/{tid}/v2.0`` (a literal ``{tenantid}``, a v1 issuer or
  another tenant is refused), and ``tid`` must be on ``allowed_tenants`` when that is set. For
  ``consumers`` or a single tenant the discovery issuer names one tenant and ``tid`` must be it.
  Issuer validation is never skipped (docs/security.md "Microsoft tenants and nOAuth").
* The identity is ``tid:oid`` (the user's object id within its tenant), not ``sub`` or email.
* ``email`` is not proof of ownership (any tenant admin can set it: the "nOAuth" takeover); it
  counts as verified only with the ``xms_edov`` optional claim set to true.
* The ID token holds every claim the broker needs, so UserInfo is not called; the photo comes
  from Microsoft Graph ``/me/photo/$value`` with the user's token and the broker serves it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import httpx2
from opentelemetry.trace import Tracer

from shared.avatars import AvatarUnavailable, fetch_bearer_image
from shared.clock import Clock
from shared.providers.base import UpstreamProfile, UpstreamTokens
from shared.providers.errors import ProviderDenied, ProviderInvalidResponse
from shared.providers.oauth2 import OAuth2Credentials, OAuth2Flow
from shared.providers.oidc import OIDCProvider, OIDCQuirks, text_claim
from shared.settings import MicrosoftProviderConfig

TENANT_TEMPLATE = "{tenantid}"
MULTI_TENANT = ("common", "organizations")
# The tenant of personal Microsoft accounts: the `consumers` endpoint's issuer names it.
CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_guid(value: object) -> bool:
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


class MicrosoftIssuer:
    """Which issuers the configured tenant admits, for discovery and for each ID token."""

    def __init__(self, authority: str, tenant: str, allowed_tenants: tuple[str, ...]) -> None:
        self._authority = authority
        self._tenant = tenant.lower()
        self._allowed = frozenset(allowed_tenants)

    def issuer_for(self, tenant_id: str) -> str:
        return f"{self._authority}/{tenant_id}/v2.0"

    def _tenant_in(self, advertised: str) -> str | None:
        prefix, suffix = f"{self._authority}/", "/v2.0"
        if not (advertised.startswith(prefix) and advertised.endswith(suffix)):
            return None
        return advertised[len(prefix) : -len(suffix)]

    def metadata_issuer_ok(self, advertised: str) -> bool:
        tenant = self._tenant_in(advertised)
        if tenant is None:
            return False
        if self._tenant in MULTI_TENANT:
            return tenant == TENANT_TEMPLATE
        if self._tenant == "consumers":
            return tenant == CONSUMERS_TENANT
        if is_guid(self._tenant):
            return tenant == self._tenant
        # A tenant named by one of its domains: its discovery names the tenant's id.
        return is_guid(tenant)

    def check_token(self, claims: Mapping[str, Any], metadata_issuer: str) -> None:
        tid = claims.get("tid")
        if not is_guid(tid):
            raise ProviderInvalidResponse("the ID token has no valid tid")
        assert isinstance(tid, str)
        if claims.get("iss") != self.issuer_for(tid):
            raise ProviderInvalidResponse("the ID token iss does not match its tid")
        pinned = self._tenant_in(metadata_issuer)
        if pinned != TENANT_TEMPLATE and tid != pinned:
            raise ProviderInvalidResponse("the ID token is from another tenant")
        if self._allowed and tid not in self._allowed:
            raise ProviderDenied("access_denied", "the Microsoft tenant is not allowed")


def microsoft_profile(claims: Mapping[str, Any], issuer: str) -> UpstreamProfile:
    tid, oid = claims.get("tid"), claims.get("oid")
    if not is_guid(oid):
        raise ProviderInvalidResponse("the ID token has no valid oid (is the profile scope set?)")
    # nOAuth: `email` is an unverified attribute unless the token says the domain owner
    # verified it.
    verified = claims.get("xms_edov") is True
    return UpstreamProfile(
        subject=f"{tid}:{oid}",
        issuer=str(claims["iss"]),
        email=text_claim(claims.get("email")),
        email_verified=verified,
        email_authoritative=verified,
        name=text_claim(claims.get("name")),
        given_name=text_claim(claims.get("given_name")),
        family_name=text_claim(claims.get("family_name")),
        preferred_username=text_claim(claims.get("preferred_username")),
        claims=dict(claims),
    )


def build_microsoft_provider(
    config: MicrosoftProviderConfig,
    *,
    http: httpx2.AsyncClient,
    clock: Clock,
    tracer: Tracer | None = None,
) -> OIDCProvider:
    issuers = MicrosoftIssuer(config.authority, config.tenant, config.allowed_tenants)
    photo_url = f"{config.graph_url}/v1.0/me/photo/$value"

    async def with_photo(profile: UpstreamProfile, tokens: UpstreamTokens) -> UpstreamProfile:
        try:
            avatar = await fetch_bearer_image(http, photo_url, tokens.access_token)
        except AvatarUnavailable:
            return dataclasses.replace(profile, avatar_unavailable=True)
        return dataclasses.replace(profile, avatar=avatar) if avatar else profile

    assert config.client_secret is not None
    flow = OAuth2Flow(
        OAuth2Credentials(
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            auth_method=config.token_endpoint_auth_method or "client_secret_post",
        ),
        scopes=config.scopes,
        clock=clock,
        timeout=config.timeout,
        tracer=tracer,
    )
    tenant_path = f"{config.authority}/{config.tenant}/v2.0"
    return OIDCProvider(
        provider_id=config.id,
        provider_type="microsoft",
        display_name=config.title,
        issuer=tenant_path,
        discovery_url=f"{tenant_path}/.well-known/openid-configuration",
        flow=flow,
        http=http,
        clock=clock,
        discovery_ttl=config.discovery_ttl,
        quirks=OIDCQuirks(
            check_metadata_issuer=issuers.metadata_issuer_ok,
            check_issuer=issuers.check_token,
            to_profile=microsoft_profile,
            use_userinfo=False,
            enrich=with_photo,
        ),
    )
