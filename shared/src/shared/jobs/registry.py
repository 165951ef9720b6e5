"""The job table: every job's name, its typed payload and the shared body that runs it.

Payloads are small frozen pydantic models carrying ids, never secrets: they travel through Redis as
JSON and arq logs them. A body is ``async (payload, deps) -> JSON-able dict`` and knows nothing of
arq; the worker's adapter and :class:`shared.jobs.queue.InProcessJobQueue` both call it through
:meth:`JobSpec.run`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from shared.clock import Clock
from shared.jobs.noop import run_noop

__all__ = [
    "JOBS",
    "JobDeps",
    "JobName",
    "JobPayload",
    "JobResult",
    "JobSpec",
    "NoopPayload",
    "UnknownJobError",
    "job_spec",
]

JobResult = dict[str, Any]
"""What a job body returns: a JSON-able summary (stored by arq as the job's result)."""


class JobName(StrEnum):
    """The registered jobs; the value is the arq function name."""

    NOOP = "noop"


class JobPayload(BaseModel):
    """Base of every payload: immutable, no unknown fields, JSON round-trippable."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoopPayload(JobPayload):
    """The no-op job takes nothing; it proves the queue and a worker are wired up."""


@dataclass(frozen=True)
class JobDeps:
    """What a job body may use, built once per process (no I/O at construction)."""

    clock: Clock


class UnknownJobError(LookupError):
    """A job name that is not in :data:`JOBS`."""


P = TypeVar("P", bound=JobPayload)


@dataclass(frozen=True)
class JobSpec(Generic[P]):
    """One job: its name, the payload type it accepts and its body."""

    name: JobName
    payload_type: type[P]
    body: Callable[[P, JobDeps], Awaitable[JobResult]]

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
    {spec.name: spec for spec in (JobSpec(JobName.NOOP, NoopPayload, run_noop),)}
)


def job_spec(name: JobName | str) -> JobSpec[Any]:
    """The spec registered under ``name``; :class:`UnknownJobError` for anything else."""
    try:
        return JOBS[JobName(name)]
    except ValueError:
        raise UnknownJobError(f"no job named {name!r}") from None
