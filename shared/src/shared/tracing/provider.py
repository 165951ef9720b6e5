"""The SDK's tracer provider as the processes build it: the resource and sampler from the standard
variables, client spans without a parent left out, spans handed to the given processor.

Imported only when tracing is on (``shared.tracing.install``): the SDK, with the OTLP exporter,
takes about half a second of imports that a process with tracing off does without.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind


class ParentedClientSpans(SpanProcessor):
    """Hands spans on to ``processor``, except client spans without a parent.

    A statement or an upstream call made outside any request or job — the signing-key reload
    every few seconds, a readiness probe's ``SELECT 1`` — would be a trace of one span each,
    drowning the traces worth reading.
    """

    def __init__(self, processor: SpanProcessor) -> None:
        self._processor = processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is SpanKind.CLIENT and span.parent is None:
            return
        self._processor.on_end(span)

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)


def build_tracer_provider(processor: SpanProcessor, *, service_name: str) -> TracerProvider:
    """An SDK provider exporting through ``processor``.

    Its resource comes from the standard variables, with ``service_name`` when they name no
    service; its sampler from ``OTEL_TRACES_SAMPLER`` (default: parent-based, always on).
    """
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(ParentedClientSpans(processor))
    return provider
