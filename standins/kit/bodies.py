"""Reading requests: form fields, JSON objects and the client credentials of a token request."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import FormData
from starlette.requests import Request


def form_value(form: FormData, name: str) -> str | None:
    """A text form field, or None when it is absent, empty or a file."""
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def form_fields(form: FormData) -> dict[str, str]:
    """Every text field of ``form`` (for request logs)."""
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def json_object(request: Request) -> dict[str, Any] | None:
    """The request body parsed as a JSON object, or None."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def non_negative_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number (not a boolean) that is zero or more."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def authorization_scheme(request: Request) -> str | None:
    """The scheme of the ``Authorization`` header (``Basic``, ``Bearer``...), for request logs."""
    authorization = request.headers.get("authorization")
    return authorization.split(" ", 1)[0] if authorization else None


@dataclass(frozen=True)
class PresentedClient:
    """The client credentials a request carries (RFC 6749 §2.3.1), not yet checked.

    ``basic`` is the form-urldecoded id and secret of an ``Authorization: Basic`` header (None
    without one; ``("", "")`` when it cannot be decoded), ``basic_malformed`` says it could not
    be decoded or had no colon; ``posted_id``/``posted_secret`` are the form fields.
    """

    basic: tuple[str, str] | None
    basic_malformed: bool
    posted_id: str | None
    posted_secret: str | None


def basic_credentials(request: Request) -> tuple[tuple[str, str], bool] | None:
    """The form-urldecoded id and secret of an ``Authorization: Basic`` header, and whether it
    was malformed (not base64 of UTF-8, or no colon: then ``("", "")`` or the id alone); None
    without such a header."""
    authorization = request.headers.get("authorization", "")
    if authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ("", ""), True
    raw_id, separator, raw_secret = decoded.partition(":")
    return (unquote_plus(raw_id), unquote_plus(raw_secret)), not separator


def presented_client(request: Request, form: FormData) -> PresentedClient:
    """Read the client credentials of ``request`` from its Basic header and its form."""
    basic = basic_credentials(request)
    return PresentedClient(
        basic=basic[0] if basic else None,
        basic_malformed=basic[1] if basic else False,
        posted_id=form_value(form, "client_id"),
        posted_secret=form_value(form, "client_secret"),
    )


def same_secret(presented: str, expected: str) -> bool:
    """Compare two credentials in constant time."""
    return secrets.compare_digest(presented.encode(), expected.encode())
