"""The job table: every job's name, its typed payload and the shared body that runs it.

Payloads are small frozen pydantic models carrying ids, never secrets: they travel through Redis as
JSON and arq logs them. A body is ``async (payload, deps) -> JSON-able dict`` and knows nothing of
arq; the worker's adapter and :class:`shared.jobs.queue.InProcessJobQueue` both call it through
:meth:`JobSpec.run`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from shared.jobs.audit_relay import AuditRelayPayload, relay_audit_events
from shared.jobs.audit_retention import AuditRetentionPayload, maintain_audit_log
from shared.jobs.audit_rollup import AuditRollupPayload, roll_up_audit_events
from shared.jobs.backchannel_logout import BackchannelLogoutPayload, deliver_backchannel_logouts
from shared.jobs.base import JobDeps, JobName, JobPayload, JobResult
from shared.jobs.housekeeping import HousekeepingPayload, run_housekeeping
from shared.jobs.noop import NoopPayload, run_noop
from shared.jobs.profile_sync import (
    ProfileSyncPayload,
    ProfileSyncScanPayload,
    scan_profiles,
    sync_profile,
)
from shared.jobs.stats_snapshot import StatsSnapshotPayload, snapshot_stats
from shared.jobs.upstream_refresh import (
    UpstreamRefreshPayload,
    UpstreamScanPayload,
    refresh_upstream_token,
    scan_upstream_tokens,
)

__all__ = ["JOBS", "JobSpec", "UnknownJobError", "job_spec"]


class UnknownJobError(LookupError):
    """A job name that is not in :data:`JOBS`."""


P = TypeVar("P", bound=JobPayload)


@dataclass(frozen=True)
class JobSpec(Generic[P]):
    """One job: its name, the payload type it accepts and its body."""

    name: JobName
    payload_type: type[P]
    body: Callable[[P, JobDeps], Awaitable[JobResult]]
    # Seconds arq keeps the result (None: the worker's default, an hour). 0 for jobs with a
    # stable id: a kept result would refuse the next enqueue of that id for as long.
    keep_result: float | None = None

    def parse(self, payload: Mapping[str, Any] | JobPayload) -> P:
        """Validate a payload (a model, or its JSON form off the wire) as this job's type."""
        if isinstance(payload, self.payload_type):
            return payload
        if isinstance(payload, JobPayload):
            raise TypeError(
                f"job {self.name.value!r} takes {self.payload_type.__name__}, "
                f"not {type(payload).__name__}"
            )
        return self.payload_type.model_validate(payload)

    async def run(self, payload: Mapping[str, Any] | JobPayload, deps: JobDeps) -> JobResult:
        """Validate the payload and run the body."""
        return await self.body(self.parse(payload), deps)


JOBS: Mapping[JobName, JobSpec[Any]] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            JobSpec(JobName.NOOP, NoopPayload, run_noop),
            JobSpec(JobName.SCAN_UPSTREAM_TOKENS, UpstreamScanPayload, scan_upstream_tokens),
            JobSpec(
                JobName.REFRESH_UPSTREAM_TOKEN,
                UpstreamRefreshPayload,
                refresh_upstream_token,
                keep_result=0,
            ),
            JobSpec(
                JobName.RELAY_AUDIT_EVENTS, AuditRelayPayload, relay_audit_events, keep_result=60
            ),
            JobSpec(JobName.ROLL_UP_AUDIT_EVENTS, AuditRollupPayload, roll_up_audit_events),
            JobSpec(JobName.SNAPSHOT_STATS, StatsSnapshotPayload, snapshot_stats),
            JobSpec(JobName.SCAN_PROFILES, ProfileSyncScanPayload, scan_profiles),
            JobSpec(JobName.SYNC_PROFILE, ProfileSyncPayload, sync_profile, keep_result=0),
            JobSpec(JobName.HOUSEKEEPING, HousekeepingPayload, run_housekeeping),
            JobSpec(
                JobName.DELIVER_BACKCHANNEL_LOGOUTS,
                BackchannelLogoutPayload,
                deliver_backchannel_logouts,
                keep_result=60,
            ),
            JobSpec(JobName.MAINTAIN_AUDIT_LOG, AuditRetentionPayload, maintain_audit_log),
        )
    }
)


def job_spec(name: JobName | str) -> JobSpec[Any]:
    """The spec registered under ``name``; :class:`UnknownJobError` for anything else."""
    try:
        return JOBS[JobName(name)]
    except ValueError:
        raise UnknownJobError(f"no job named {name!r}") from None
