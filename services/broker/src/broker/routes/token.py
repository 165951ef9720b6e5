"""``POST /token`` (RFC 6749 §3.2) and ``POST /auth/oauth2/refresh`` (JSON; same refresh path)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from broker.clients import authenticate_client
from broker.errors import NO_STORE, InvalidRequest, UnsupportedGrantType
from broker.forms import form_params, json_params
from broker.grants import GRANTS, refresh_grant
from broker.routes.context import request_meta, runtime_of


def _token_json(payload: dict[str, Any]) -> Response:
    # orjson: the refresh grant is CPU-bound and this is its third JSON document per request.
    return Response(orjson.dumps(payload), media_type="application/json", headers=NO_STORE)


async def token(request: Request) -> Response:
    runtime = runtime_of(request)
    params = await form_params(request)
    client = authenticate_client(runtime.settings, request.headers.get("authorization"), params)
    grant_type = params.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required")
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise UnsupportedGrantType("supported: authorization_code, refresh_token")
    return _token_json(await handler(runtime, client, params, request_meta(request)))


async def refresh(request: Request) -> Response:
    """The first-party JSON form of the refresh grant."""
    runtime = runtime_of(request)
    document = await json_params(request)
    client = authenticate_client(runtime.settings, request.headers.get("authorization"), document)
    return _token_json(await refresh_grant(runtime, client, document, request_meta(request)))
