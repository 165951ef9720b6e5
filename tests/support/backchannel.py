"""Back-channel logout in tests: the relying-party stand-in as a process, and reading the outbox
until it has taken a given session's revocation."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.db.tables import AUDIT_TABLE, LOGOUT_DELIVERIES
from shared.jobs.audit_cursor import read_cursor
from shared.jobs.base import JobDeps
from shared.jobs.logout_outbox import OUTBOX_CURSOR, collect_batch
from sqlalchemy import select

from tests.support.processes import free_port, run_process

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def relying_party(issuer: str, client_id: str, *, alg: str = "RS256") -> Iterator[str]:
    """``standins.relying_party`` on a free port for ``client_id`` of ``issuer``; its base URL
    (the logout endpoint is ``{url}/backchannel-logout``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "standins.relying_party", "--port", str(port)]
    command += ["--issuer", issuer, "--client-id", client_id, "--alg", alg]
    with run_process(command, ready_url=f"{url}/_control/logouts", cwd=str(ROOT)):
        yield url


async def revocation_positions(deps: JobDeps, session_ids: list[uuid.UUID]) -> list[Any]:
    """The ``(txid, id)`` of each session's ``session.revoked`` audit row."""
    sids = [str(session_id) for session_id in session_ids]
    async with deps.engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE.c.txid, AUDIT_TABLE.c.id).where(
                AUDIT_TABLE.c.action == "session.revoked",
                AUDIT_TABLE.c.data["sid"].as_string().in_(sids),
            )
        )
        return [(row.txid or 0, row.id) for row in rows]


async def collect_past(deps: JobDeps, *session_ids: uuid.UUID) -> list[Any]:
    """Read the outbox until its cursor is past the revocation of every one of ``session_ids``
    (a transaction open anywhere on the server holds rows back for a moment); the delivery rows
    of those sessions."""
    positions = await revocation_positions(deps, list(session_ids))
    assert len(positions) == len(session_ids), "every session was revoked exactly once"
    async with asyncio.timeout(30):
        while True:
            await collect_batch(deps, 5000)
            async with deps.engine.connect() as connection:
                cursor = await read_cursor(connection, OUTBOX_CURSOR)
            if cursor is not None and cursor.position >= max(positions):
                break
            await asyncio.sleep(0.05)
    return await deliveries_of(deps, *session_ids)


async def deliveries_of(deps: JobDeps, *session_ids: uuid.UUID) -> list[Any]:
    async with deps.engine.connect() as connection:
        rows = await connection.execute(
            select(LOGOUT_DELIVERIES)
            .where(LOGOUT_DELIVERIES.c.session_id.in_(session_ids))
            .order_by(LOGOUT_DELIVERIES.c.created_at, LOGOUT_DELIVERIES.c.client_id)
        )
        return list(rows.all())
