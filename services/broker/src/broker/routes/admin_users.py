"""``/admin/oauth2/users``: list users, disable or enable one (queries: ``broker.admin.users``)."""

from __future__ import annotations

import uuid

from shared.models.oauth2_token import LINK_STATES
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.pagination import MAX_LIMIT
from broker.admin.users import STATUSES, set_user_status, users_listing
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidRequest, NotFound
from broker.http.openapi import (
    ADMIN,
    COUNT,
    TIMESTAMP,
    UUID,
    Contract,
    Operation,
    Schema,
    json_answer,
    nullable,
    path_parameter,
    query,
    ref,
    strict_object,
)


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


_TEXT: Schema = {"type": "string"}
_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
_MAYBE_TEXT = nullable(_TEXT)
_MAYBE_TIME = nullable(TIMESTAMP)
_DISABLING = ": every live session revoked, no new sign-ins or refreshes"
_USER_ID = path_parameter("user_id", UUID, "the broker user id")


def _status_change(verb: str, status: str) -> Operation:
    return Operation(
        "POST",
        f"/admin/oauth2/users/{{user_id}}/{verb}",
        f"admin_{verb}_user",
        f"{verb.capitalize()} a user"
        + (
            ": every live session revoked, no new sign-ins or refreshes"
            if verb == "disable"
            else ""
        ),
        "Admin API",
        parameters=(_USER_ID,),
        answers=(json_answer(200, f"the user is {status}", ref("UserStatusChange")),),
        errors=(InvalidRequest, NotFound),
        security=ADMIN,
    )


CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/admin/oauth2/users",
            "admin_users",
            "Users with their links, newest first, filtered and keyset-paged",
            "Admin API",
            parameters=(
                query("user", UUID, "a user id"),
                query("provider", _TEXT, "users with a profile of this provider"),
                query("email", {"type": "string", "minLength": 1}, "case-insensitive substring"),
                query("status", {"enum": list(STATUSES)}, "the user's status"),
                query("last_login_after", TIMESTAMP, "RFC 3339 with an offset"),
                query("last_login_before", TIMESTAMP, "RFC 3339 with an offset"),
                query("cursor", _TEXT, "the previous page's next_cursor"),
                query(
                    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size"
                ),
            ),
            answers=(json_answer(200, "one page of users", ref("UserPage")),),
            errors=(InvalidRequest,),
            security=ADMIN,
        ),
        _status_change("disable", "disabled"),
        _status_change("enable", "active"),
    ),
    schemas={
        "UserPage": strict_object(
            {
                "users": {"type": "array", "items": ref("AdminUser")},
                "next_cursor": _MAYBE_TEXT,
            },
            required=["users", "next_cursor"],
        ),
        "AdminUser": strict_object(
            {
                "id": UUID,
                "email": _MAYBE_TEXT,
                "email_verified": {"type": "boolean"},
                "display_name": _MAYBE_TEXT,
                "status": {"enum": list(STATUSES)},
                "created_at": TIMESTAMP,
                "last_login_at": _MAYBE_TIME,
                "active_sessions": COUNT,
                "links": {
                    "type": "array",
                    "items": strict_object(
                        {
                            "provider": _TEXT,
                            "email": _MAYBE_TEXT,
                            "email_verified": {"type": "boolean"},
                            "last_login_at": _MAYBE_TIME,
                            "link_state": nullable({"enum": list(LINK_STATES)}),
                        },
                        required=["provider", "email", "email_verified", "link_state"],
                    ),
                },
            },
            required=["id", "email", "status", "created_at", "active_sessions", "links"],
        ),
        "UserStatusChange": strict_object(
            {
                "id": UUID,
                "status": {"enum": list(STATUSES)},
                "changed": {"type": "boolean"},
                "revoked_sessions": {"type": "array", "items": UUID},
            },
            required=["id", "status", "changed", "revoked_sessions"],
        ),
    },
)
