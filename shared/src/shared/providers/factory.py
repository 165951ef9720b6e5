"""Builds the provider map from settings: one explicit ``{type: builder}`` table, no registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from opentelemetry.trace import Tracer

from shared.clock import Clock
from shared.crypto.keyring import Keyring
from shared.providers.base import Provider
from shared.providers.dev import DevProvider
from shared.providers.github import GitHubProvider
from shared.providers.google import build_google_provider
from shared.providers.microsoft import build_microsoft_provider
from shared.providers.oauth2 import OAuth2Credentials, OAuth2Flow
from shared.providers.oidc import OIDCProvider
from shared.settings import (
    DevProviderConfig,
    GitHubProviderConfig,
    GoogleProviderConfig,
    MicrosoftProviderConfig,
    OIDCProviderConfig,
    Settings,
)


@dataclass(frozen=True)
class ProviderDeps:
    """What a builder may use; all constructed without I/O."""

    settings: Settings
    http: httpx2.AsyncClient
    clock: Clock
    keyring: Keyring
    # Spans for the upstream calls when tracing is on (the token endpoints' included).
    tracer: Tracer | None = None


def build_oidc(config: Any, deps: ProviderDeps) -> Provider:
    assert isinstance(config, OIDCProviderConfig)
    flow = OAuth2Flow(
        OAuth2Credentials(
            client_id=config.client_id,
            client_secret=(
                config.client_secret.get_secret_value() if config.client_secret else None
            ),
            auth_method=config.auth_method,
        ),
        scopes=config.scopes,
        clock=deps.clock,
        timeout=config.timeout,
        tracer=deps.tracer,
    )
    return OIDCProvider(
        provider_id=config.id,
        provider_type="oidc",
        display_name=config.title,
        issuer=config.issuer,
        flow=flow,
        http=deps.http,
        clock=deps.clock,
        discovery_ttl=config.discovery_ttl,
    )


def build_google(config: Any, deps: ProviderDeps) -> Provider:
    assert isinstance(config, GoogleProviderConfig)
    return build_google_provider(config, http=deps.http, clock=deps.clock, tracer=deps.tracer)


def build_github(config: Any, deps: ProviderDeps) -> Provider:
    assert isinstance(config, GitHubProviderConfig)
    return GitHubProvider(config, http=deps.http, clock=deps.clock, tracer=deps.tracer)


def build_microsoft(config: Any, deps: ProviderDeps) -> Provider:
    assert isinstance(config, MicrosoftProviderConfig)
    return build_microsoft_provider(config, http=deps.http, clock=deps.clock, tracer=deps.tracer)


def build_dev(config: Any, deps: ProviderDeps) -> Provider:
    assert isinstance(config, DevProviderConfig)
    return DevProvider(
        provider_id=config.id,
        display_name=config.title,
        issuer=deps.settings.issuer,
        keyring=deps.keyring,
        clock=deps.clock,
    )


BUILDERS: Mapping[str, Callable[[Any, ProviderDeps], Provider]] = {
    "oidc": build_oidc,
    "google": build_google,
    "github": build_github,
    "microsoft": build_microsoft,
    "dev": build_dev,
}


def build_providers(deps: ProviderDeps) -> dict[str, Provider]:
    """Every enabled provider of the settings, by id."""
    return {
        config.id: BUILDERS[config.type](config, deps)
        for config in deps.settings.providers
        if not config.disabled
    }
