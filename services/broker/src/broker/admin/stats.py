"""The statistics: sign-ins, new users, refreshes and upstream trouble, by provider.

Serves ``/admin/oauth2/stats`` and the dashboard's overview.

Counts over a range of UTC days (``from``, ``to``, inclusive, ``YYYY-MM-DD``; the last 30 days by
default) come from ``audit_daily_counts``, which the worker's audit rollup keeps (a few rows per
day, whatever the audit table holds); ``rollup`` says how far it has counted. The rest is the
current state — active users (a sign-in or refresh within 1, 7 and 30 days), live sessions,
upstream links whose refresh is failing or that need a new sign-in, links whose last profile
sync failed — from the worker's snapshot (``shared.jobs.stats_snapshot``), taken at
``state_as_of``.

``refresh_failed`` counts refreshes refused for a reason tied to an account (reuse of a rotated
token, which also revokes its session); a refresh with an unknown or expired token belongs to no
account and is counted only in ``broker_token_grants_total`` on ``/metrics``.
``refresh_retried`` counts rotated tokens presented again within the reuse interval that got
their unused successor back (``refresh_token.retried``: a response lost to a crash or a cut
connection, or concurrent refreshes): neither a second rotation nor a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from shared.clock import rfc3339
from shared.db.tables import AUDIT_DAILY_COUNTS, AUDIT_TABLE
from shared.jobs.audit_rollup import rollup_progress
from shared.jobs.stats_snapshot import current_state, read_snapshot
from shared.runtime import Runtime
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.admin.pagination import refuse_unknown
from broker.http.errors import InvalidRequest

DEFAULT_DAYS = 30
MAX_DAYS = 366
ACTIVE_WINDOWS = ("1d", "7d", "30d")
# Range counts: the name in the answer -> the audit action counted.
COUNTED = {
    "sign_ins": "user.signed_in",
    "sign_ins_refused": "login.refused",
    "new_users": "user.created",
    "refresh_succeeded": "refresh_token.rotated",
    "refresh_failed": "refresh_token.reuse_detected",
    "refresh_retried": "refresh_token.retried",
    "upstream_refreshed": "upstream_token.refreshed",
    "upstream_refresh_failed": "upstream_token.refresh_failing",
    "upstream_reauth_required": "upstream_token.reauth_required",
    "upstream_revoked": "upstream_token.revoked",
    "profile_syncs": "profile.synced",
}
DAILY = ("sign_ins", "new_users")
_FILTERS = {"from", "to"}
# What the statistics show of the snapshot per provider.
PROVIDER_STATE = frozenset(
    {"active_sessions", "links_refresh_failing", "links_need_reauth", "links_sync_failing"}
)


async def stats_summary(runtime: Runtime, query: Mapping[str, str]) -> dict[str, Any]:
    """The statistics for these query parameters (the JSON body; the dashboard's too)."""
    refuse_unknown(query, _FILTERS)
    now = runtime.clock.now()
    first, last = _day_range(query, now.astimezone(dt.UTC).date())
    async with runtime.engine.connect() as connection:
        counts = await _range_counts(connection, first, last)
        state, taken = await read_snapshot(connection)
        if taken is None:  # before the snapshot job's first run: count now (a new install)
            state, taken = await current_state(connection, now), now
        progress = await rollup_progress(connection)
        pending = await _uncounted(connection, progress.position[1] if progress else 0)
    by_provider: dict[str, dict[str, int]] = {}

    def provider_counts(provider: str) -> dict[str, int]:
        return by_provider.setdefault(
            provider,
            {
                **dict.fromkeys(COUNTED, 0),
                "active_sessions": 0,
                "links_refresh_failing": 0,
                "links_need_reauth": 0,
                "links_sync_failing": 0,
            },
        )

    daily: dict[str, list[dict[str, Any]]] = {name: [] for name in DAILY}
    for (day, name, provider), count in counts.items():
        provider_counts(provider)[name] += count
        if name in DAILY:
            daily[name].append({"day": day.isoformat(), "provider": provider, "count": count})
    for (name, provider), count in state.items():
        if provider and name in PROVIDER_STATE:  # the snapshot also counts for other pages
            provider_counts(provider)[name] = count
    totals = {
        name: sum(counts[name] for counts in by_provider.values())
        for name in (*COUNTED, "links_refresh_failing", "links_need_reauth", "links_sync_failing")
    }
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "sign_ins": sorted(daily["sign_ins"], key=lambda item: (item["day"], item["provider"])),
        "new_users": sorted(daily["new_users"], key=lambda item: (item["day"], item["provider"])),
        "active_users": {
            window: state.get((f"active_users_{window}", ""), 0) for window in ACTIVE_WINDOWS
        },
        "active_sessions": state.get(("active_sessions", ""), 0),
        "state_as_of": rfc3339(taken),
        "totals": totals,
        "by_provider": dict(sorted(by_provider.items())),
        "rollup": {
            "updated_at": rfc3339(progress.updated_at) if progress else None,
            "events_counted": progress.rows if progress else 0,
            "events_pending": pending,
        },
    }


def _day_range(query: Mapping[str, str], today: dt.date) -> tuple[dt.date, dt.date]:
    last = _day("to", query.get("to")) or today
    # The default window ends at `to`, and starts no earlier than the first day a date holds
    # (to=0001-01-01 would otherwise be an OverflowError: a 500).
    back = min(DEFAULT_DAYS - 1, (last - dt.date.min).days)
    first = _day("from", query.get("from")) or last - dt.timedelta(days=back)
    if first > last:
        raise InvalidRequest("from must not be after to")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"the range is at most {MAX_DAYS} days")
    return first, last


def _day(name: str, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value) if len(value) == 10 else _not_a_day(name)
    except ValueError:
        return _not_a_day(name)


def _not_a_day(name: str) -> dt.date:
    raise InvalidRequest(f"{name} must be a day, YYYY-MM-DD (UTC)")


async def _range_counts(
    connection: AsyncConnection, first: dt.date, last: dt.date
) -> dict[tuple[dt.date, str, str], int]:
    names = {action: name for name, action in COUNTED.items()}
    rows = await connection.execute(
        select(
            AUDIT_DAILY_COUNTS.c.day,
            AUDIT_DAILY_COUNTS.c.action,
            AUDIT_DAILY_COUNTS.c.provider,
            AUDIT_DAILY_COUNTS.c.count,
        ).where(
            AUDIT_DAILY_COUNTS.c.day >= first,
            AUDIT_DAILY_COUNTS.c.day <= last,
            AUDIT_DAILY_COUNTS.c.action.in_(names),
        )
    )
    return {(row.day, names[row.action], row.provider): int(row[3]) for row in rows}


PENDING_CAP = 10_000


async def _uncounted(connection: AsyncConnection, after_id: int) -> int:
    """Audit rows the rollup has not counted yet (by row id; at most :data:`PENDING_CAP`)."""
    newer = select(AUDIT_TABLE.c.id).where(AUDIT_TABLE.c.id > after_id).limit(PENDING_CAP)
    return int(await connection.scalar(select(func.count()).select_from(newer.subquery())) or 0)
