"""Upstream token refresh: find links whose upstream access token is about to expire, and refresh
each one at most once at a time across any number of workers (docs/security.md "Upstream refresh").

* The scan enqueues one job per due link with a stable job id (link, expiry, failure count), so
  overlapping scans, on one worker or many, queue it once.
* The job locks the link's row (``FOR UPDATE SKIP LOCKED``): a second worker holding the same
  job finds the row locked and skips it. The upstream call happens under that lock, and its
  answer — a rotated refresh token included — is stored in the same transaction; a worker that
  dies mid-call leaves the row as it was, and the next scan tries again.
* Only ``invalid_grant`` (``ProviderRejected``) means the grant is dead. The provider's
  ``on_upstream_revoked`` policy decides what follows: ``revoke_sessions`` (the default) marks
  the link ``revoked`` and revokes the broker sessions signed in through it; ``require_reauth``
  marks it ``needs_reauth`` and keeps them, their refreshes answering
  ``upstream_reauth_required`` until the user signs in through the provider again. An upstream
  refresh token past its own expiry is ``needs_reauth`` under either policy.
* Network errors, timeouts, 5xx, 429 and answers that fail our checks revoke nothing: the link
  becomes ``refresh_failing`` and is retried after ``base * 2^(n-1)`` seconds (equal jitter,
  capped at ``upstream_retry_max``, never sooner than the upstream's ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from pydantic import Field
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import record_audit_core
from shared.backoff import backoff_delay
from shared.db.tables import LINKS
from shared.jobs.base import JobDeps, JobName, JobPayload, JobResult
from shared.provider_states import is_switched_off, switched_off
from shared.providers.base import Provider, UpstreamTokens
from shared.providers.errors import ProviderError, ProviderRejected, ProviderUnavailable
from shared.revocations import Revocation
from shared.settings import Settings
from shared.upstream_tokens import (
    revoke_upstream_link,
    store_upstream_tokens,
    unseal_upstream_token,
)

log = structlog.get_logger("shared.jobs.upstream_refresh")

WORKER_ACTOR = "system:worker"
REFRESHABLE_STATES = ("ok", "refresh_failing")
Status = Literal["refreshed", "skipped", "retry", "revoked", "reauth_required"]


class UpstreamScanPayload(JobPayload):
    """Find due links; at most ``limit`` jobs per scan (the next scan takes the rest)."""

    limit: int = Field(default=1000, ge=1, le=10_000)


class UpstreamRefreshPayload(JobPayload):
    """Refresh one link's upstream tokens (``oauth2_tokens.id``)."""

    token_id: uuid.UUID


def refresh_job_id(token_id: uuid.UUID, expires_at: dt.datetime, failures: int) -> str:
    """Stable for one due state of a link: a re-scan queues the same job, a refreshed or
    failed-and-rescheduled link a new one."""
    return f"upstream-refresh:{token_id}:{int(expires_at.timestamp())}:{failures}"


def refreshable_providers(deps: JobDeps) -> list[str]:
    """The configured, enabled providers that hand out refresh tokens (not ``dev``)."""
    return [pid for pid, provider in deps.providers.items() if provider.type != "dev"]


async def scan_upstream_tokens(payload: UpstreamScanPayload, deps: JobDeps) -> JobResult:
    """Enqueue a refresh for every link expiring within the margin and not backing off."""
    if deps.queue is None:
        raise RuntimeError("the upstream scan needs a job queue")
    now = deps.clock.now()
    horizon = now + dt.timedelta(seconds=deps.settings.upstream_refresh_margin)
    async with deps.engine.connect() as connection:
        # docs/security.md "Switching a provider off": paused while disabled.
        paused = await switched_off(connection)
        providers = [pid for pid in refreshable_providers(deps) if pid not in paused]
        candidates = (
            await connection.execute(
                # Only what the decision needs: never the sealed tokens of a thousand links.
                select(
                    LINKS.c.id,
                    LINKS.c.state,
                    LINKS.c.expires_at,
                    LINKS.c.updated_at,
                    LINKS.c.next_attempt_at,
                    LINKS.c.failure_count,
                )
                .where(
                    LINKS.c.provider.in_(providers),
                    LINKS.c.refresh_token_enc.is_not(None),
                    LINKS.c.state.in_(REFRESHABLE_STATES),
                    LINKS.c.expires_at.is_not(None),
                    LINKS.c.expires_at <= horizon,
                    or_(LINKS.c.next_attempt_at.is_(None), LINKS.c.next_attempt_at <= now),
                )
                .order_by(LINKS.c.expires_at)
                .limit(payload.limit)
            )
        ).all()
    rows = [row for row in candidates if is_due(row, deps.settings, now, has_refresh_token=True)]
    enqueued = 0
    for row in rows:
        job_id = refresh_job_id(row.id, row.expires_at, row.failure_count)
        queued = await deps.queue.enqueue(
            JobName.REFRESH_UPSTREAM_TOKEN, UpstreamRefreshPayload(token_id=row.id), job_id=job_id
        )
        enqueued += queued is not None
    if rows:
        log.info("upstream_link.scan", due=len(rows), enqueued=enqueued)
    return {"outcome": "ok", "due": len(rows), "enqueued": enqueued}


@dataclass
class RefreshOutcome:
    """What one refresh attempt did; ``tokens`` are the new ones after ``refreshed``."""

    status: Status
    provider: str | None = None
    reason: str | None = None
    upstream_seconds: float | None = None
    tokens: UpstreamTokens | None = None
    revocations: list[Revocation] = field(default_factory=list)

    def result(self) -> JobResult:
        outcome = {"refreshed": "ok", "skipped": "ok", "retry": "retried"}.get(self.status, "ok")
        return {
            "outcome": outcome,
            "status": self.status,
            "provider": self.provider,
            "reason": self.reason,
            "upstream_seconds": self.upstream_seconds,
            "sessions_revoked": len(self.revocations),
        }


def retry_delay(settings: Settings, failures: int, retry_after: float | None, draw: float) -> float:
    """Seconds until the next attempt after ``failures`` consecutive transient failures;
    ``draw`` is uniform in [0, 1) (equal jitter: half fixed, half random)."""
    delay = backoff_delay(
        failures, base=settings.upstream_retry_base, cap=settings.upstream_retry_max, draw=draw
    )
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.upstream_retry_max))
    return delay


async def lock_link(
    connection: AsyncConnection, token_id: uuid.UUID, *, wait: bool = False
) -> Row[Any] | None:
    """The link's row, locked for this transaction; None when it is gone or (unless ``wait``)
    another worker holds it."""
    statement = select(LINKS).where(LINKS.c.id == token_id)
    statement = statement.with_for_update(skip_locked=not wait)
    return (await connection.execute(statement)).first()


def is_due(row: Any, settings: Settings, now: dt.datetime, *, has_refresh_token: bool) -> bool:
    """Whether a link should be refreshed now (the scan's SQL filter narrows, this decides).

    Within the margin of its expiry — and, for an ``ok`` link, no sooner than half its
    lifetime: an access token that lives no longer than the margin (Keycloak's 5 minutes
    against the default margin of 5 minutes) would otherwise be refreshed at every scan.
    """
    if (
        row.state not in REFRESHABLE_STATES
        or not has_refresh_token
        or row.expires_at is None
        or (row.next_attempt_at is not None and row.next_attempt_at > now)
    ):
        return False
    remaining = row.expires_at - now
    if remaining > dt.timedelta(seconds=settings.upstream_refresh_margin):
        return False
    return bool(row.state != "ok" or remaining <= now - row.updated_at)


async def refresh_locked_link(
    connection: AsyncConnection, row: Row[Any], provider: Provider, deps: JobDeps
) -> RefreshOutcome:
    """Refresh a link whose row the caller locked, inside the caller's transaction."""
    now = deps.clock.now()
    keyring = deps.settings.keyring
    if row.refresh_expires_at is not None and row.refresh_expires_at <= now:
        return await _needs_reauth(connection, row, deps, "refresh_token_expired")
    refresh_token = unseal_upstream_token(keyring, row.id, "refresh_token", row.refresh_token_enc)
    if refresh_token is None:
        return RefreshOutcome("skipped", row.provider, "no_refresh_token")
    started = time.perf_counter()
    try:
        async with deps.slots.slot(row.provider):
            started = time.perf_counter()
            tokens = await provider.refresh(refresh_token)
    except ProviderRejected as exc:
        seconds = time.perf_counter() - started
        outcome = await _rejected(connection, row, deps, exc.error)
        outcome.upstream_seconds = seconds
        return outcome
    except ProviderError as exc:
        seconds = time.perf_counter() - started
        retry_after = exc.retry_after if isinstance(exc, ProviderUnavailable) else None
        outcome = await _failed(connection, row, deps, str(exc), retry_after)
        outcome.upstream_seconds = seconds
        return outcome
    seconds = time.perf_counter() - started
    await store_upstream_tokens(
        connection,
        user_id=row.user_id,
        profile_id=row.profile_id,
        provider_id=row.provider,
        tokens=tokens,
        keyring=keyring,
        now=now,
        refreshed=True,
    )
    await record_audit_core(
        connection,
        action="upstream_token.refreshed",
        actor=WORKER_ACTOR,
        subject=str(row.user_id),
        data={
            "provider": row.provider,
            "link": str(row.profile_id),
            "rotated": tokens.refresh_token is not None and tokens.refresh_token != refresh_token,
            "previous_state": row.state,
        },
        now=now,
    )
    return RefreshOutcome("refreshed", row.provider, upstream_seconds=seconds, tokens=tokens)


async def _rejected(
    connection: AsyncConnection, row: Row[Any], deps: JobDeps, error: str
) -> RefreshOutcome:
    config = deps.settings.provider(row.provider)
    policy = getattr(config, "on_upstream_revoked", "revoke_sessions")
    if policy == "require_reauth":
        return await _needs_reauth(connection, row, deps, error)
    now = deps.clock.now()
    revocations = await revoke_upstream_link(
        connection, row.id, now=now, actor=WORKER_ACTOR, reason=error
    )
    assert revocations is not None  # the link row is locked by this transaction
    log.warning("upstream_link.revoked", provider=row.provider, sessions_revoked=len(revocations))
    return RefreshOutcome("revoked", row.provider, error, revocations=revocations)


async def _needs_reauth(
    connection: AsyncConnection, row: Row[Any], deps: JobDeps, reason: str
) -> RefreshOutcome:
    now = deps.clock.now()
    await _set_state(connection, row.id, now, state="needs_reauth", last_error=reason, wipe=True)
    await record_audit_core(
        connection,
        action="upstream_token.reauth_required",
        actor=WORKER_ACTOR,
        subject=str(row.user_id),
        data={"provider": row.provider, "link": str(row.profile_id), "reason": reason},
        now=now,
    )
    log.info("upstream_link.reauth_required", provider=row.provider, reason=reason)
    return RefreshOutcome("reauth_required", row.provider, reason)


async def _failed(
    connection: AsyncConnection,
    row: Row[Any],
    deps: JobDeps,
    error: str,
    retry_after: float | None,
) -> RefreshOutcome:
    now = deps.clock.now()
    failures = row.failure_count + 1
    delay = retry_delay(deps.settings, failures, retry_after, deps.rng.random())
    await connection.execute(
        update(LINKS)
        .where(LINKS.c.id == row.id)
        .values(
            state="refresh_failing",
            failure_count=failures,
            last_error=error[:200],
            next_attempt_at=now + dt.timedelta(seconds=delay),
            updated_at=now,
        )
    )
    if row.state != "refresh_failing":
        await record_audit_core(
            connection,
            action="upstream_token.refresh_failing",
            actor=WORKER_ACTOR,
            subject=str(row.user_id),
            data={"provider": row.provider, "link": str(row.profile_id), "error": error[:200]},
            now=now,
        )
    log.warning(
        "upstream_link.refresh_failed",
        provider=row.provider,
        failures=failures,
        retry_in=round(delay, 1),
        error=error[:200],
    )
    return RefreshOutcome("retry", row.provider, error[:200])


async def _set_state(
    connection: AsyncConnection,
    token_id: uuid.UUID,
    now: dt.datetime,
    *,
    state: str,
    last_error: str,
    wipe: bool,
) -> None:
    values: dict[str, Any] = {
        "state": state,
        "last_error": last_error[:200],
        "next_attempt_at": None,
        "updated_at": now,
    }
    if wipe:  # a dead grant's tokens are of no use to anyone: keep no secret we cannot use
        values.update(access_token_enc=None, refresh_token_enc=None, id_token_enc=None)
    await connection.execute(update(LINKS).where(LINKS.c.id == token_id).values(**values))


async def refresh_upstream_token(payload: UpstreamRefreshPayload, deps: JobDeps) -> JobResult:
    """The job: lock the link (skip it if another worker has it), refresh if still due.

    Shielded from cancellation (arq's job timeout, a worker shutting down): once the upstream
    has answered, its rotated refresh token is the only one that still works, so the
    transaction that stores it must commit, whatever happens to the job around it. A cancelled
    job raises as usual; the refresh finishes in the background (bounded by the provider's HTTP
    timeout), and the link stays locked until it has, so a retried job skips it or finds it
    done (docs/security.md "Upstream refresh").
    """
    return await asyncio.shield(_refresh_upstream_token(payload, deps))


async def _refresh_upstream_token(payload: UpstreamRefreshPayload, deps: JobDeps) -> JobResult:
    async with deps.engine.connect() as connection, connection.begin():
        row = await lock_link(connection, payload.token_id)
        if row is None:
            return RefreshOutcome("skipped", reason="locked_or_gone").result()
        provider = deps.providers.get(row.provider)
        if provider is None:
            return RefreshOutcome("skipped", row.provider, "provider_not_configured").result()
        if await is_switched_off(connection, row.provider):
            # Queued before an admin disabled the provider: its links wait until it is back.
            return RefreshOutcome("skipped", row.provider, "provider_disabled").result()
        sealed = row.refresh_token_enc is not None
        if not is_due(row, deps.settings, deps.clock.now(), has_refresh_token=sealed):
            return RefreshOutcome("skipped", row.provider, "not_due").result()
        outcome = await refresh_locked_link(connection, row, provider, deps)
    await deps.revocations.publish(outcome.revocations)
    return outcome.result()
