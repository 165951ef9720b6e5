"""Reading a dashboard page's query string: its known filters, and the notice after a form."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from starlette.requests import Request

from broker.admin.dashboard.rendering import NOTICES

MAX_FILTER_LENGTH = 400


def filters_of(request: Request, names: Iterable[str]) -> dict[str, str]:
    """The named parameters that have a value (trimmed); any other parameter is ignored."""
    found = {}
    for name in names:
        value = request.query_params.get(name, "").strip()[:MAX_FILTER_LENGTH]
        if value:
            found[name] = value
    return found


def notice_of(request: Request) -> str | None:
    """The fixed text a redirect after a form named with ``done=`` (never text from the URL)."""
    return NOTICES.get(request.query_params.get("done", ""))


def uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
