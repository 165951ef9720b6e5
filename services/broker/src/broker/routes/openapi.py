"""``GET /openapi.json``: the OpenAPI 3.1 document of every JSON endpoint, built once at startup.

Each route module that answers JSON declares its operations (``CONTRACT``, in the vocabulary of
``broker.http.openapi``); this module gathers them and names every other route of the table
with the reason it is left out (:data:`EXCLUDED`): browser navigations answer HTML pages and
redirects, not a JSON contract. ``tests/unit/test_openapi.py`` holds the two lists against the
route table: every route is in exactly one of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import version
from typing import Any

from shared.settings import Settings
from starlette.responses import Response

from broker.http.openapi import (
    ADMIN_SCOPE,
    Contract,
    Operation,
    Schema,
    json_answer,
    openapi_document,
)
from broker.routes import (
    accounts,
    admin_audit,
    admin_clients,
    admin_providers,
    admin_stats,
    admin_tokens,
    admin_users,
    avatars,
    discovery,
    health,
    introspection,
    profile_sync,
    revocation,
    token,
    userinfo,
)
from broker.routes.discovery import PrebuiltResponse

_BROWSER = "a browser navigation: answers HTML pages and redirects, not JSON"
_DASHBOARD = "the admin dashboard: server-rendered HTML pages and CSRF-protected forms"
# Route paths of the table that the document leaves out, and why (all their methods).
EXCLUDED: Mapping[str, str] = {
    "/authorize": f"{_BROWSER} (errors go to the client's redirect URI or an HTML page)",
    "/logout": f"{_BROWSER} (a confirmation page or a redirect)",
    "/auth/oauth2/{provider}/login": f"{_BROWSER} (/authorize with the provider chosen)",
    "/auth/oauth2/{provider}/callback": f"{_BROWSER} (the upstream's redirect target)",
    "/auth/oauth2/{provider}/dev-login": f"{_BROWSER} (the dev provider's form)",
    "/auth/oauth2/{provider}/link": f"{_BROWSER} (the link flow, from the signed-in browser)",
    "/admin": _DASHBOARD,
    "/admin/login": _DASHBOARD,
    "/admin/callback": _DASHBOARD,
    "/admin/logout": _DASHBOARD,
    "/admin/users": _DASHBOARD,
    "/admin/users/{user_id}": _DASHBOARD,
    "/admin/users/{user_id}/status": _DASHBOARD,
    "/admin/tokens": _DASHBOARD,
    "/admin/tokens/{token_id}/revoke": _DASHBOARD,
    "/admin/providers": _DASHBOARD,
    "/admin/providers/{provider_id}": _DASHBOARD,
    "/admin/providers/{provider_id}/disable": _DASHBOARD,
    "/admin/providers/{provider_id}/state": _DASHBOARD,
    "/admin/audit": _DASHBOARD,
    "/admin/audit/export": _DASHBOARD,
}

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/openapi.json",
            "openapi",
            "This document",
            "Operations",
            answers=(json_answer(200, "the OpenAPI 3.1 document", {"type": "object"}),),
            reads_database=False,
        ),
    ),
)

CONTRACTS: tuple[Contract, ...] = (
    discovery.CONTRACT,
    token.CONTRACT,
    userinfo.CONTRACT,
    revocation.CONTRACT,
    introspection.CONTRACT,
    accounts.CONTRACT,
    profile_sync.CONTRACT,
    avatars.CONTRACT,
    admin_users.CONTRACT,
    admin_tokens.CONTRACT,
    admin_providers.CONTRACT,
    admin_stats.CONTRACT,
    admin_audit.CONTRACT,
    admin_clients.CONTRACT,
    health.CONTRACT,
    CONTRACT,
)

TAGS = (
    {"name": "OpenID Connect", "description": "discovery, keys and the user's claims"},
    {"name": "OAuth 2.0", "description": "token, revocation (RFC 7009), introspection (RFC 7662)"},
    {"name": "First-party API", "description": "the signed-in user's account: /auth/oauth2/*"},
    {"name": "Admin API", "description": "needs an access token with the admin scope"},
    {"name": "Operations", "description": "probes, metrics and this document"},
)

_DESCRIPTION = """\
The JSON endpoints of the OIDC identity broker. Errors are `{"error", "error_description"}` with
the RFC code and status; a method a path does not answer is 405 `method_not_allowed` (with
`Allow`), an unknown path 404 `not_found`. Client authentication on /token, /revoke,
/introspect and /auth/oauth2/refresh is HTTP Basic (`client_secret_basic`) or `client_id` and
`client_secret` in the body (`client_secret_post`); public clients send only `client_id`.

Left out of this document (browser routes, which answer HTML pages and redirects):
"""


def _description(excluded: Mapping[str, str]) -> str:
    return _DESCRIPTION + "".join(f"\n- `{path}`: {why}" for path, why in excluded.items())


def _scopes(discovery_document: Mapping[str, Any]) -> dict[str, str]:
    scopes = {name: f"the {name} scope" for name in discovery_document["scopes_supported"]}
    scopes[ADMIN_SCOPE] = "the admin API, for a user who is an admin (not advertised)"
    return scopes


def build_document(settings: Settings, contracts: Iterable[Contract] = CONTRACTS) -> Schema:
    """The document for this deployment (its issuer is the server URL)."""
    return openapi_document(
        info={
            "title": "OIDC identity broker",
            "version": version("oidc-broker"),
            "description": _description(EXCLUDED),
        },
        issuer=settings.issuer,
        contracts=contracts,
        tags=TAGS,
        scopes=_scopes(discovery.discovery_document(settings, ())),
    )


def openapi_response(settings: Settings) -> PrebuiltResponse:
    """``GET /openapi.json``: serialised once, like the discovery document."""
    return PrebuiltResponse(
        Response(
            discovery.serialize(build_document(settings)),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=3600"},
        )
    )
