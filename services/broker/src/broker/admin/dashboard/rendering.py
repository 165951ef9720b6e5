"""Rendering the dashboard's pages: Jinja2 templates with autoescape, sent with the page headers.

Every value reaches the HTML through Jinja2's autoescape (no template marks anything safe), and
every page carries ``broker.http.pages.PAGE_HEADERS``: a CSP without any script source, framing
refused, no referrer, ``no-store`` (docs/security.md "Page headers and escaping"). The chart is
inline SVG built on the
server, so no page needs JavaScript.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from shared.settings import Settings
from starlette.responses import HTMLResponse

from broker.http.pages import PAGE_HEADERS

# The notices a redirect after a form may ask for, by key: never text taken from the URL.
NOTICES = {
    "revoked": "Revoked. Its tokens stop working at once.",
    "already_revoked": "It was revoked already; nothing changed.",
    "disabled": "The user is disabled and their sessions are revoked.",
    "enabled": "The user is enabled again.",
    "unchanged": "Nothing changed: the user already had that status.",
    "provider_disabled": "The provider is disabled: sign-ins through it are refused now.",
    "provider_disabled_sessions": (
        "The provider is disabled and every session signed in through it is revoked."
    ),
    "provider_enabled": "The provider is enabled: people can sign in through it again.",
    "provider_default": "The provider follows the configuration again.",
    "provider_unchanged": "Nothing changed: the provider was already in that state.",
}


def when(value: str | None) -> str:
    """An RFC 3339 instant from the API as ``2026-12-01 21:03:04 UTC`` (the API's are UTC)."""
    if not value:
        return "—"
    return f"{value[:19].replace('T', ' ')} UTC"


class Pages:
    """The dashboard's template set for one issuer (built once, when the routes are)."""

    def __init__(self, settings: Settings) -> None:
        self.environment = Environment(
            loader=PackageLoader("broker.admin.dashboard", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.filters["when"] = when
        self.globals: dict[str, Any] = {
            "base": f"{settings.issuer}/admin",
            "providers": [provider.id for provider in settings.providers if not provider.disabled],
        }

    def render(
        self, template: str, context: Mapping[str, Any], *, status_code: int = 200
    ) -> HTMLResponse:
        values = {
            "admin": None,
            "csrf": None,
            "section": None,
            "notice": None,
            "error": None,
            **self.globals,
            **context,
        }
        html = self.environment.get_template(template).render(values)
        return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)

    def message(self, title: str, text: str, *, status_code: int, **context: Any) -> HTMLResponse:
        """A page that only says something: refusals, errors, signed out."""
        return self.render(
            "message.html", {"title": title, "text": text, **context}, status_code=status_code
        )

    def forbidden(self, text: str) -> HTMLResponse:
        return self.message("Not allowed", text, status_code=403)
