"""``/admin/oauth2/users``: list users, disable or enable one (queries: ``broker.admin.users``)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.users import set_user_status, users_listing
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, NotFound


def _user_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["user_id"])
    except ValueError:
        raise NotFound("no such user") from None


async def list_users(request: Request) -> Response:
    await authenticated_admin(request)
    body = await users_listing(runtime_of(request), request.query_params)
    return JSONResponse(body, headers=NO_STORE)


async def disable_user(request: Request) -> Response:
    return await _set_status(request, "disabled")


async def enable_user(request: Request) -> Response:
    return await _set_status(request, "active")


async def _set_status(request: Request, status: str) -> Response:
    admin = await authenticated_admin(request)
    body = await set_user_status(runtime_of(request), admin.user_id, _user_id(request), status)
    return JSONResponse(body, headers=NO_STORE)
