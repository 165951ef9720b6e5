"""``POST /auth/oauth2/profile/sync``: the signed-in user asks for their linked profiles to be
read again from the providers now, instead of at the next periodic sync;
``POST /admin/oauth2/users/{user_id}/sync`` does the same for a user, asked by an admin
(``admins:`` in the configuration).

Answers ``202 Accepted`` with one entry per link: the job queued (``queued``), or why that link
cannot be synced (``skipped``: no upstream token, a link that needs a new sign-in, the dev
provider). ``?provider=ID`` limits it to one link. The sync itself runs in a worker (or in this
process without Redis); ``GET /auth/oauth2/profile`` shows its result, and each change is an
audit event ``profile.synced`` naming who asked. Repeats within 10 seconds join the job already
queued.
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.db.tables import LINKS, PROFILES
from shared.jobs.base import JobName, QueueUnavailableError
from shared.jobs.profile_sync import ProfileSyncPayload, on_demand_job_id
from shared.jobs.upstream_refresh import REFRESHABLE_STATES
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, NotFound, TemporarilyUnavailable
from broker.oauth.callers import authenticated_caller


def _skip_reason(provider_known: bool, provider_type: str, state: str | None) -> str | None:
    if not provider_known:
        return "provider_not_configured"
    if provider_type == "dev":
        return "no_upstream_profile"
    if state is None:
        return "no_upstream_token"
    if state not in REFRESHABLE_STATES:
        return f"link_{state}"
    return None


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
    statement = (
        select(PROFILES.c.id, PROFILES.c.provider, PROFILES.c.provider_type, LINKS.c.state)
        .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
        .where(PROFILES.c.user_id == user_id)
        .order_by(PROFILES.c.created_at, PROFILES.c.id)
    )
    if only is not None:
        statement = statement.where(PROFILES.c.provider == only)
    async with runtime.engine.connect() as connection:
        links = (await connection.execute(statement)).all()
    if not links:
        raise NotFound(f"no link to provider {only!r}" if only else "no linked profiles")
    now = runtime.clock.now()
    entries: list[dict[str, Any]] = []
    for link in links:
        reason = _skip_reason(link.provider in runtime.providers, link.provider_type, link.state)
        if reason is not None:
            entries.append({"provider": link.provider, "status": "skipped", "reason": reason})
            continue
        job_id = on_demand_job_id(link.id, now)
        try:
            await runtime.jobs.enqueue(
                JobName.SYNC_PROFILE,
                ProfileSyncPayload(profile_id=link.id, requested_by=requested_by),
                job_id=job_id,
            )
        except QueueUnavailableError:
            raise TemporarilyUnavailable("the job queue is unavailable; try again") from None
        entries.append({"provider": link.provider, "status": "queued", "job_id": job_id})
    return JSONResponse({"links": entries}, status_code=202, headers=NO_STORE)
