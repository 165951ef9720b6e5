"""The dashboard's built-in client: a public client of the broker itself, never configured.

``broker-admin`` is a public client (PKCE S256 mandatory, as for every public client) whose one
redirect URI is exactly ``{issuer}/admin/callback``. ``/authorize`` knows it through
``builtin_client``, which ``broker.oauth.authorization.validate_client`` consults after the
configured clients: so the provider chooser, the dev login and every upstream provider work for the
dashboard exactly as for any relying party, and the front-channel checks (exact redirect URI,
PKCE, ``state``, ``iss``) apply to it unchanged.

Its codes are redeemed in-process by ``/admin/callback`` (``broker.oauth.grants.code_grant``
called with this client). ``/token`` does not know it: client authentication looks up configured
clients only, so a dashboard code cannot be redeemed over HTTP, even with its verifier. A
configured client that takes the reserved id is a startup error (``check_reserved_id``).
"""

from __future__ import annotations

from shared.config_file import ConfigError
from shared.settings import ClientConfig, Settings

DASHBOARD_CLIENT_ID = "broker-admin"
SCOPE = "openid email profile admin"


def callback_url(settings: Settings) -> str:
    return f"{settings.issuer}/admin/callback"


def dashboard_client(settings: Settings) -> ClientConfig:
    """The built-in client for this issuer."""
    return ClientConfig(
        id=DASHBOARD_CLIENT_ID,
        name="Broker admin dashboard",
        redirect_uris=(callback_url(settings),),
        scopes=tuple(SCOPE.split()),
    )


def builtin_client(settings: Settings, client_id: str) -> ClientConfig | None:
    """The built-in client when ``client_id`` names it (``/authorize`` only; see the module)."""
    return dashboard_client(settings) if client_id == DASHBOARD_CLIENT_ID else None


def check_reserved_id(settings: Settings) -> None:
    """Refuse, at startup, a configured client that would shadow the built-in one."""
    if settings.client(DASHBOARD_CLIENT_ID) is not None:
        raise ConfigError(
            f"clients: the id {DASHBOARD_CLIENT_ID!r} is reserved for the built-in admin "
            "dashboard; give this client another id"
        )
