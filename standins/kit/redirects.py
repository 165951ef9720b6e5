"""Answering an authorization request: checking the redirect URI and redirecting back to it."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.responses import RedirectResponse


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL without a fragment."""
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment


def with_query(uri: str, params: Mapping[str, str]) -> str:
    """``uri`` with ``params`` added to its query string (its own parameters kept)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def redirect(
    uri: str, params: Mapping[str, str], *, headers: Mapping[str, str] | None = None
) -> RedirectResponse:
    """302-redirect to ``uri`` with ``params`` added to its query string."""
    return RedirectResponse(with_query(uri, params), status_code=302, headers=headers)
