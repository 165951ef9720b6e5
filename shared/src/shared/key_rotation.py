"""Signing-key rotation: on a schedule, on demand, and after a key is revoked (docs/security.md
"JWKS and key rotation").

Per algorithm there is one signing key at a time. ``lead`` seconds before its ``interval`` is up,
the next key is created: published in JWKS at once, signing from its ``activates_at``, when the
current one retires. A retired key stays published until every token it signed has expired
(``expires_at``), then leaves JWKS. ``lead`` is at least the JWKS ``max-age``, so every resource
server has the next key cached before it sees a token signed with it.

Every broker replica runs :func:`maintain_keys` on a timer. On PostgreSQL an advisory lock
serialises them and each one re-reads the rows inside its transaction before it decides, so two
replicas never both create the next key (the pattern of Dex's ``server/signer/rotation.go``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.audit import record_audit
from shared.clock import Clock
from shared.crypto.keyring import Keyring
from shared.models import SigningKey
from shared.settings import Settings
from shared.signing_keys import KeyStore, can_sign, generate_signing_key

log = structlog.get_logger("shared.key_rotation")
ADVISORY_LOCK = 7270001  # pg_advisory_xact_lock key of signing-key changes


class UnknownKey(LookupError):
    """No signing key has this kid."""


@dataclass(frozen=True)
class KeySchedule:
    """How long a key signs, how early its successor is published, how long it stays after."""

    interval: dt.timedelta  # a key signs this long
    lead: dt.timedelta  # the next key is published this long before it signs
    manual_lead: dt.timedelta  # ``broker keys rotate``: the shortest safe lead, the JWKS max-age
    afterlife: dt.timedelta  # a retired key stays published this long (tokens it signed live)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeySchedule:
        longest_token = max(settings.access_token_ttl, settings.id_token_ttl)
        # Margin: replicas pick a change up within one reload interval, clocks drift a little.
        margin = 2 * settings.key_reload_interval + 60
        return cls(
            interval=dt.timedelta(seconds=settings.signing_key_rotation_interval),
            lead=dt.timedelta(seconds=settings.signing_key_lead),
            manual_lead=dt.timedelta(seconds=settings.jwks_max_age),
            afterlife=dt.timedelta(seconds=longest_token + margin),
        )


async def _locked_rows(session: AsyncSession, engine: AsyncEngine) -> list[SigningKey]:
    if engine.dialect.name == "postgresql":
        # Replicas deciding together: one decides, the others wait and see its rows.
        await session.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})"))
    return list((await session.scalars(select(SigningKey))).all())


def _retire(key: SigningKey, at: dt.datetime, schedule: KeySchedule) -> None:
    key.retires_at = at
    key.expires_at = at + schedule.afterlife


def _create(
    session: AsyncSession,
    alg: str,
    keyring: Keyring,
    now: dt.datetime,
    activates_at: dt.datetime,
    actor: str,
) -> SigningKey:
    row = generate_signing_key(alg, keyring, now, activates_at)
    session.add(row)
    record_audit(
        session,
        action="signing_key.created",
        actor=actor,
        subject=f"key:{row.kid}",
        data={"kid": row.kid, "alg": alg, "activates_at": activates_at.isoformat()},
        now=now,
    )
    return row


def _plan(
    session: AsyncSession,
    rows: list[SigningKey],
    alg: str,
    keyring: Keyring,
    schedule: KeySchedule,
    now: dt.datetime,
    actor: str,
    *,
    rotate_now: bool = False,
) -> None:
    """Bring one algorithm's keys in line with the schedule (inside the locked transaction)."""
    live = [r for r in rows if r.alg == alg and r.revoked_at is None]
    active = max((r for r in live if can_sign(r, now)), key=lambda r: r.activates_at, default=None)
    pending = min(
        (r for r in live if r.activates_at > now), key=lambda r: r.activates_at, default=None
    )
    if active is None:
        if pending is not None:
            # Nothing signs (the signing key was revoked): the published successor takes over.
            pending.activates_at = now
            return
        rows.append(_create(session, alg, keyring, now, now, actor))  # first start
        return
    if pending is not None:
        if rotate_now and pending.activates_at > now + schedule.manual_lead:
            pending.activates_at = now + schedule.manual_lead
            _retire(active, pending.activates_at, schedule)
        return
    due = active.activates_at + schedule.interval
    if rotate_now or now >= due - schedule.lead:
        starts = now + schedule.manual_lead if rotate_now else max(due, now + schedule.lead)
        rows.append(_create(session, alg, keyring, now, starts, actor))
        _retire(active, starts, schedule)


async def maintain_keys(
    engine: AsyncEngine,
    keyring: Keyring,
    schedule: KeySchedule,
    algorithms: Sequence[str],
    now: dt.datetime,
    *,
    rotate_now: bool = False,
    actor: str = "system",
) -> list[SigningKey]:
    """Create, schedule and retire keys as due; returns every key row, after the change."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        rows = await _locked_rows(session, engine)
        for alg in algorithms:
            _plan(session, rows, alg, keyring, schedule, now, actor, rotate_now=rotate_now)
    return rows


async def revoke_key(
    engine: AsyncEngine,
    keyring: Keyring,
    schedule: KeySchedule,
    algorithms: Sequence[str],
    kid: str,
    now: dt.datetime,
    *,
    actor: str,
) -> list[SigningKey]:
    """A compromised key: out of JWKS at once, its tokens refused; another key takes over."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        rows = await _locked_rows(session, engine)
        key = next((row for row in rows if row.kid == kid), None)
        if key is None:
            raise UnknownKey(kid)
        if key.revoked_at is None:
            key.revoked_at = now
            record_audit(
                session,
                action="signing_key.revoked",
                actor=actor,
                subject=f"key:{kid}",
                data={"kid": kid, "alg": key.alg},
                now=now,
            )
        for alg in algorithms:
            _plan(session, rows, alg, keyring, schedule, now, actor)
    return rows


async def load_keys(engine: AsyncEngine, store: KeyStore) -> None:
    """Install the keys as stored, changing nothing: for a process that signs but leaves the
    schedule to the brokers (the worker's Logout Tokens). Like the brokers, it signs only with
    a key that is already published and not revoked (``can_sign``)."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        rows = list((await session.scalars(select(SigningKey))).all())
    store.install(rows)


class KeyMaintainer:
    """Keeps a ``KeyStore`` current: runs the schedule and reloads the keys every ``interval``.

    Reloading is what makes another process's change (``broker keys revoke``, a replica's
    rotation) reach this one: within ``interval`` seconds.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        store: KeyStore,
        keyring: Keyring,
        schedule: KeySchedule,
        clock: Clock,
        interval: float,
    ) -> None:
        self._engine = engine
        self._store = store
        self._keyring = keyring
        self._schedule = schedule
        self._clock = clock
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> None:
        rows = await maintain_keys(
            self._engine, self._keyring, self._schedule, self._store.algorithms, self._clock.now()
        )
        self._store.install(rows)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError) as exc:
                # The database is away: keep signing with the keys we have, try again later.
                log.warning("signing_keys.maintenance_failed", error=type(exc).__name__)
