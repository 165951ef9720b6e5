"""The housekeeping job on PostgreSQL and SQLite: what it purges, what it keeps, in bounded batches.

The PostgreSQL database is shared with the rest of the run, so every row here is dated around
2001, before any other test's rows: at that clock the job can reach nothing but this test's rows,
which are removed afterwards.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from broker.http.errors import InvalidClient
from broker.oauth.client_assertions import VerifiedAssertion, record_assertion
from broker.oauth.service_tokens import revoke_service_token
from pydantic import ValidationError
from shared.auth_sessions import create_session, revoke_session
from shared.clock import FrozenClock
from shared.crypto.opaque import token_hash
from shared.db.database import create_engine
from shared.db.migrate import upgrade_to_head
from shared.db.tables import (
    AUDIT_TABLE,
    CLIENT_ASSERTIONS,
    CODES,
    LOGIN_STATES,
    LOGOUT_DELIVERIES,
    REFRESH_TOKENS,
    REVOKED_ACCESS_TOKENS,
    SESSIONS,
    USERS,
)
from shared.jobs.base import JobDeps, JobName, JobResult
from shared.jobs.housekeeping import HousekeepingPayload, run_housekeeping
from shared.jobs.registry import job_spec
from shared.logging import redact_secrets
from shared.refresh_rotation.outcomes import RotationError, RotationFailure
from shared.refresh_rotation.policy import RotationPolicy
from shared.refresh_rotation.portable import rotate_in_transaction
from shared.settings import make_settings
from sqlalchemy import Column, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration

EPOCH = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
DAY = 86400
SECOND = dt.timedelta(seconds=1)
CLIENT = "web"


@pytest.fixture(params=["postgresql", "sqlite"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The run's PostgreSQL database, or a SQLite file built by the same migrations.

    Synchronous: the migrations run their own event loop.
    """
    if request.param == "postgresql":
        url: str = request.getfixturevalue("database_url")
        return url
    url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    upgrade_to_head(url)
    return url


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(backend_url, pool_size=2)
    yield engine
    await engine.dispose()


class Rows:
    """This test's rows, made with the real tables and functions, and removed afterwards."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.user_id = uuid.uuid4()
        self.session_ids: list[uuid.UUID] = []
        self.orphan_hashes: list[bytes] = []
        self.login_state_ids: list[uuid.UUID] = []

    async def add_user(self) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(USERS).values(
                    id=self.user_id,
                    email=f"{self.user_id.hex[:8]}@example.test",
                    email_verified=True,
                    status="active",
                    created_at=EPOCH,
                    updated_at=EPOCH,
                )
            )

    async def session(
        self, *, at: dt.datetime, ttl: int, revoked_at: dt.datetime | None = None
    ) -> tuple[uuid.UUID, str]:
        """A session started at ``at`` (its first token lives ``ttl``), revoked if asked."""
        async with self.engine.begin() as connection:
            grant = await create_session(
                connection,
                user_id=self.user_id,
                client_id=CLIENT,
                provider="dev",
                profile_id=None,
                scope="openid",
                auth_time=at,
                now=at,
                refresh_ttl=ttl,
            )
            if revoked_at is not None:
                await revoke_session(
                    connection, grant.session_id, now=revoked_at, reason="logout", actor="test"
                )
        self.session_ids.append(grant.session_id)
        return grant.session_id, grant.refresh_token

    async def token(
        self,
        session_id: uuid.UUID,
        *,
        expires_at: dt.datetime,
        used_at: dt.datetime | None = None,
    ) -> bytes:
        hashed: bytes = token_hash(uuid.uuid4().hex)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(REFRESH_TOKENS).values(
                    token_hash=hashed,
                    session_id=session_id,
                    created_at=EPOCH,
                    expires_at=expires_at,
                    used_at=used_at,
                )
            )
        if session_id not in self.session_ids:
            self.orphan_hashes.append(hashed)
        return hashed

    async def code(
        self,
        *,
        expires_at: dt.datetime,
        used_at: dt.datetime | None = None,
        session_id: uuid.UUID | None = None,
    ) -> bytes:
        hashed: bytes = token_hash(uuid.uuid4().hex)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(CODES).values(
                    code_hash=hashed,
                    client_id=CLIENT,
                    redirect_uri="http://127.0.0.1:3000/callback",
                    user_id=self.user_id,
                    provider="dev",
                    scope="openid",
                    auth_time=EPOCH,
                    created_at=EPOCH,
                    expires_at=expires_at,
                    used_at=used_at,
                    session_id=session_id,
                )
            )
        return hashed

    async def login_state(self, *, expires_at: dt.datetime) -> uuid.UUID:
        state_id = uuid.uuid4()
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(LOGIN_STATES).values(
                    id=state_id,
                    state_hash=token_hash(state_id.hex),
                    browser_hash=token_hash("browser"),
                    provider="dev",
                    purpose="login",
                    client_id=CLIENT,
                    redirect_uri="http://127.0.0.1:3000/callback",
                    scope="openid",
                    upstream_nonce="nonce",
                    code_verifier_enc=b"sealed",
                    created_at=EPOCH,
                    expires_at=expires_at,
                )
            )
        self.login_state_ids.append(state_id)
        return state_id

    async def delivery(
        self,
        *,
        next_attempt_at: dt.datetime | None,
        delivered_at: dt.datetime | None = None,
        failed_at: dt.datetime | None = None,
    ) -> uuid.UUID:
        """A Logout Token owed to ``CLIENT`` for a session of this user."""
        delivery_id = uuid.uuid4()
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(LOGOUT_DELIVERIES).values(
                    id=delivery_id, event_id=uuid.uuid4(), client_id=CLIENT,
                    session_id=uuid.uuid4(), user_id=self.user_id, jti=delivery_id.hex,
                    revoked_at=EPOCH, created_at=EPOCH, attempts=1,
                    next_attempt_at=next_attempt_at, delivered_at=delivered_at,
                    failed_at=failed_at,
                )
            )  # fmt: skip
        return delivery_id

    async def delivery_exists(self, delivery_id: uuid.UUID) -> bool:
        return await self._exists(LOGOUT_DELIVERIES.c.id, delivery_id)

    async def session_exists(self, session_id: uuid.UUID) -> bool:
        return await self._exists(SESSIONS.c.id, session_id)

    async def token_exists(self, hashed: bytes) -> bool:
        return await self._exists(REFRESH_TOKENS.c.token_hash, hashed)

    async def code_exists(self, hashed: bytes) -> bool:
        return await self._exists(CODES.c.code_hash, hashed)

    async def login_state_exists(self, state_id: uuid.UUID) -> bool:
        return await self._exists(LOGIN_STATES.c.id, state_id)

    async def _exists(self, key: Column[Any], value: object) -> bool:
        async with self.engine.connect() as connection:
            found = await connection.scalar(select(key).where(key == value))
        return found is not None

    async def remove(self) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(REFRESH_TOKENS).where(
                    REFRESH_TOKENS.c.session_id.in_(self.session_ids)
                    | REFRESH_TOKENS.c.token_hash.in_(self.orphan_hashes)
                )
            )
            await connection.execute(
                delete(LOGIN_STATES).where(LOGIN_STATES.c.id.in_(self.login_state_ids))
            )
            await connection.execute(
                delete(LOGOUT_DELIVERIES).where(LOGOUT_DELIVERIES.c.user_id == self.user_id)
            )
            # Sessions and codes go with their user (ON DELETE CASCADE).
            await connection.execute(delete(USERS).where(USERS.c.id == self.user_id))


@pytest.fixture
async def rows(engine: AsyncEngine) -> AsyncIterator[Rows]:
    made = Rows(engine)
    await made.add_user()
    yield made
    await made.remove()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def job_deps(
    engine: AsyncEngine, http: httpx2.AsyncClient, clock: FrozenClock, *, retention: int
) -> JobDeps:
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        session_retention=retention,
    )
    return JobDeps(settings=settings, engine=engine, http=http, clock=clock)


def counts(
    codes: int = 0,
    login_states: int = 0,
    refresh_tokens: int = 0,
    sessions: int = 0,
    tokens_of_sessions: int = 0,
    logout_deliveries: int = 0,
    client_assertions: int = 0,
    revoked_access_tokens: int = 0,
) -> JobResult:
    return {
        "authorization_codes": codes,
        "login_states": login_states,
        "client_assertions": client_assertions,
        "revoked_access_tokens": revoked_access_tokens,
        "refresh_tokens": refresh_tokens,
        "sessions": sessions,
        "logout_deliveries": logout_deliveries,
        "refresh_tokens_of_sessions": tokens_of_sessions,
    }


async def test_expired_rows_go_and_a_rotated_token_stays_until_its_own_expiry(
    engine: AsyncEngine, rows: Rows, http: httpx2.AsyncClient
) -> None:
    ttl = 10 * DAY
    now = EPOCH + dt.timedelta(seconds=ttl + 3600)  # the first token expired an hour ago
    clock = FrozenClock(now)
    deps = job_deps(engine, http, clock, retention=7 * DAY)
    policy = RotationPolicy.build(deps.settings.keyring, refresh_ttl=ttl, reuse_interval=0)

    async def rotate(presented: str, at: dt.datetime) -> str:
        async with engine.begin() as connection:
            grant = await rotate_in_transaction(
                connection, policy, presented=presented, client_id=CLIENT, now=at
            )
        refresh_token: str = grant.refresh_token
        return refresh_token

    session_id, first = await rows.session(at=EPOCH, ttl=ttl)
    second = await rotate(first, EPOCH + dt.timedelta(days=1))
    newest = await rotate(second, EPOCH + dt.timedelta(days=2))
    orphan = await rows.token(uuid.uuid4(), expires_at=now - dt.timedelta(seconds=1))
    expired_code = await rows.code(expires_at=now - dt.timedelta(seconds=1))
    expired_used_code = await rows.code(expires_at=now, used_at=now - dt.timedelta(seconds=30))
    live_used_code = await rows.code(
        expires_at=now + dt.timedelta(seconds=30), used_at=now - dt.timedelta(seconds=10)
    )
    live_code = await rows.code(expires_at=now + dt.timedelta(seconds=30))
    expired_login = await rows.login_state(expires_at=now - dt.timedelta(seconds=1))
    live_login = await rows.login_state(expires_at=now + dt.timedelta(seconds=600))

    result = await run_housekeeping(HousekeepingPayload(), deps)

    assert result == counts(codes=2, login_states=1, refresh_tokens=2)
    assert not await rows.code_exists(expired_code)
    assert not await rows.code_exists(expired_used_code)
    assert await rows.code_exists(live_used_code)  # presented again, it still revokes
    assert await rows.code_exists(live_code)
    assert not await rows.login_state_exists(expired_login)
    assert await rows.login_state_exists(live_login)
    assert not await rows.token_exists(token_hash(first))  # rotated, and past its expiry
    assert not await rows.token_exists(orphan)
    assert await rows.token_exists(token_hash(second))  # rotated, but within its lifetime
    assert await rows.token_exists(token_hash(newest))
    assert await rows.session_exists(session_id)

    # RFC 9700 §4.14.2: the kept rotated token, presented again, still revokes the family.
    clock.advance(60)
    async with engine.begin() as connection:
        with pytest.raises(RotationError) as replay:
            await rotate_in_transaction(
                connection, policy, presented=second, client_id=CLIENT, now=clock.now()
            )
    assert replay.value.failure is RotationFailure.REUSED
    async with engine.begin() as connection:
        with pytest.raises(RotationError) as after:
            await rotate_in_transaction(
                connection, policy, presented=newest, client_id=CLIENT, now=clock.now()
            )
    assert after.value.failure is RotationFailure.REVOKED


async def test_spent_assertion_jtis_and_revoked_service_tokens_go_once_they_expire(
    engine: AsyncEngine, http: httpx2.AsyncClient
) -> None:
    now = EPOCH + dt.timedelta(days=1)
    client_id = f"svc-{uuid.uuid4().hex[:8]}"
    spent = VerifiedAssertion(client_id, "spent", now - dt.timedelta(seconds=1))
    current = VerifiedAssertion(client_id, "current", now + dt.timedelta(seconds=60))
    for assertion in (spent, current):
        await record_assertion(engine, assertion)
    async with engine.begin() as connection:
        for jti, exp in (
            (f"gone-{client_id}", now - 1 * SECOND),
            (f"kept-{client_id}", now + 60 * SECOND),
        ):
            claims = {"jti": jti, "client_id": client_id, "exp": int(exp.timestamp())}
            await revoke_service_token(connection, claims, now=EPOCH, actor=f"client:{client_id}")

    result = await run_housekeeping(
        HousekeepingPayload(), job_deps(engine, http, FrozenClock(now), retention=7 * DAY)
    )

    assert result == counts(client_assertions=1, revoked_access_tokens=1)
    # The current assertion is still spent: presented again, it is refused.
    with pytest.raises(InvalidClient):
        await record_assertion(engine, current)
    async with engine.begin() as connection:
        kept = await connection.scalars(
            select(REVOKED_ACCESS_TOKENS.c.jti).where(
                REVOKED_ACCESS_TOKENS.c.client_id == client_id
            )
        )
        assert list(kept) == [f"kept-{client_id}"]
        await connection.execute(
            delete(REVOKED_ACCESS_TOKENS).where(REVOKED_ACCESS_TOKENS.c.client_id == client_id)
        )
        await connection.execute(
            delete(CLIENT_ASSERTIONS).where(CLIENT_ASSERTIONS.c.client_id == client_id)
        )
        await connection.execute(delete(AUDIT_TABLE).where(AUDIT_TABLE.c.client_id == client_id))


async def test_sessions_are_kept_for_the_retention_window_then_purged_with_their_tokens(
    engine: AsyncEngine, rows: Rows, http: httpx2.AsyncClient
) -> None:
    retention = 7 * DAY
    now = EPOCH + dt.timedelta(days=30)

    def ago(days: float) -> dt.datetime:
        return now - dt.timedelta(days=days)

    revoked_long_ago, revoked_long_ago_token = await rows.session(
        at=ago(8), ttl=30 * DAY, revoked_at=ago(7.01)
    )
    revoked_lately, _ = await rows.session(at=ago(8), ttl=30 * DAY, revoked_at=ago(6.99))
    expired_long_ago, _ = await rows.session(at=ago(9), ttl=DAY)  # its token expired 8 days ago
    expired_lately, expired_lately_token = await rows.session(at=ago(3), ttl=DAY)
    live, _ = await rows.session(at=ago(1), ttl=30 * DAY)
    # A code still pointing at a session that goes: unlinked (SET NULL), not an FK violation.
    pointing = await rows.code(
        expires_at=now + dt.timedelta(seconds=30), session_id=revoked_long_ago
    )

    result = await run_housekeeping(
        HousekeepingPayload(), job_deps(engine, http, FrozenClock(now), retention=retention)
    )

    assert result == counts(sessions=2, tokens_of_sessions=2)
    assert not await rows.session_exists(revoked_long_ago)
    assert not await rows.token_exists(token_hash(revoked_long_ago_token))  # though unexpired
    assert not await rows.session_exists(expired_long_ago)
    assert await rows.session_exists(revoked_lately)
    assert await rows.session_exists(expired_lately)
    # The newest token of an ended family stays with its session: it says when the family ended.
    assert await rows.token_exists(token_hash(expired_lately_token))
    assert await rows.session_exists(live)
    async with engine.connect() as connection:
        linked = await connection.scalar(
            select(CODES.c.session_id).where(CODES.c.code_hash == pointing)
        )
    assert await rows.code_exists(pointing)
    assert linked is None


async def test_batches_are_bounded_and_the_next_run_carries_on(
    engine: AsyncEngine, rows: Rows, http: httpx2.AsyncClient
) -> None:
    now = EPOCH + dt.timedelta(days=30)
    expired = now - dt.timedelta(hours=1)
    live, _ = await rows.session(at=now - dt.timedelta(days=1), ttl=30 * DAY)
    for _ in range(3):
        await rows.code(expires_at=expired)
        await rows.login_state(expires_at=expired)
        await rows.token(live, expires_at=expired, used_at=expired - dt.timedelta(days=1))
        await rows.session(
            at=now - dt.timedelta(days=20), ttl=30 * DAY, revoked_at=now - dt.timedelta(days=10)
        )
    deps = job_deps(engine, http, FrozenClock(now), retention=7 * DAY)
    spec = job_spec(JobName.HOUSEKEEPING)

    with structlog.testing.capture_logs() as logs:
        first = await spec.run({"batch_size": 2, "max_batches": 1}, deps)
    second = await spec.run({"batch_size": 2, "max_batches": 1}, deps)
    third = await spec.run(HousekeepingPayload(batch_size=2), deps)

    assert first == counts(2, 2, 2, 2, tokens_of_sessions=2)
    assert second == counts(1, 1, 1, 1, tokens_of_sessions=1)
    assert third == counts()
    assert await rows.session_exists(live)
    (event,) = [entry for entry in logs if entry["event"] == "housekeeping.purged"]
    assert event["unfinished"] == [
        "authorization_codes",
        "login_states",
        "refresh_tokens",
        "sessions",
    ]  # not client_assertions or revoked_access_tokens: this test made none
    # The counts survive the log redactor (fields named like tokens or codes would not).
    redacted = redact_secrets(None, "info", dict(event))
    assert dict(redacted["purged"]) == first


async def test_finished_logout_deliveries_are_kept_for_the_retention_window_then_purged(
    engine: AsyncEngine, rows: Rows, http: httpx2.AsyncClient
) -> None:
    now = EPOCH + dt.timedelta(days=30)

    def ago(days: float) -> dt.datetime:
        return now - dt.timedelta(days=days)

    delivered_long_ago = await rows.delivery(next_attempt_at=None, delivered_at=ago(7.01))
    given_up_long_ago = await rows.delivery(next_attempt_at=None, failed_at=ago(8))
    delivered_lately = await rows.delivery(next_attempt_at=None, delivered_at=ago(6.99))
    # Still owed, however old: never purged (it is given up, and audited, by its own job).
    pending = await rows.delivery(next_attempt_at=ago(20))

    result = await run_housekeeping(
        HousekeepingPayload(), job_deps(engine, http, FrozenClock(now), retention=7 * DAY)
    )

    assert result == counts(logout_deliveries=2)
    assert not await rows.delivery_exists(delivered_long_ago)
    assert not await rows.delivery_exists(given_up_long_ago)
    assert await rows.delivery_exists(delivered_lately)
    assert await rows.delivery_exists(pending)


def test_the_payload_bounds_its_batches() -> None:
    spec = job_spec(JobName.HOUSEKEEPING)
    assert spec.parse({}) == HousekeepingPayload(batch_size=1000, max_batches=50)
    for wrong in ({"batch_size": 0}, {"batch_size": 10_001}, {"max_batches": 0}, {"limit": 1}):
        with pytest.raises(ValidationError):
            spec.parse(wrong)
