"""Audit exports write the same values on PostgreSQL (lines built by the database) and SQLite
(lines built in Python): times with ``Z``, CSV quoting and formula escaping, keyset batches;
and a download that is abandoned leaves its read-ahead to finish and return its connection."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from broker.admin.audit import filtered_events
from broker.admin.audit_export import export_lines
from shared.audit import audit_values
from shared.db.database import create_engine
from shared.db.migrate import upgrade_to_head_async
from shared.db.tables import AUDIT_TABLE
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration

AT = dt.datetime(2031, 5, 1, 10, 0, tzinfo=dt.UTC)
# (occurred_at, action, actor, client_id, ip, data): values a spreadsheet or a CSV parser trips on.
EVENTS: list[tuple[dt.datetime, str, str, str | None, str | None, dict[str, Any]]] = [
    (AT, "user.signed_in", 'corp:=HYPERLINK("http://x")', None, None, {"provider": "corp"}),
    (AT, "user.updated", "-2+3", "web", "203.0.113.5", {"fields": ["name"], "note": 'a, "b"\nc'}),
    (AT + dt.timedelta(microseconds=120), "link.refused", "@SUM(A1)", "a,b", "::1", {}),
    (AT + dt.timedelta(seconds=1), "session.revoked", "+x", "line\rbreak", "", {"sid": "s"}),
    (AT + dt.timedelta(seconds=2), "user.created", "dev:plain", "web", "10.0.0.1", {"n": 1}),
    (AT + dt.timedelta(seconds=3), "user.disabled", "=1+1", '=a,"b"', None, {}),
    (AT + dt.timedelta(seconds=4), "user.enabled", "\tcmd", "multi\nline", None, {}),
    (AT + dt.timedelta(seconds=5), "admin.granted", "\rcr", "web", None, {}),
    (AT + dt.timedelta(seconds=6), "user.deleted", "corp:bob", "", "", {"a": "=b"}),
]
EXPECTED_TIMES = [
    "2031-05-01T10:00:06Z",
    "2031-05-01T10:00:05Z",
    "2031-05-01T10:00:04Z",
    "2031-05-01T10:00:03Z",
    "2031-05-01T10:00:02Z",
    "2031-05-01T10:00:01Z",
    "2031-05-01T10:00:00.000120Z",
    "2031-05-01T10:00:00Z",
    "2031-05-01T10:00:00Z",
]
# What a spreadsheet reads as a formula gets a leading quote (CWE-1236, OWASP's list).
ESCAPED = {
    "-2+3": "'-2+3",
    "@SUM(A1)": "'@SUM(A1)",
    "+x": "'+x",
    "=1+1": "'=1+1",
    '=a,"b"': '\'=a,"b"',
    "\tcmd": "'\tcmd",
    "\rcr": "'\rcr",
}


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
        await upgrade_to_head_async(url)
    else:
        # Not UTC: the exported times must not depend on the session's TimeZone.
        options = {"options": "-c TimeZone=Asia/Kathmandu"}
        url = make_url(database_url).update_query_dict(options).render_as_string(False)
    engine = create_engine(url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _write_events(engine: AsyncEngine) -> str:
    subject = f"export-{uuid.uuid4().hex}"
    async with engine.begin() as connection:
        for occurred_at, action, actor, client_id, ip, data in EVENTS:
            values = audit_values(
                action=action,
                actor=actor,
                subject=subject,
                now=occurred_at,
                client_id=client_id,
                ip=ip,
                data=data,
            )
            await connection.execute(insert(AUDIT_TABLE).values(**values))
    return subject


async def _export(engine: AsyncEngine, subject: str, export: str, batch_size: int) -> str:
    statement = filtered_events({"subject": subject})
    chunks = [
        chunk async for chunk in export_lines(engine, statement, export, batch_size=batch_size)
    ]
    return b"".join(chunks).decode()


async def _stored(engine: AsyncEngine, subject: str) -> list[tuple[int, str]]:
    """(id, event_id) of the written events, newest first as exported."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(AUDIT_TABLE.c.id, AUDIT_TABLE.c.event_id)
            .where(AUDIT_TABLE.c.subject == subject)
            .order_by(AUDIT_TABLE.c.occurred_at.desc(), AUDIT_TABLE.c.id.desc())
        )
        return [(row.id, str(row.event_id)) for row in rows]


def _expected(subject: str, stored: list[tuple[int, str]]) -> list[dict[str, Any]]:
    newest_first = sorted(enumerate(EVENTS), key=lambda item: (item[1][0], item[0]), reverse=True)
    return [
        {
            "id": row_id,
            "event_id": event_id,
            "occurred_at": occurred,
            "action": action,
            "actor": actor,
            "subject": subject,
            "client_id": client_id,
            "ip": ip,
            "data": data,
        }
        for (row_id, event_id), occurred, (_, (_, action, actor, client_id, ip, data)) in zip(
            stored, EXPECTED_TIMES, newest_first, strict=True
        )
    ]


@pytest.mark.parametrize("batch_size", [3, 4, 1000])
async def test_json_lines_carry_every_event_newest_first(
    engine: AsyncEngine, batch_size: int
) -> None:
    subject = await _write_events(engine)
    text = await _export(engine, subject, "jsonl", batch_size)

    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == len(EVENTS)  # a newline inside a value is escaped
    expected = _expected(subject, await _stored(engine, subject))
    assert [json.loads(line) for line in lines] == expected


@pytest.mark.parametrize("batch_size", [3, 4, 1000])
async def test_csv_quotes_like_pythons_writer_and_escapes_formulas(
    engine: AsyncEngine, batch_size: int
) -> None:
    subject = await _write_events(engine)
    text = await _export(engine, subject, "csv", batch_size)

    expected = _expected(subject, await _stored(engine, subject))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(expected[0])
    assert len(rows) == len(expected) + 1
    for row, event_ in zip(rows[1:], expected, strict=True):
        *fields, data = row
        assert json.loads(data) == event_["data"]
        plain = ["" if event_[name] is None else str(event_[name]) for name in list(event_)[:-1]]
        assert fields == [ESCAPED.get(value, value) for value in plain]
    # Byte for byte what the csv module writes (quoting, CRLF), whatever the JSON spacing.
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    assert text == buffer.getvalue()
    assert "'=1+1," in text and ',"\'=a,""b""",' in text and '"multi\nline"' in text
    assert 'corp:=HYPERLINK(""http://x"")' in text  # not at the start: quoted, not escaped


async def test_a_cancelled_download_lets_its_read_finish(database_url: str) -> None:
    """A client that goes away mid-read (Starlette cancels the response task) does not cancel
    the statement: the read finishes and its connection goes back to the pool, not away."""
    engine = create_engine(database_url, pool_size=2)
    invalidated: list[object] = []
    event.listen(engine.sync_engine, "invalidate", lambda *args: invalidated.append(args))
    try:
        subject = await _write_events(engine)
        async with engine.connect() as blocker:
            await blocker.execute(text("LOCK TABLE audit_actions IN ACCESS EXCLUSIVE MODE"))
            statement = filtered_events({"subject": subject})
            download = export_lines(engine, statement, "jsonl", batch_size=2)
            reader = asyncio.create_task(anext(download))
            await _until(lambda: _waiting_on_lock(blocker))
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]  # still reading
            await blocker.rollback()  # the lock goes: the read completes
        await _until(lambda: _no_connection_out(engine))
        assert invalidated == []
    finally:
        await engine.dispose()


async def _until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _no_connection_out(engine: AsyncEngine) -> bool:
    return engine.pool.checkedout() == 0  # type: ignore[attr-defined,no-any-return]


async def _waiting_on_lock(blocker: Any) -> bool:
    """Whether a statement waits for the blocker's lock on the audit table (live, not a
    statistics snapshot: ``pg_locks`` is read anew each time)."""
    waiting = await blocker.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND relation = 'audit_actions'::regclass"
        )
    )
    return bool(waiting.scalar_one())
