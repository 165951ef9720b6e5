"""Background jobs shared by the broker (embedded default) and the sync worker.

``registry`` names the jobs and their typed payloads, ``queue`` puts them on a queue (arq/Redis or
in-process), and one module per job holds its body, independent of arq.
"""

from shared.jobs.queue import (
    DEFAULT_QUEUE_NAME,
    ArqJobQueue,
    InProcessJobQueue,
    JobQueue,
    QueueUnavailableError,
    build_job_queue,
    dumps_job_data,
    loads_job_data,
)
from shared.jobs.registry import (
    JOBS,
    JobDeps,
    JobName,
    JobPayload,
    JobResult,
    JobSpec,
    NoopPayload,
    UnknownJobError,
    job_spec,
)

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "JOBS",
    "ArqJobQueue",
    "InProcessJobQueue",
    "JobDeps",
    "JobName",
    "JobPayload",
    "JobQueue",
    "JobResult",
    "JobSpec",
    "NoopPayload",
    "QueueUnavailableError",
    "UnknownJobError",
    "build_job_queue",
    "dumps_job_data",
    "job_spec",
    "loads_job_data",
]
