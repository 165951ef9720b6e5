"""Google: OpenID Connect with discovery, plus what Google does its own way.

* Offline access is ``access_type=offline`` (Google ignores the ``offline_access`` scope). Google
  issues a refresh token only on a consent screen and keeps at most 100 per account and client,
  silently dropping the oldest, so the broker does not force ``prompt=consent`` on every sign-in:
  it asks again with ``prompt=consent`` only when a login yields no refresh token while the
  broker holds no usable one for that link (``reprompts_for_refresh_token``).
* Google has no ``prompt=login``; a relying party's ``prompt=login`` becomes ``max_age=0``.
* ID tokens carry ``iss`` as ``https://accounts.google.com`` or ``accounts.google.com``.
* ``email_verified`` comes from the ID token, but Google is the authority for an address only
  for ``@gmail.com`` or a Workspace account (``hd``) — docs/security.md "Google hosted domains".
  ``allowed_domains`` is
  checked against ``hd``, never against the email's suffix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2
from opentelemetry.trace import Tracer

from shared.clock import Clock
from shared.providers.base import LoginStart, UpstreamProfile
from shared.providers.errors import ProviderDenied, ProviderInvalidResponse
from shared.providers.oauth2 import OAuth2Credentials, OAuth2Flow
from shared.providers.oidc import OIDCProvider, OIDCQuirks, standard_profile, text_claim
from shared.settings import GoogleProviderConfig

GOOGLE_PROMPTS = ("none", "consent", "select_account")


def accepted_issuers(issuer: str) -> tuple[str, str]:
    """``https://accounts.google.com`` and its scheme-less form ``accounts.google.com``."""
    return issuer, urlsplit(issuer).netloc


def google_start(start: LoginStart) -> LoginStart:
    """Keep the prompts Google knows; ``login`` asks for a fresh sign-in through ``max_age``."""
    if not start.prompt:
        return start
    values = start.prompt.split()
    kept = " ".join(value for value in values if value in GOOGLE_PROMPTS) or None
    max_age = 0 if "login" in values else start.max_age
    return dataclasses.replace(start, prompt=kept, max_age=max_age)


def google_profile(
    claims: Mapping[str, Any], issuer: str, allowed_domains: tuple[str, ...]
) -> UpstreamProfile:
    hosted_domain = text_claim(claims.get("hd"))
    if allowed_domains and (hosted_domain or "").lower() not in allowed_domains:
        raise ProviderDenied("access_denied", "the Google account is not in an allowed domain")
    profile = standard_profile(claims, issuer)
    email = (profile.email or "").lower()
    authoritative = profile.email_verified and (
        email.endswith("@gmail.com") or hosted_domain is not None
    )
    return dataclasses.replace(profile, email_authoritative=authoritative)


def build_google_provider(
    config: GoogleProviderConfig,
    *,
    http: httpx2.AsyncClient,
    clock: Clock,
    tracer: Tracer | None = None,
) -> OIDCProvider:
    issuers = accepted_issuers(config.issuer)

    def check_issuer(claims: Mapping[str, Any], metadata_issuer: str) -> None:
        if claims.get("iss") not in issuers:
            raise ProviderInvalidResponse("the ID token was issued by another issuer")

    extra: dict[str, str] = {}
    if config.offline_access:
        extra["access_type"] = "offline"
    if len(config.allowed_domains) == 1:
        extra["hd"] = config.allowed_domains[0]  # a hint for the account chooser, checked later
    assert config.client_secret is not None
    flow = OAuth2Flow(
        OAuth2Credentials(
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            auth_method=config.auth_method,
        ),
        scopes=config.scopes,
        clock=clock,
        timeout=config.timeout,
        tracer=tracer,
    )
    return OIDCProvider(
        provider_id=config.id,
        provider_type="google",
        display_name=config.title,
        issuer=config.issuer,
        flow=flow,
        http=http,
        clock=clock,
        discovery_ttl=config.discovery_ttl,
        quirks=OIDCQuirks(
            extra_authorize_params=extra,
            adapt_start=google_start,
            check_issuer=check_issuer,
            to_profile=lambda claims, issuer: google_profile(
                claims, issuer, config.allowed_domains
            ),
            reprompts_for_refresh_token=config.offline_access,
        ),
    )
