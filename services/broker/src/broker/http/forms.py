"""Request parameters and bodies: each parameter once; form-encoded bodies, or JSON objects.

RFC 6749 §3.2 (and RFC 7009 §2.1, RFC 7662 §2.1): form-encoded, UTF-8, each parameter once.
No size check here: every body reaches a handler already capped (``broker.http.body_limit``,
docs/security.md "Body limits"). Bad input is ``InvalidRequest``, never another exception
(docs/security.md "Request input is parsed into a 4xx").
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from broker.http.errors import InvalidRequest

MAX_PARAM_LENGTH = 2048


def single_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 §3.1: parameters must not be repeated; over-long values are refused."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise InvalidRequest(f"parameter {name} is repeated")
        if len(value) > MAX_PARAM_LENGTH:
            raise InvalidRequest(f"parameter {name} is too long")
        params[name] = value
    return params


def decimal(value: str) -> int | None:
    """A parameter that must be a non-negative whole number: its value, None if it is not one.

    Only ASCII digits: ``str.isdigit()`` is also true for "²" (which ``int()`` refuses) and
    Arabic-Indic digits (which it reads), and ``int()`` refuses more than 4,300 digits (a
    ``ValueError``, a 500 if it escaped).
    """
    if not value.isascii() or not value.isdigit():
        return None
    try:
        return int(value)
    except ValueError:  # over sys.get_int_max_str_digits(): larger than any limit anyway
        return None


async def form_params(request: Request) -> dict[str, str]:
    """The form body's parameters; ``InvalidRequest`` for another type or a repetition."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    body = await request.body()
    try:
        # errors="strict": a percent-escape that decodes to bytes other than UTF-8 is refused,
        # not turned into U+FFFD (RFC 6749 Appendix B: names and values are UTF-8).
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    return single_params(pairs)


def is_utf8(value: str) -> bool:
    """JSON may carry lone surrogates (``"\\ud800"``), which no UTF-8 consumer accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def json_params(request: Request, *, empty_ok: bool = True) -> dict[str, str]:
    """A JSON object of strings (the first-party API); ``{}`` for an empty body if allowed."""
    document = await json_object(request, empty_ok=empty_ok)
    if not all(isinstance(value, str) and is_utf8(value) for value in document.values()):
        raise InvalidRequest("the body must be a JSON object of strings")
    return document


def _each_name_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Like form parameters, each name once: json.loads would keep the last of a repeated name,
    where another parser in front of the broker may have read the first (RFC 8259 §4)."""
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise InvalidRequest(f"field {name} is repeated")
        document[name] = value
    return document


async def json_object(request: Request, *, empty_ok: bool = True) -> dict[str, Any]:
    """A JSON object (any values: the caller checks the fields it knows)."""
    body = await request.body()
    if not body.strip():
        if empty_ok:
            return {}
        raise InvalidRequest("the body must be a JSON object")
    try:
        # RFC 8259 §8.1: UTF-8 (json.loads alone would also guess UTF-16 and UTF-32), a BOM
        # ignored as before.
        document: Any = json.loads(body.decode("utf-8-sig"), object_pairs_hook=_each_name_once)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    return document
