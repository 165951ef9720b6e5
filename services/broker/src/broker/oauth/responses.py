"""Authorization responses to the client (RFC 6749 §4.1.2): a query redirect or a form_post page.

Only called once the client and its redirect URI are validated. ``form_post`` (OAuth 2.0 Form
Post Response Mode) answers with a page that POSTs the parameters to the redirect URI; its CSP
allows exactly that one inline script and a form action to the client's origin.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from html import escape
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse, RedirectResponse, Response

from broker.http.errors import OAuthError
from broker.oauth.authorization import redirect_with

_SUBMIT_SCRIPT = "document.forms[0].submit();"
_SUBMIT_HASH = base64.b64encode(hashlib.sha256(_SUBMIT_SCRIPT.encode()).digest()).decode()


def _form_post(redirect_uri: str, params: Mapping[str, str]) -> Response:
    parts = urlsplit(redirect_uri)
    origin = f"{parts.scheme}://{parts.netloc}"
    fields = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in params.items()
    )
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signing in…</title>'
        f'</head><body><form method="post" action="{escape(redirect_uri)}">{fields}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        f"<script>{_SUBMIT_SCRIPT}</script></body></html>"
    )
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'sha256-{_SUBMIT_HASH}'; form-action {origin}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(document, headers=headers)


def authorization_response(
    redirect_uri: str, params: Mapping[str, str | None], response_mode: str | None
) -> Response:
    present = {name: value for name, value in params.items() if value is not None}
    if response_mode == "form_post":
        return _form_post(redirect_uri, present)
    return RedirectResponse(redirect_with(redirect_uri, present), status_code=302)


def _error_params(issuer: str, error: OAuthError, state: str | None) -> dict[str, str | None]:
    return {
        "error": error.error,
        "error_description": error.description,
        "state": state,
        "iss": issuer,
    }


def client_error_location(
    issuer: str, redirect_uri: str, error: OAuthError, state: str | None
) -> str:
    """The query-mode error redirect as a URL, for a page's "return to the application" link."""
    params = _error_params(issuer, error, state)
    return redirect_with(redirect_uri, {k: v for k, v in params.items() if v is not None})


def error_response(
    issuer: str,
    redirect_uri: str,
    error: OAuthError,
    state: str | None,
    response_mode: str | None,
) -> Response:
    """An authorization error back to the client, with ``state`` and ``iss`` (RFC 9207)."""
    return authorization_response(redirect_uri, _error_params(issuer, error, state), response_mode)
