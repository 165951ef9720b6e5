"""Trace context across the job queue: the enqueuing span's context travels with the job, and
the job's run is a child of it.

So a sign-in and the profile sync it queued are one trace, in the worker as in the embedded
default. A job enqueued outside any span (the periodic timer's) carries none and starts a trace
of its own.

The context crosses Redis as a W3C ``traceparent`` (and ``tracestate``) in the job's
``trace_context`` keyword argument (arq passes keyword arguments to the job function), in the
format of the propagators the SDK is configured with (``OTEL_PROPAGATORS``; W3C by default).
Whoever can write to the queue can already run any job; a malformed carrier starts a new trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer

from shared.tracing.spans import current_span

TRACER_NAME = "shared.tracing.jobs"
TRACE_CONTEXT_ARGUMENT = "trace_context"
"""The keyword argument of an arq job that carries the enqueuer's trace context."""
MESSAGING_SYSTEM = "arq"


def context_of(carrier: object) -> Context:
    """The enqueuer's context from a job's carrier; an empty one (a new trace) when there is
    none or it is not a map of strings."""
    if not isinstance(carrier, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in carrier.items()
    ):
        return Context()
    return propagate.extract(carrier, context=Context())


@dataclass(frozen=True)
class JobSpans:
    """The spans of the jobs of one queue."""

    tracer: Tracer
    queue: str

    def _attributes(self, job: str, operation: str, job_id: str | None) -> dict[str, str]:
        attributes = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": operation,
            "messaging.destination.name": self.queue,
            "job.name": job,
        }
        if job_id is not None:
            attributes["messaging.message.id"] = job_id
        return attributes

    @contextmanager
    def sending(self, job: str, job_id: str | None) -> Iterator[dict[str, str]]:
        """A producer span around putting ``job`` on the queue; yields the carrier of its
        context, for the job."""
        with current_span(
            self.tracer,
            f"send {job}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(job, "send", job_id),
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield carrier

    @contextmanager
    def processing(self, job: str, job_id: str | None, parent: Context | None) -> Iterator[Span]:
        """The span of one run of ``job``: a child of ``parent`` (the enqueuer's context from
        :func:`context_of`), or of the current context when ``parent`` is None (a job run as
        a task of the process that enqueued it)."""
        with current_span(
            self.tracer,
            f"process {job}",
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(job, "process", job_id),
            parent=parent,
        ) as span:
            yield span
