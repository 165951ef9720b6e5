"""Profile syncs asked for now: one job per link of a user that can be synced, or why not.

Answers one entry per link: the job queued (``queued``), or why that link cannot be synced
(``skipped``: no upstream token, a link that needs a new sign-in, the dev provider). The sync
itself runs in a worker (or in this process without Redis); each change is an audit event
``profile.synced`` naming who asked. Repeats within 10 seconds join the job already queued.
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.db.tables import LINKS, PROFILES
from shared.jobs.base import JobName, QueueUnavailableError
from shared.jobs.profile_sync import ProfileSyncPayload, on_demand_job_id
from shared.jobs.upstream_refresh import REFRESHABLE_STATES
from shared.runtime import Runtime
from sqlalchemy import select

from broker.http.errors import NotFound, TemporarilyUnavailable


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


async def queue_profile_syncs(
    runtime: Runtime, user_id: uuid.UUID, requested_by: str, only: str | None
) -> list[dict[str, Any]]:
    """Queue a sync of each of the user's links (only the link to ``only``, if given)."""
    if only is not None and "\x00" in only:
        # No provider id has NUL, and PostgreSQL text cannot hold it (DataError: a 500).
        raise NotFound(f"no link to provider {only!r}")
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
    return entries
