"""A small pool of raw psycopg connections for one-statement hot paths (the refresh rotation).

Each connection is in autocommit mode and keeps one reusable raw cursor (``$1`` placeholders,
binary results, server-side prepared statements), so a unit of work that is one statement costs
one round trip and one commit. Idle cursors wait in a FIFO; a caller that finds none grows the
pool up to ``max_size`` or waits (at most ``timeout`` seconds) and is handed the next released
cursor directly (first come, first served: no caller is overtaken). When a connection fails, it
and every idle one are closed (after a server restart they are all dead) and later checkouts
open new ones. Connections get a connect timeout and TCP keepalives unless the URL sets them.

With tracing on, the pool is a :class:`TracedHotPathPool`: each statement is a client span
(``shared.tracing.database``); off, nothing of tracing is on the path.

Why not ``psycopg_pool``: its checkout and return (locks, waiter objects, stats, the
transaction check and commit on return) cost more client CPU than executing the rotation
statement itself (measured: ~70 µs against ~115 µs per call on the development machine), and
the refresh grant is CPU-bound in the broker process. Everything else uses SQLAlchemy's pool.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import psycopg
from opentelemetry.trace import Tracer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from sqlalchemy.engine import make_url

from shared.db.database import normalize_database_url
from shared.tracing.database import StatementSpans

Row = tuple[Any, ...]
Cursor = psycopg.AsyncRawCursor[Row]

# Unless the database URL says otherwise: give up connecting after 10 s, and notice a peer
# that vanished (half-open TCP) within about a minute instead of the kernel's two hours.
CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


class PoolTimeout(psycopg.OperationalError):
    """No connection became free within the pool's timeout."""


class HotPathPool:
    """Up to ``max_size`` autocommit connections; opened lazily, one at ``open()``."""

    def __init__(self, conninfo: str, *, max_size: int, timeout: float = 10.0) -> None:
        given = conninfo_to_dict(conninfo)
        defaults = {name: value for name, value in CONNECTION_DEFAULTS.items() if name not in given}
        self._conninfo = make_conninfo(conninfo, **defaults)
        self._max_size = max_size
        self._timeout = timeout
        self._idle: deque[Cursor] = deque()
        # A waiter receives a cursor, or None: "a slot is yours, open a connection".
        self._waiters: deque[asyncio.Future[Cursor | None]] = deque()
        self._size = 0  # connections open or being opened
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def size(self) -> int:
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def max_size(self) -> int:
        return self._max_size

    async def open(self) -> None:
        """Open the first connection, so a wrong URL or a down database fails startup."""
        self._release(await self._checkout())

    async def close(self) -> None:
        """Close idle connections and refuse new checkouts; busy ones close when returned."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(psycopg.OperationalError("the hot-path pool is closed"))
        while self._idle:
            await self._idle.popleft().connection.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def fetchone(self, query: str, params: Sequence[Any]) -> Row | None:
        """Run one statement in its own transaction and return its first row.

        Raises ``psycopg.OperationalError`` when the connection fails (whether the statement
        committed is then unknown to the caller) and ``PoolTimeout`` when none is free.
        """
        rows = await self._execute(query, params, every_row=False)
        return rows[0] if rows else None

    async def fetchall(self, query: str, params: Sequence[Any]) -> list[Row]:
        """Run one statement in its own transaction and return all its rows (errors as
        ``fetchone``)."""
        return await self._execute(query, params, every_row=True)

    async def _execute(self, query: str, params: Sequence[Any], *, every_row: bool) -> list[Row]:
        cursor = await self._checkout()
        try:
            await cursor.execute(query, params, prepare=True, binary=True)
            if every_row:
                rows = await cursor.fetchall()
            else:
                row = await cursor.fetchone()
                rows = [] if row is None else [row]
        except BaseException as exc:
            # A statement error leaves an autocommit connection idle and usable; a failed or
            # interrupted one is dropped, and after a connection failure the idle ones too.
            if cursor.connection.info.transaction_status == TransactionStatus.IDLE:
                await self._give_back(cursor)
            else:
                await self._discard(cursor)
                if isinstance(exc, psycopg.OperationalError):
                    await self._discard_idle()
            raise
        await self._give_back(cursor)
        return rows

    async def _checkout(self) -> Cursor:
        if self._closed:
            raise psycopg.OperationalError("the hot-path pool is closed")
        if self._idle and not self._waiters:
            return self._idle.popleft()
        if self._size < self._max_size:
            self._size += 1
            return await self._open_in_slot()
        waiter: asyncio.Future[Cursor | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                cursor = await self._wait(waiter)
        except TimeoutError:
            raise PoolTimeout(f"no database connection free within {self._timeout:g} s") from None
        return cursor if cursor is not None else await self._open_in_slot()

    async def _wait(self, waiter: asyncio.Future[Cursor | None]) -> Cursor | None:
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as we were cancelled: pass it on
                if handed is None:
                    self._free_slot()
                elif self._closed:
                    self._close_later(handed)
                else:
                    self._release(handed)
            raise

    async def _open_in_slot(self) -> Cursor:
        """Open a connection in a slot already counted in ``_size``."""
        try:
            connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except BaseException:
            self._free_slot()
            raise
        return psycopg.AsyncRawCursor(connection)

    async def _give_back(self, cursor: Cursor) -> None:
        if self._closed:
            await self._discard(cursor)
        else:
            self._release(cursor)

    def _release(self, cursor: Cursor) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(cursor)
                return
        self._idle.append(cursor)

    async def _discard(self, cursor: Cursor) -> None:
        self._free_slot()
        await cursor.connection.close()

    async def _discard_idle(self) -> None:
        while self._idle:
            await self._discard(self._idle.popleft())

    def _close_later(self, cursor: Cursor) -> None:
        self._free_slot()
        task = asyncio.get_running_loop().create_task(cursor.connection.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _free_slot(self) -> None:
        """A connection is gone: its slot passes to the first waiter, which opens a new one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._size -= 1


class TracedHotPathPool(HotPathPool):
    """A :class:`HotPathPool` whose every statement is a client span from ``tracer``."""

    def __init__(self, conninfo: str, *, max_size: int, tracer: Tracer, **options: Any) -> None:
        super().__init__(conninfo, max_size=max_size, **options)
        self._spans = StatementSpans(tracer, conninfo)

    async def _execute(self, query: str, params: Sequence[Any], *, every_row: bool) -> list[Row]:
        # Both fetchone and fetchall (the group commit's statement) come through here.
        with self._spans.statement(query):
            return await super()._execute(query, params, every_row=every_row)


def create_hot_path_pool(
    url: str, *, max_size: int, tracer: Tracer | None = None
) -> HotPathPool | None:
    """A pool for PostgreSQL URLs; None for SQLite (the embedded default has no hot path)."""
    parsed = make_url(normalize_database_url(url))
    if not parsed.drivername.startswith("postgresql"):
        return None
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    if tracer is not None:
        return TracedHotPathPool(conninfo, max_size=max_size, tracer=tracer)
    return HotPathPool(conninfo, max_size=max_size)
