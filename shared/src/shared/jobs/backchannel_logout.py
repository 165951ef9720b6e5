"""The back-channel logout job: turn ended sessions into Logout Tokens owed
(:mod:`shared.jobs.logout_outbox`), then POST each due one to its relying party until it answers
200 or 204 (OpenID Connect Back-Channel Logout 1.0 §2.5, §2.8).

**One sender per delivery.** A run claims a few due rows (``FOR UPDATE SKIP LOCKED``: rows
another worker is claiming are skipped) and, in that short transaction, counts the attempt and
moves ``next_attempt_at`` past the time a POST may take, so no other worker finds them due
meanwhile; no database lock is held while the relying party is called. The outcome is written
only if the row is still this attempt's (``attempts`` unchanged): a worker that stalled past its
claim cannot overwrite what the next one did. A worker that dies mid-attempt leaves the row to
come due again when its claim lapses.

**Signed per attempt.** Each attempt signs a fresh token (``iat`` now, ``exp`` two minutes on)
with the key that signs the client's ID tokens now, reloaded from the database (the worker
changes no key); the ``jti`` is the delivery's own, the same in every attempt, so a relying party
that took a token whose answer was lost recognises the retry (docs/security.md "Back-channel
Logout Tokens").

**Until it answers, within a bound.** Anything but 200 or 204 — another status, a redirect (not
followed), a timeout, a refused connection — is tried again after
``backchannel_logout_retry_base * 2^(n-1)`` seconds (equal jitter, at most
``backchannel_logout_retry_max``). Nothing is lost while the worker, Redis or the relying party
is down: the rows wait in the database. A delivery still failing
``backchannel_logout_give_up_after`` seconds after its session ended is given up (so, by then,
is one whose client no longer registers a ``backchannel_logout_uri``). Audited:
``backchannel_logout.delivered`` and ``backchannel_logout.failed`` (``sid``, ``jti``,
``attempts``; the last error when given up).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx2
import structlog
from pydantic import Field
from sqlalchemy import func, select, update

from shared.audit import record_audit_core
from shared.backoff import backoff_delay
from shared.db.tables import LOGOUT_DELIVERIES as DELIVERIES
from shared.jobs.base import JobDeps, JobPayload, JobResult
from shared.jobs.logout_outbox import collect_deliveries
from shared.jobs.upstream_refresh import WORKER_ACTOR
from shared.key_rotation import load_keys
from shared.logout_tokens import EndedSession, logout_token_claims, sign_logout_token
from shared.signing_keys import KeySnapshot

log = structlog.get_logger("shared.jobs.backchannel_logout")

# A claim lasts the POST's timeout plus this: long enough that a live worker always records its
# outcome first, short enough that a dead worker's rows come due again soon.
CLAIM_MARGIN = 60.0
DELIVERED_STATUSES = frozenset({200, 204})  # §2.8: 200; some frameworks answer 204 for it
COLLECT_BATCH = 1000


class BackchannelLogoutPayload(JobPayload):
    """Deliver ``batch_size`` tokens at a time until none is due or ``max_seconds`` have
    passed (the outbox is read first, within the same time)."""

    batch_size: int = Field(default=10, ge=1, le=100)
    max_seconds: float = Field(default=20.0, gt=0, le=60)


@dataclass(frozen=True)
class Claimed:
    """A delivery this run attempts; ``attempts`` counts this attempt."""

    id: uuid.UUID
    ended: EndedSession
    revoked_at: dt.datetime
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """How one POST went: delivered, or the reason it was not."""

    delivered: bool
    error: str | None = None


async def deliver_backchannel_logouts(
    payload: BackchannelLogoutPayload, deps: JobDeps
) -> JobResult:
    """The job: read the outbox, then deliver what is due; counts of each outcome."""
    deadline = time.monotonic() + payload.max_seconds
    collected = await collect_deliveries(
        deps, batch_size=COLLECT_BATCH, max_seconds=payload.max_seconds
    )
    outcomes: Counter[str] = Counter()
    if deps.keys is None:
        return {"outcome": "ok", "collected": collected or 0, "reason": "no_signing_keys"}
    await load_keys(deps.engine, deps.keys)
    if not deps.keys.loaded:
        # No broker has created its keys yet: nothing can be signed, no attempt is spent.
        return {"outcome": "ok", "collected": collected or 0, "reason": "no_signing_keys"}
    while time.monotonic() < deadline:
        claimed = await claim_due(deps, payload.batch_size)
        snapshot = deps.keys.snapshot
        attempts = await asyncio.gather(*(_attempt(deps, snapshot, row) for row in claimed))
        for row, attempt in zip(claimed, attempts, strict=True):
            outcomes[await record_outcome(deps, row, attempt)] += 1
        if len(claimed) < payload.batch_size:
            break
    return {
        "outcome": "ok",
        "collected": collected or 0,
        "delivered": outcomes["delivered"],
        "retried": outcomes["retried"],
        "failed": outcomes["failed"],
        "pending": await pending_deliveries(deps),
    }


async def pending_deliveries(deps: JobDeps) -> int:
    """Deliveries neither delivered nor given up."""
    async with deps.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(DELIVERIES)
            .where(DELIVERIES.c.next_attempt_at.is_not(None))
        )
    return int(count or 0)


async def claim_due(deps: JobDeps, limit: int) -> list[Claimed]:
    """Up to ``limit`` due deliveries, counted as attempted and not due again until the POST
    has had its time (see the module docstring)."""
    now = deps.clock.now()
    until = now + dt.timedelta(seconds=deps.settings.backchannel_logout_timeout + CLAIM_MARGIN)
    async with deps.engine.begin() as connection:
        rows = (
            await connection.execute(
                select(DELIVERIES)
                .where(DELIVERIES.c.next_attempt_at <= now)
                .order_by(DELIVERIES.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return []
        await connection.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_([row.id for row in rows]))
            .values(attempts=DELIVERIES.c.attempts + 1, next_attempt_at=until, last_attempt_at=now)
        )
    return [
        Claimed(
            id=row.id,
            ended=EndedSession(
                client_id=row.client_id,
                user_id=row.user_id,
                session_id=row.session_id,
                jti=row.jti,
            ),
            revoked_at=row.revoked_at,
            attempts=row.attempts + 1,
        )
        for row in rows
    ]


async def _attempt(deps: JobDeps, keys: KeySnapshot, row: Claimed) -> Attempt:
    """Sign a fresh Logout Token and POST it (§2.5); never follows a redirect."""
    client = deps.settings.client(row.ended.client_id)
    if client is None or client.backchannel_logout_uri is None:
        # Not in this process's configuration: during a rolling change another worker may
        # have it. Tried again like any failure, and given up at the bound if it never returns.
        return Attempt(False, "the client registers no backchannel_logout_uri here")
    claims = logout_token_claims(deps.settings.issuer, row.ended, deps.clock.now())
    token = sign_logout_token(keys, client.id_token_signed_response_alg, claims)
    if token is None:
        return Attempt(False, f"no {client.id_token_signed_response_alg} signing key")
    timeout = deps.settings.backchannel_logout_timeout
    try:
        async with asyncio.timeout(timeout):  # the whole exchange, however slowly it trickles
            async with deps.http.stream(
                "POST",
                client.backchannel_logout_uri,
                data={"logout_token": token},
                timeout=timeout,
            ) as response:
                status = response.status_code  # the body is never read
    except (httpx2.HTTPError, TimeoutError, OSError) as exc:
        return Attempt(False, type(exc).__name__)
    if status in DELIVERED_STATUSES:
        return Attempt(True)
    return Attempt(False, f"HTTP {status}")


async def record_outcome(deps: JobDeps, row: Claimed, attempt: Attempt) -> str:
    """Write the attempt's outcome (and its audit row) if the row is still this attempt's;
    ``delivered``, ``retried``, ``failed``, or ``lost`` (its claim lapsed meanwhile)."""
    settings = deps.settings
    now = deps.clock.now()
    give_up_at = row.revoked_at + dt.timedelta(seconds=settings.backchannel_logout_give_up_after)
    values: dict[str, dt.datetime | str | None]
    if attempt.delivered:
        outcome = "delivered"
        values = {"delivered_at": now, "next_attempt_at": None, "last_error": None}
    elif now >= give_up_at:
        outcome = "failed"
        values = {"failed_at": now, "next_attempt_at": None, "last_error": attempt.error}
    else:
        outcome = "retried"
        delay = backoff_delay(
            row.attempts,
            base=settings.backchannel_logout_retry_base,
            cap=settings.backchannel_logout_retry_max,
            draw=deps.rng.random(),
        )
        values = {
            "next_attempt_at": min(now + dt.timedelta(seconds=delay), give_up_at),
            "last_error": attempt.error,
        }
    async with deps.engine.begin() as connection:
        result = await connection.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == row.id, DELIVERIES.c.attempts == row.attempts)
            .values(**values)
        )
        if result.rowcount != 1:
            return "lost"
        if outcome != "retried":
            data: dict[str, object] = {
                "sid": str(row.ended.session_id),
                "jti": row.ended.jti,
                "attempts": row.attempts,
            }
            if outcome == "failed":
                data["last_error"] = attempt.error
            await record_audit_core(
                connection,
                action=f"backchannel_logout.{outcome}",
                actor=WORKER_ACTOR,
                subject=str(row.ended.user_id),
                client_id=row.ended.client_id,
                data=data,
                now=now,
            )
    emit = log.info if outcome == "delivered" else log.warning
    emit(
        f"backchannel_logout.{outcome}",
        client_id=row.ended.client_id,
        sid=str(row.ended.session_id),
        attempts=row.attempts,
        error=attempt.error,
    )
    return outcome
