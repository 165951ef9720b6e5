"""The SQL behind slow admin requests: captured from an in-process broker on the same database,
then ``EXPLAIN (ANALYZE, BUFFERS)`` of each of its SELECTs."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import psycopg

from bench.admin_probes import ProbeResult
from bench.database import libpq_url


@dataclass(frozen=True)
class Statement:
    """One statement a request ran: its SQL, its parameters, its time in the driver."""

    sql: str
    parameters: Any
    ms: float


async def capture_statements(
    broker_env: Mapping[str, str], token: str, paths: Sequence[str]
) -> dict[str, list[Statement]]:
    """The SQL each path runs, from one request to an in-process broker on the same database
    (same settings and keys), after a warm-up request."""
    from broker.app import create_app
    from shared.runtime import build_runtime
    from shared.settings import load_settings
    from sqlalchemy import event

    settings = load_settings(dict(broker_env))
    runtime = build_runtime(settings)
    captured: list[Statement] = []

    def before(conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        started = conn.info["bench_started"].pop()
        if not many:
            captured.append(Statement(sql, parameters, (time.perf_counter() - started) * 1000))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", before)
    event.listen(runtime.engine.sync_engine, "after_cursor_execute", after)
    found: dict[str, list[Statement]] = {}
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(
            transport=transport,
            base_url=settings.issuer,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        ) as client:
            for path in paths:
                await client.get(path)
                captured.clear()
                await client.get(path)
                found[path] = list(captured)
    finally:
        await runtime.stop()
    return found


def explain(database_url: str, statement: Statement) -> tuple[list[str], float]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a captured SELECT (rolled back): its lines and its
    execution time in ms."""
    with psycopg.connect(libpq_url(database_url)) as connection:
        try:
            rows = connection.execute(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", statement.parameters or None
            ).fetchall()
        finally:
            connection.rollback()
    lines = [str(row[0]) for row in rows]
    executed = [line for line in lines if line.startswith("Execution Time:")]
    return lines, float(executed[0].split()[2]) if executed else math.nan


@dataclass(frozen=True)
class ExplainedStatement:
    statement: Statement
    plan: list[str]
    executed_ms: float  # NaN when EXPLAIN failed


@dataclass(frozen=True)
class ExplainedRequest:
    result: ProbeResult
    statements: list[Statement]  # every statement the request ran
    explained: list[ExplainedStatement]  # its SELECTs


@dataclass(frozen=True)
class SlowRequests:
    requests: list[ExplainedRequest]
    replay_error: str = ""  # why their SQL could not be captured (then ``requests`` is empty)


def explain_requests(
    database_url: str, broker_env: Mapping[str, str], token: str, slow: Sequence[ProbeResult]
) -> SlowRequests:
    """Each slow request's statements (captured in-process) and the plans of its SELECTs."""
    try:
        found = asyncio.run(capture_statements(broker_env, token, [r.probe.path for r in slow]))
    except Exception as exc:
        return SlowRequests([], replay_error=repr(exc))
    requests = []
    for result in slow:
        statements = found.get(result.probe.path, [])
        explained = []
        for statement in statements:
            if not statement.sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            try:
                plan, executed = explain(database_url, statement)
            except psycopg.Error as exc:
                plan, executed = [f"(EXPLAIN failed: {str(exc).strip()[:200]})"], math.nan
            explained.append(ExplainedStatement(statement, plan, executed))
        requests.append(ExplainedRequest(result, statements, explained))
    return SlowRequests(requests)
