"""``POST /auth/oauth2/profile/sync``: the signed-in user asks for their linked profiles to be
read again from the providers now, instead of at the next periodic sync;
``POST /admin/oauth2/users/{user_id}/sync`` does the same for a user, asked by an admin
(``admins:`` in the configuration).

Answers ``202 Accepted`` with one entry per link (``broker.login.sync_requests``).
``?provider=ID`` limits it to one link. ``GET /auth/oauth2/profile`` shows the result.
"""

from __future__ import annotations

import re
import uuid

from shared.settings.base import ID_PATTERN
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, NotFound, TemporarilyUnavailable
from broker.http.openapi import (
    ADMIN,
    BEARER,
    UUID,
    Contract,
    Operation,
    json_answer,
    path_parameter,
    query,
    ref,
    strict_object,
)
from broker.login.sync_requests import queue_profile_syncs
from broker.oauth.callers import authenticated_caller


async def sync(request: Request) -> Response:
    """The signed-in user's own links."""
    caller = await authenticated_caller(request)
    return await _queue_syncs(request, caller.user_id, f"user:{caller.user_id}")


async def admin_sync(request: Request) -> Response:
    """``POST /admin/oauth2/users/{user_id}/sync``: an admin asks for a user's links."""
    caller = await authenticated_admin(request)
    try:
        user_id = uuid.UUID(request.path_params["user_id"])
    except ValueError:
        raise NotFound("no such user") from None
    return await _queue_syncs(request, user_id, f"user:{caller.user_id}")


async def _queue_syncs(request: Request, user_id: uuid.UUID, requested_by: str) -> Response:
    runtime = runtime_of(request)
    only = request.query_params.get("provider")
    if only is not None and not re.fullmatch(ID_PATTERN, only):
        # Never a provider id, so never linked (and PostgreSQL could not even compare a NUL).
        raise NotFound(f"no link to provider {only!r}")
    entries = await queue_profile_syncs(runtime, user_id, requested_by, only)
    return JSONResponse({"links": entries}, status_code=202, headers=NO_STORE)


_ONLY = query(
    "provider", {"type": "string", "pattern": ID_PATTERN}, "only the link to this provider"
)
_QUEUED = json_answer(202, "what was queued, and what was skipped and why", ref("SyncRequests"))

CONTRACT = Contract(
    operations=(
        Operation(
            "POST",
            "/auth/oauth2/profile/sync",
            "sync_profile",
            "Sync the caller's linked profiles from the providers now",
            "First-party API",
            parameters=(_ONLY,),
            answers=(_QUEUED,),
            errors=(NotFound, TemporarilyUnavailable),
            security=BEARER,
        ),
        Operation(
            "POST",
            "/admin/oauth2/users/{user_id}/sync",
            "admin_sync_user",
            "Sync a user's linked profiles now",
            "Admin API",
            parameters=(path_parameter("user_id", UUID, "the broker user id"), _ONLY),
            answers=(_QUEUED,),
            errors=(NotFound, TemporarilyUnavailable),
            security=ADMIN,
        ),
    ),
    schemas={
        "SyncRequests": strict_object(
            {
                "links": {
                    "type": "array",
                    "items": strict_object(
                        {
                            "provider": {"type": "string"},
                            "status": {"enum": ["queued", "skipped"]},
                            "reason": {"type": "string"},
                            "job_id": {"type": "string"},
                        },
                        required=["provider", "status"],
                    ),
                }
            },
            required=["links"],
        )
    },
)
