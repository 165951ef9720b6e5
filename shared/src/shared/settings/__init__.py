"""The typed settings: built once at startup from the environment and the YAML file.

``load_settings(environ)`` is the only place that reads the environment or the config file. Tests
build settings with ``make_settings(**overrides)``. Invalid configuration raises ``ConfigError``
with a message that names the offending setting, so startup fails before the first request.

Modules: ``base`` (the strict model, URL checks), ``providers`` (one schema per provider type),
``clients`` (relying parties), ``deployment`` (the ``Settings`` model and its cross-checks),
``loading`` (the environment map, ``load_settings``, ``make_settings``). This package re-exports
what the rest of the code uses, so it imports ``from shared.settings import ...``.
"""

from shared.config_file import ConfigError
from shared.settings.base import is_loopback_host, is_loopback_url
from shared.settings.clients import ClientConfig
from shared.settings.deployment import ReuseResponse, Settings
from shared.settings.loading import load_settings, make_settings
from shared.settings.providers import (
    DevProviderConfig,
    GitHubProviderConfig,
    GoogleProviderConfig,
    MicrosoftProviderConfig,
    OIDCProviderConfig,
    ProviderConfig,
)

__all__ = [
    "ClientConfig",
    "ConfigError",
    "DevProviderConfig",
    "GitHubProviderConfig",
    "GoogleProviderConfig",
    "MicrosoftProviderConfig",
    "OIDCProviderConfig",
    "ProviderConfig",
    "ReuseResponse",
    "Settings",
    "is_loopback_host",
    "is_loopback_url",
    "load_settings",
    "make_settings",
]
