"""The worker's jobs over the admin seed: the audit rollup for a time budget (its set-based
stand-in counts what the budget leaves), the stats snapshot once, and housekeeping until it has
purged all it would."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from shared.jobs.audit_rollup import AuditRollupPayload, roll_up_audit_events, roll_up_backlog
from shared.jobs.housekeeping import HousekeepingPayload, run_housekeeping
from shared.jobs.stats_snapshot import StatsSnapshotPayload, snapshot_stats
from shared.process_resources import ProcessResources
from shared.settings import make_settings

from bench.database import libpq_url
from bench.processes import BenchError

ROLLUP_TIME_LIMIT = 45.0  # seconds of the job; the rest by SQL (--rollup-seconds)


@dataclass(frozen=True)
class RollupRun:
    """Who counted the seeded audit rows (the job, its stand-in), how fast, and their sum."""

    job_rows: int  # counted by the worker's job
    job_seconds: float
    job_runs: int
    sql_rows: int  # counted by the set-based stand-in (the job failed or out of time)
    sql_seconds: float
    counts_total: int  # sum(count) in audit_daily_counts afterwards

    @property
    def rate(self) -> float:
        return self.job_rows / self.job_seconds if self.job_seconds else math.nan


async def _run_rollup_job(database_url: str, expected: int, time_limit: float) -> tuple[int, int]:
    """The job body, run back to back as the worker would with a backlog, until it has
    counted ``expected`` rows or ``time_limit`` seconds have passed; rows counted, runs."""
    counted = runs = 0
    deadline = time.monotonic() + time_limit
    async with _job_deps(database_url) as deps:
        while counted < expected and (remaining := deadline - time.monotonic()) > 0:
            # The worker's payload (its timer enqueues the defaults), cut to the time left.
            payload = AuditRollupPayload(
                max_seconds=min(AuditRollupPayload().max_seconds, max(0.1, remaining))
            )
            result = await roll_up_audit_events(payload, deps)
            runs += 1
            count = int(result.get("counted") or 0)
            if not count:
                # Nothing visible yet: a transaction older than the rows (anywhere on the
                # server) holds pg_snapshot_xmin back, or another rollup holds the cursor.
                await asyncio.sleep(0.1)
            counted += count
    return counted, runs


async def run_stats_snapshot(database_url: str) -> float:
    """The worker's stats snapshot job once (it runs with the rollup); its seconds."""
    async with _job_deps(database_url) as deps:
        started = time.perf_counter()
        await snapshot_stats(StatsSnapshotPayload(), deps)
        return time.perf_counter() - started


async def run_housekeeping_to_the_end(database_url: str) -> tuple[float, dict[str, int]]:
    """The worker's housekeeping job, run after run until a run leaves nothing unfinished: what
    a deployment's refresh-token history looks like once it has run (rotated tokens past their
    expiry and retired sessions purged). Its seconds and the rows it deleted, by kind."""
    payload = HousekeepingPayload(batch_size=10_000, max_batches=100)
    deleted: dict[str, int] = {}
    async with _job_deps(database_url) as deps:
        started = time.perf_counter()
        while True:
            counts = await run_housekeeping(payload, deps)
            for kind, count in counts.items():
                deleted[kind] = deleted.get(kind, 0) + int(count)
            most = payload.batch_size * payload.max_batches
            if all(int(count) < most for count in counts.values()):
                return time.perf_counter() - started, deleted


@contextlib.asynccontextmanager
async def _job_deps(database_url: str) -> AsyncIterator[Any]:
    """What a worker gives its job bodies, for the bench database (closed afterwards)."""
    settings = make_settings(database_url=database_url, periodic_jobs=False)
    async with ProcessResources.opened(settings, pool_size=2) as resources:
        yield resources.job_deps()


async def _run_backlog(database_url: str) -> int:
    """The rows the job has not counted, by its set-based stand-in
    (``shared.jobs.audit_rollup.roll_up_backlog``), from the job's cursor on."""
    async with _job_deps(database_url) as deps:
        rows: int | None = await roll_up_backlog(deps)
    if rows is None:
        raise BenchError("another rollup holds the audit rollup's cursor")
    return rows


def roll_up(
    database_url: str, expected: int, *, time_limit: float = ROLLUP_TIME_LIMIT
) -> RollupRun:
    """The worker's rollup job in this process for up to ``time_limit`` seconds; what it has not
    counted by then (the job out of time, or failed) is counted by its set-based stand-in."""
    job_rows = job_runs = 0
    job_seconds = 0.0
    started = time.perf_counter()
    try:
        job_rows, job_runs = asyncio.run(_run_rollup_job(database_url, expected, time_limit))
        job_seconds = time.perf_counter() - started
    except Exception as exc:
        # What it committed stands (each batch moved the cursor with it): the rest from there.
        print(f"  ERROR: the rollup job failed: {exc!r}; counting with SQL instead")
    sql_rows, sql_seconds = 0, 0.0
    if job_rows < expected:
        started = time.perf_counter()
        sql_rows = asyncio.run(_run_backlog(database_url))
        sql_seconds = time.perf_counter() - started
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT coalesce(sum(count), 0) FROM audit_daily_counts"
        ).fetchone()
        total = int(row[0]) if row else 0
        connection.execute("VACUUM (ANALYZE) users, audit_daily_counts, audit_relay_cursors")
    return RollupRun(job_rows, job_seconds, job_runs, sql_rows, sql_seconds, total)
