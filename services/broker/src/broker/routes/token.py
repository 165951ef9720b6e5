"""``POST /token`` (RFC 6749 §3.2) and ``POST /auth/oauth2/refresh`` (JSON; same refresh path)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from broker.authorization import single_params
from broker.clients import authenticate_client
from broker.errors import NO_STORE, InvalidRequest, UnsupportedGrantType
from broker.grants import GRANTS, refresh_grant
from broker.routes.context import request_meta, runtime_of

MAX_BODY = 16 * 1024


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidRequest("the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    return single_params(pairs)


def _token_json(payload: dict[str, Any]) -> Response:
    # orjson: the refresh grant is CPU-bound and this is its third JSON document per request.
    return Response(orjson.dumps(payload), media_type="application/json", headers=NO_STORE)


async def token(request: Request) -> Response:
    runtime = runtime_of(request)
    params = await _form(request)
    client = authenticate_client(runtime.settings, request.headers.get("authorization"), params)
    grant_type = params.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required")
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise UnsupportedGrantType("supported: authorization_code, refresh_token")
    return _token_json(await handler(runtime, client, params, request_meta(request)))


def _is_utf8(value: str) -> bool:
    """JSON may carry lone surrogates (``"\\ud800"``), which no UTF-8 consumer accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def refresh(request: Request) -> Response:
    """The first-party JSON form of the refresh grant."""
    runtime = runtime_of(request)
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidRequest("the request body is too large")
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(document, dict) or not all(
        isinstance(value, str) and _is_utf8(value) for value in document.values()
    ):
        raise InvalidRequest("the body must be a JSON object of strings")
    client = authenticate_client(runtime.settings, request.headers.get("authorization"), document)
    return _token_json(await refresh_grant(runtime, client, document, request_meta(request)))
