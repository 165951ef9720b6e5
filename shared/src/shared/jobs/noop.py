"""The no-op job body: proves a queue and whatever runs its jobs are wired up end to end."""

from __future__ import annotations

from shared.jobs.base import JobDeps, JobPayload, JobResult


class NoopPayload(JobPayload):
    """The no-op job takes nothing; it proves the queue and a worker are wired up."""


async def run_noop(payload: NoopPayload, deps: JobDeps) -> JobResult:
    """Do nothing; report success and when it ran (from the injected clock)."""
    return {"ok": True, "at": deps.clock.now().isoformat()}
