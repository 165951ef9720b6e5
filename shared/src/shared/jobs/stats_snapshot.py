"""The stats snapshot: count what the admin statistics and the providers listing show as
current state, into ``stat_snapshots``, so ``/admin/oauth2/stats`` and
``/admin/oauth2/providers`` answer from a few rows at any scale.

Counted (``name``, by ``provider`` where it applies; ``""`` is all providers):

- ``active_sessions``: sessions not revoked whose current refresh token has not expired;
- ``active_users_1d`` / ``_7d`` / ``_30d``: users with a sign-in or refresh in that window
  (``users.last_seen_at``, which the audit rollup keeps);
- ``links_ok`` / ``links_refresh_failing`` / ``links_need_reauth`` / ``links_revoked``:
  upstream links (``oauth2_tokens``) in each state, and ``linked_identities``: profiles linked
  through the provider (for the admin providers listing);
- ``links_sync_failing``: links whose last profile sync attempt did not succeed.

One transaction replaces the whole snapshot, so a reader sees one moment's counts. Scheduled
with the audit rollup (``audit_rollup_interval``); at 100,000 users (130,000 links) a run costs
~0.5 s of database time, half of it the two full counts of links and profiles.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import LINKS, PROFILES, REFRESH_TOKENS, SESSIONS, STAT_SNAPSHOTS, USERS
from shared.jobs.base import JobDeps, JobPayload, JobResult

ACTIVE_WINDOWS = {"active_users_1d": 1, "active_users_7d": 7, "active_users_30d": 30}
# The snapshot's name for the links in each state (oauth2_tokens.state), and for identities.
LINK_COUNTS = {
    "ok": "links_ok",
    "refresh_failing": "links_refresh_failing",
    "needs_reauth": "links_need_reauth",
    "revoked": "links_revoked",
}
IDENTITIES = "linked_identities"
Counts = dict[tuple[str, str], int]


class StatsSnapshotPayload(JobPayload):
    """No options: a run counts everything once."""


async def snapshot_stats(payload: StatsSnapshotPayload, deps: JobDeps) -> JobResult:
    """The job: count the current state and replace the snapshot with it."""
    now = deps.clock.now()
    async with deps.engine.begin() as connection:
        counts = await current_state(connection, now)
        await connection.execute(delete(STAT_SNAPSHOTS))
        await connection.execute(
            insert(STAT_SNAPSHOTS),
            [
                {"name": name, "provider": provider, "value": value, "computed_at": now}
                for (name, provider), value in counts.items()
            ],
        )
    return {"outcome": "ok", "counts": len(counts)}


async def read_snapshot(connection: AsyncConnection) -> tuple[Counts, dt.datetime | None]:
    """The last snapshot and when it was taken (None: never yet)."""
    rows = (await connection.execute(select(STAT_SNAPSHOTS))).all()
    taken = min((row.computed_at for row in rows), default=None)
    return {(row.name, row.provider): int(row.value) for row in rows}, taken


async def current_state(connection: AsyncConnection, now: dt.datetime) -> Counts:
    """Count it all now (the job; also the statistics before the job's first run)."""
    counts: Counts = {}
    for provider, value in await _grouped(
        connection,
        select(SESSIONS.c.provider, func.count())
        .select_from(REFRESH_TOKENS.join(SESSIONS, SESSIONS.c.id == REFRESH_TOKENS.c.session_id))
        .where(
            REFRESH_TOKENS.c.used_at.is_(None),
            REFRESH_TOKENS.c.expires_at > now,
            SESSIONS.c.revoked_at.is_(None),
        )
        .group_by(SESSIONS.c.provider),
    ):
        counts[("active_sessions", provider)] = value
    counts[("active_sessions", "")] = sum(
        value for (name, _), value in counts.items() if name == "active_sessions"
    )
    windows = [
        func.count().filter(USERS.c.last_seen_at >= now - dt.timedelta(days=days)).label(name)
        for name, days in ACTIVE_WINDOWS.items()
    ]
    longest = now - dt.timedelta(days=max(ACTIVE_WINDOWS.values()))
    active = (
        await connection.execute(select(*windows).where(USERS.c.last_seen_at >= longest))
    ).one()
    for name in ACTIVE_WINDOWS:
        counts[(name, "")] = int(active._mapping[name])
    counts.update(await link_counts(connection))
    for provider, value in await _grouped(
        connection,
        select(PROFILES.c.provider, func.count())
        .where(
            PROFILES.c.sync_attempted_at.is_not(None),
            or_(
                PROFILES.c.last_synced_at.is_(None),
                and_(PROFILES.c.last_synced_at < PROFILES.c.sync_attempted_at),
            ),
        )
        .group_by(PROFILES.c.provider),
    ):
        counts[("links_sync_failing", provider)] = value
    return counts


async def link_counts(connection: AsyncConnection) -> Counts:
    """Upstream links per provider and state (``LINK_COUNTS``), and identities per provider."""
    counts: Counts = {}
    rows = await connection.execute(
        select(LINKS.c.provider, LINKS.c.state, func.count()).group_by(
            LINKS.c.provider, LINKS.c.state
        )
    )
    for provider, state, value in rows:
        counts[(LINK_COUNTS[state], provider)] = int(value)
    for provider, value in await _grouped(
        connection,
        select(PROFILES.c.provider, func.count()).group_by(PROFILES.c.provider),
    ):
        counts[(IDENTITIES, provider)] = value
    return counts


async def _grouped(connection: AsyncConnection, statement: Any) -> list[tuple[str, int]]:
    return [(row[0], int(row[1])) for row in await connection.execute(statement)]
