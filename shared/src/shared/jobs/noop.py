"""The no-op job body: proves a queue and whatever runs its jobs are wired up end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports this module to build its table
    from shared.jobs.registry import JobDeps, JobResult, NoopPayload


async def run_noop(payload: NoopPayload, deps: JobDeps) -> JobResult:
    """Do nothing; report success and when it ran (from the injected clock)."""
    return {"ok": True, "at": deps.clock.now().isoformat()}
