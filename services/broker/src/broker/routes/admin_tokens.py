"""``/admin/oauth2/tokens``: list sessions and upstream links, revoke either (queries:
``broker.admin.tokens``)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.tokens import revoke_token, tokens_listing
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, NotFound


async def list_tokens(request: Request) -> Response:
    await authenticated_admin(request)
    body = await tokens_listing(runtime_of(request), request.query_params)
    return JSONResponse(body, headers=NO_STORE)


async def delete_token(request: Request) -> Response:
    admin = await authenticated_admin(request)
    try:
        token_id = uuid.UUID(request.path_params["token_id"])
    except ValueError:
        raise NotFound("no such session or upstream link") from None
    body = await revoke_token(runtime_of(request), admin.user_id, token_id)
    return JSONResponse(body, headers=NO_STORE)
