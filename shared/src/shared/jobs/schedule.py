"""The periodic jobs and the timer that enqueues them, the same in the broker and the worker.

Each periodic job is enqueued once per interval with the job id
``periodic:{queue}:{name}:{tick}``,
``tick`` being the number of whole intervals since the epoch. Every worker process runs this
timer, and the queue refuses a job id it already holds, so a tick's job runs once however many
workers there are — and nothing is skipped when one of them stops. Without Redis (the embedded
default) the broker runs the same timer over its in-process queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from shared.clock import Clock
from shared.jobs.audit_relay import AuditRelayPayload
from shared.jobs.audit_retention import AuditRetentionPayload
from shared.jobs.audit_rollup import AuditRollupPayload
from shared.jobs.backchannel_logout import BackchannelLogoutPayload
from shared.jobs.base import JobName, JobPayload, JobQueue, QueueUnavailableError
from shared.jobs.housekeeping import HousekeepingPayload
from shared.jobs.profile_sync import ProfileSyncScanPayload
from shared.jobs.stats_snapshot import StatsSnapshotPayload
from shared.jobs.upstream_refresh import UpstreamScanPayload
from shared.settings import Settings

log = structlog.get_logger("shared.jobs.schedule")

MAX_SLEEP = 1.0
# How often links are checked against their provider's profile_sync_interval.
PROFILE_SCAN_INTERVAL = 300.0


@dataclass(frozen=True)
class PeriodicJob:
    name: JobName
    interval: float  # seconds
    payload: JobPayload


def periodic_jobs(settings: Settings) -> list[PeriodicJob]:
    """What runs on a timer; the audit relay only where there is a Redis to publish to (the
    rollup and the back-channel logouts need only the database: they run everywhere, whatever
    state Redis is in)."""
    jobs = [
        PeriodicJob(
            JobName.SCAN_UPSTREAM_TOKENS,
            settings.upstream_refresh_scan_interval,
            UpstreamScanPayload(),
        ),
    ]
    jobs.append(PeriodicJob(JobName.SCAN_PROFILES, PROFILE_SCAN_INTERVAL, ProfileSyncScanPayload()))
    jobs.append(
        PeriodicJob(JobName.HOUSEKEEPING, settings.housekeeping_interval, HousekeepingPayload())
    )
    # Audit partitions ahead of time and the audit retention, on the housekeeping's timer.
    jobs.append(
        PeriodicJob(
            JobName.MAINTAIN_AUDIT_LOG, settings.housekeeping_interval, AuditRetentionPayload()
        )
    )
    jobs.append(
        PeriodicJob(
            JobName.ROLL_UP_AUDIT_EVENTS, settings.audit_rollup_interval, AuditRollupPayload()
        )
    )
    jobs.append(
        PeriodicJob(JobName.SNAPSHOT_STATS, settings.audit_rollup_interval, StatsSnapshotPayload())
    )
    jobs.append(
        PeriodicJob(
            JobName.DELIVER_BACKCHANNEL_LOGOUTS,
            settings.backchannel_logout_interval,
            BackchannelLogoutPayload(),
        )
    )
    if settings.redis_url is not None:
        jobs.append(PeriodicJob(JobName.RELAY_AUDIT_EVENTS, 1.0, AuditRelayPayload()))
    return jobs


class PeriodicScheduler:
    """Enqueues each periodic job once per interval; ``start`` runs it as a background task."""

    def __init__(
        self, queue: JobQueue, jobs: Sequence[PeriodicJob], clock: Clock, *, namespace: str
    ) -> None:
        self._queue = queue
        # arq's job ids are global to a Redis database: the queue's name keeps two queues'
        # ticks apart.
        self._namespace = namespace
        self._jobs = list(jobs)
        self._clock = clock
        self._last_tick: dict[JobName, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> list[str]:
        """Enqueue the jobs whose interval has turned since the last call; their job ids."""
        now = self._clock.now().timestamp()
        enqueued = []
        for job in self._jobs:
            tick = int(now // job.interval)
            if self._last_tick.get(job.name) == tick:
                continue
            job_id = f"periodic:{self._namespace}:{job.name.value}:{tick}"
            try:
                queued = await self._queue.enqueue(job.name, job.payload, job_id=job_id)
            except QueueUnavailableError as exc:
                log.warning("schedule.enqueue_failed", job=job.name.value, error=str(exc))
                continue  # try again on the next pass
            self._last_tick[job.name] = tick
            if queued is not None:
                enqueued.append(queued)
        return enqueued

    async def _run(self) -> None:
        sleep = min([MAX_SLEEP, *(job.interval for job in self._jobs)])
        while True:
            await self.tick()  # an unavailable queue is retried inside; anything else is a bug
            await asyncio.sleep(sleep)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A timer that dies silently would stop every periodic job: say so loudly.
            error = task.exception()
            log.error("schedule.crashed", error=type(error).__name__, detail=str(error)[:200])

    def start(self) -> None:
        if self._task is None and self._jobs:
            self._task = asyncio.create_task(self._run(), name="periodic-jobs")
            self._task.add_done_callback(self._stopped)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a crash was reported when it happened
            self._task = None
