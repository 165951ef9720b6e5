"""Refreshes whose answers a broker process could lose, against real ``broker serve`` processes
on PostgreSQL (docs/security.md "Refresh-token rotation and reuse", docs/http-api.md "When a
refresh fails").

Refreshes are held in flight deterministically: the test holds row locks on their
``refresh_tokens`` rows in a transaction of its own, so the broker's rotation statements wait in
PostgreSQL until it lets go.

- ``SIGTERM`` (a rolling deploy): the broker stops accepting connections, the held refreshes
  finish with their 200 once released, and the process exits within its grace time.
- ``SIGKILL`` (a crash): rotations the database committed lose their answers; each client
  retries the token it holds against the restarted broker and gets the same successor back,
  with nothing revoked and no reuse alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from broker.cli.main import GRACEFUL_SHUTDOWN_SECONDS
from shared.auth_sessions import create_session
from shared.crypto.keyring import Keyring
from shared.crypto.opaque import token_hash
from shared.db.database import create_engine
from shared.db.tables import AUDIT_TABLE, REFRESH_TOKENS, SESSIONS, USERS
from shared.refresh_rotation.policy import RotationPolicy
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import RunningProcess, dev_broker_process, free_port

ROOT = Path(__file__).resolve().parents[2]
POOL_SIZE = 10  # per broker: the hot path opens up to this many connections, held ones included


@dataclass
class Seeded:
    """A user with one session per client, and the database the broker runs on."""

    engine: AsyncEngine
    user_id: uuid.UUID
    tokens: list[str]

    async def waiting_on_locks(self) -> int:
        """Backends of this database waiting for a lock (the held rotation statements)."""
        async with self.engine.connect() as connection:
            count = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        return int(count or 0)

    async def until_waiting(self, count: int, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while (waiting := await self.waiting_on_locks()) < count:
            assert time.monotonic() < deadline, f"{waiting} of {count} refreshes reached the lock"
            await asyncio.sleep(0.02)

    async def until_no_statement_runs(self, seconds: float = 10.0) -> None:
        """Every other backend of this database is idle or gone (a killed broker's too)."""
        deadline = time.monotonic() + seconds
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state NOT IN ('idle')"
        )
        while True:
            async with self.engine.connect() as connection:
                running = int(await connection.scalar(query) or 0)
            if running == 0:
                return
            assert time.monotonic() < deadline, f"{running} statements still run"
            await asyncio.sleep(0.05)

    async def outcome(self) -> dict[str, int]:
        """What happened to the user's sessions, from the database."""
        async with self.engine.connect() as connection:
            revoked = await connection.scalar(
                select(func.count())
                .select_from(SESSIONS)
                .where(SESSIONS.c.user_id == self.user_id, SESSIONS.c.revoked_at.is_not(None))
            )
            actions = dict(
                (
                    await connection.execute(
                        select(AUDIT_TABLE.c.action, func.count())
                        .where(
                            AUDIT_TABLE.c.subject == str(self.user_id),
                            AUDIT_TABLE.c.action.like("refresh_token.%"),
                        )
                        .group_by(AUDIT_TABLE.c.action)
                    )
                ).all()
            )
        return {
            "revoked_sessions": int(revoked or 0),
            "rotated": int(actions.get("refresh_token.rotated", 0)),
            "retried": int(actions.get("refresh_token.retried", 0)),
            "reuse_detected": int(actions.get("refresh_token.reuse_detected", 0)),
        }

    async def retried_sessions(self) -> set[str]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(AUDIT_TABLE.c.data["sid"].as_string()).where(
                    AUDIT_TABLE.c.subject == str(self.user_id),
                    AUDIT_TABLE.c.action == "refresh_token.retried",
                )
            )
            return set(rows.scalars())


@contextlib.asynccontextmanager
async def _row_locks(engine: AsyncEngine, tokens: list[str]) -> AsyncIterator[None]:
    """Hold ``FOR UPDATE`` locks on these tokens' rows until the block ends (then roll back)."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        locked = await connection.execute(
            select(REFRESH_TOKENS.c.token_hash)
            .where(REFRESH_TOKENS.c.token_hash.in_([token_hash(t) for t in tokens]))
            .with_for_update()
        )
        assert len(locked.all()) == len(tokens)
        try:
            yield
        finally:
            await transaction.rollback()


@contextlib.asynccontextmanager
async def _seeded(database_url: str, clients: int) -> AsyncIterator[Seeded]:
    """A new user with ``clients`` sessions of the public client ``web``."""
    engine = create_engine(database_url, pool_size=2)
    now = dt.datetime.now(dt.UTC)
    user_id = uuid.uuid4()
    tokens = []
    async with engine.begin() as connection:
        await connection.execute(
            insert(USERS).values(
                id=user_id,
                email=f"{user_id.hex}@example.test",
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
        for _ in range(clients):
            grant = await create_session(
                connection,
                user_id=user_id,
                client_id="web",
                provider="dev",
                profile_id=None,
                scope="openid",
                auth_time=now,
                now=now,
                refresh_ttl=3600,
            )
            tokens.append(grant.refresh_token)
    try:
        yield Seeded(engine, user_id, tokens)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _broker(
    directory: Path, database_url: str, keyring: Keyring, port: int
) -> AsyncIterator[RunningProcess]:
    """``broker serve`` on ``port``; started in a thread so this loop's clients keep running."""
    manager = dev_broker_process(
        directory,
        database_url=database_url,
        keyring=keyring,
        cwd=str(ROOT),
        port=port,
        BROKER_DB_POOL_SIZE=str(POOL_SIZE),
    )
    _issuer, process = await asyncio.to_thread(manager.__enter__)
    try:
        yield process
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


def _form(token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, "client_id": "web"}


@pytest.fixture
def successor(keyring: Keyring) -> Callable[[str], str]:
    """The successor the broker derives for a token (its keyring is this run's)."""
    return RotationPolicy.build(keyring, refresh_ttl=3600, reuse_interval=60).successor


async def test_sigterm_drains_refreshes_held_in_flight_and_refuses_new_connections(
    tmp_path, database_url, keyring, successor
):
    held = 8
    port = free_port()
    async with (
        _seeded(database_url, held) as seeded,
        _broker(tmp_path, database_url, keyring, port) as process,
        httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        async with _row_locks(seeded.engine, seeded.tokens):
            in_flight = [
                asyncio.create_task(http.post("/token", data=_form(token)))
                for token in seeded.tokens
            ]
            await seeded.until_waiting(held)  # each rotation statement waits on its row
            process.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(1)
            assert process.process.poll() is None  # draining, not gone
            with pytest.raises(OSError):  # no new connections once shutdown began
                await asyncio.open_connection("127.0.0.1", port)
            assert not any(task.done() for task in in_flight)
        # The locks are released: every held refresh completes, with its real successor.
        answers = await asyncio.gather(*in_flight)
        assert [answer.status_code for answer in answers] == [200] * held
        assert [answer.json()["refresh_token"] for answer in answers] == [
            successor(token) for token in seeded.tokens
        ]
        status = await asyncio.to_thread(process.process.wait, GRACEFUL_SHUTDOWN_SECONDS)
        # uvicorn shuts down cleanly, then exits by re-raising the signal (status 143 in a pod).
        assert status == -signal.SIGTERM
        assert time.monotonic() - signalled < GRACEFUL_SHUTDOWN_SECONDS
        assert "Application shutdown complete" in process.read_log()
        assert await seeded.outcome() == {
            "revoked_sessions": 0,
            "rotated": held,
            "retried": 0,
            "reuse_detected": 0,
        }


@dataclass
class Client:
    """A relying party refreshing its session in a loop; what it saw around the kill."""

    token: str
    answered: int = 0  # refreshes answered before the broker died
    lost: str | None = None  # the token whose refresh was sent and never answered
    retries: int = 0  # attempts with the same token until an answer came
    after_kill: list[str] = field(default_factory=list)  # refresh tokens answered after it


async def _run_client(http: httpx2.AsyncClient, client: Client, killed: asyncio.Event) -> None:
    """Refresh until the broker dies; then retry the token held until an answer comes (as
    docs/http-api.md "When a refresh fails" says), and refresh once more with the new token."""
    backoff = 0.1
    while len(client.after_kill) < 2:
        try:
            answer = await http.post("/token", data=_form(client.token))
        except httpx2.TransportError as exc:
            assert killed.is_set(), f"a refresh failed while the broker ran: {exc!r}"
            if client.retries == 0 and not isinstance(exc, httpx2.ConnectError):
                client.lost = client.token  # sent, and the connection died under it
            client.retries += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
            continue
        assert answer.status_code == 200, answer.text
        client.token = answer.json()["refresh_token"]
        if client.retries:
            client.after_kill.append(client.token)
        else:
            client.answered += 1


async def test_a_broker_killed_mid_refresh_loses_no_session(
    tmp_path, database_url, keyring, successor
):
    clients, held = 40, 6
    port = free_port()
    killed = asyncio.Event()
    async with (
        _seeded(database_url, clients) as seeded,
        httpx2.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            limits=httpx2.Limits(max_connections=clients),
        ) as http,
    ):
        fleet = [Client(token) for token in seeded.tokens]
        async with _broker(tmp_path, database_url, keyring, port) as first:
            async with _row_locks(seeded.engine, seeded.tokens[:held]):
                runners = [asyncio.create_task(_run_client(http, c, killed)) for c in fleet]
                # Mid-run: the held clients' rotations wait in PostgreSQL while the others
                # refresh freely.
                await seeded.until_waiting(held)
                deadline = time.monotonic() + 10
                while sum(c.answered for c in fleet) < 100:
                    assert time.monotonic() < deadline and not any(r.done() for r in runners)
                    await asyncio.sleep(0.02)
                killed.set()
                first.process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(first.process.wait, 5)
            # The locks are gone: the dead broker's held statements take their rows and commit,
            # rotations whose answers nobody will read.
            await seeded.until_no_statement_runs()
            rotated_at_the_kill = (await seeded.outcome())["rotated"]
        # The same database and port: the clients' retries find the restarted broker.
        async with _broker(tmp_path, database_url, keyring, port):
            await asyncio.wait_for(asyncio.gather(*runners), 20)

        outcome = await seeded.outcome()
        answered = sum(c.answered for c in fleet)
        lost = [c for c in fleet if c.lost is not None]
        report = {
            "clients": clients,
            "refreshes_answered_before_the_kill": answered,
            "refreshes_in_flight_at_the_kill": len(lost),
            "rotations_committed_but_unanswered": rotated_at_the_kill - answered,
            **outcome,
        }
        print(f"\nkill test: {report}")
        assert outcome["revoked_sessions"] == 0, report
        assert outcome["reuse_detected"] == 0, report
        # Every rotation that committed without an answer came back as a retry, got its
        # successor again and was audited as one; the held ones are among them.
        assert all(client.lost == token for client, token in zip(fleet, seeded.tokens[:held]))
        assert outcome["retried"] == rotated_at_the_kill - answered >= held, report
        assert len(await seeded.retried_sessions()) == outcome["retried"]
        for client in lost:
            # The retry's answer is the lost answer's successor; the next refresh moved on.
            assert client.after_kill[0] == successor(client.lost)
        for client in fleet:
            assert client.after_kill[1] == successor(client.after_kill[0])
