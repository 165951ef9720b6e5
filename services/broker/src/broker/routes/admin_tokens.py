"""``/admin/oauth2/tokens``: list sessions and upstream links, revoke either (queries:
``broker.admin.tokens``)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.pagination import MAX_LIMIT
from broker.admin.tokens import (
    KINDS,
    SESSION_STATES,
    UPSTREAM_STATES,
    revoke_token,
    tokens_listing,
)
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


_TEXT: Schema = {"type": "string"}
_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
_MAYBE_TEXT = nullable(_TEXT)
_MAYBE_TIME = nullable(TIMESTAMP)
_STATES = list(dict.fromkeys(SESSION_STATES + UPSTREAM_STATES))

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/admin/oauth2/tokens",
            "admin_tokens",
            "Broker sessions and upstream links (never a secret), merged newest first; "
            "state=expiring: the next to end first, state=expired: the last to end first",
            "Admin API",
            parameters=(
                query("kind", {"enum": list(KINDS)}, "one kind only"),
                query("user", UUID, "a user id"),
                query("provider", _TEXT, "a provider id"),
                query("client", _TEXT, "sessions of this client (no upstream links)"),
                query(
                    "state",
                    {"enum": _STATES},
                    "sessions or links in this state (expiring and expired change the order)",
                ),
                query("cursor", _TEXT, "the previous page's next_cursor"),
                query(
                    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size"
                ),
            ),
            answers=(json_answer(200, "one page", ref("TokenPage")),),
            errors=(InvalidRequest,),
            security=ADMIN,
        ),
        Operation(
            "DELETE",
            "/admin/oauth2/tokens/{token_id}",
            "admin_revoke_token",
            "Revoke a session (by its sid) or an upstream link (by its id)",
            "Admin API",
            parameters=(path_parameter("token_id", UUID, "a session's sid or a link's id"),),
            answers=(
                json_answer(
                    200,
                    "revoked (changed: false when it was already)",
                    strict_object(
                        {
                            "id": UUID,
                            "kind": {"enum": list(KINDS)},
                            "changed": {"type": "boolean"},
                            "revoked_sessions": {"type": "array", "items": UUID},
                        },
                        required=["id", "kind", "changed", "revoked_sessions"],
                    ),
                ),
            ),
            errors=(NotFound,),
            security=ADMIN,
        ),
    ),
    schemas={
        "TokenPage": strict_object(
            {
                "tokens": {
                    "type": "array",
                    "items": {"oneOf": [ref("AdminSession"), ref("AdminUpstreamLink")]},
                },
                "next_cursor": _MAYBE_TEXT,
            },
            required=["tokens", "next_cursor"],
        ),
        "AdminSession": strict_object(
            {
                "id": UUID,
                "kind": {"const": "session"},
                "user_id": UUID,
                "provider": _TEXT,
                "client_id": _TEXT,
                "state": {"enum": list(SESSION_STATES)},
                "scope": _TEXT,
                "created_at": TIMESTAMP,
                "auth_time": _MAYBE_TIME,
                "expires_at": _MAYBE_TIME,
                "revoked_at": _MAYBE_TIME,
                "revoked_reason": _MAYBE_TEXT,
                "ip": _MAYBE_TEXT,
                "user_agent": _MAYBE_TEXT,
            },
            required=["id", "kind", "user_id", "provider", "client_id", "state", "created_at"],
        ),
        "AdminUpstreamLink": strict_object(
            {
                "id": UUID,
                "kind": {"const": "upstream"},
                "user_id": UUID,
                "provider": _TEXT,
                "state": {"enum": list(UPSTREAM_STATES)},
                "scope": _MAYBE_TEXT,
                "created_at": TIMESTAMP,
                "updated_at": _MAYBE_TIME,
                "expires_at": _MAYBE_TIME,
                "refresh_expires_at": _MAYBE_TIME,
                "has_refresh_token": {"type": "boolean"},
                "failure_count": COUNT,
                "last_error": _MAYBE_TEXT,
                "last_refreshed_at": _MAYBE_TIME,
            },
            required=["id", "kind", "user_id", "provider", "state", "created_at"],
        ),
    },
)
