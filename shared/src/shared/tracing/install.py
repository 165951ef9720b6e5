"""The process's tracer provider: built once at process start when the settings say so.

The SDK reads its standard variables itself here: the exporter's (``OTEL_EXPORTER_OTLP_*``:
endpoint, headers, timeout, compression, certificates), the resource's (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``), the sampler's (``OTEL_TRACES_SAMPLER`` and ``_ARG``) and the
batch processor's (``OTEL_BSP_*``). Whether to trace at all was decided, and the variables the
SDK would only complain about at the first export were checked, by ``load_settings``.

OTLP over HTTP (protobuf, port 4318) rather than gRPC: it is the protocol the OpenTelemetry
specification makes the SDKs' default, every collector and tracing backend accepts it, it
passes through ordinary HTTP proxies, and it does not bring grpcio (a large native extension,
with its own threads) into every broker and worker process.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from shared.settings import Settings

BROKER_SERVICE = "oidc-broker"
WORKER_SERVICE = "oidc-broker-sync-worker"


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


def install_tracing(settings: Settings, *, service_name: str) -> TracerProvider | None:
    """At process start: the OTLP-exporting provider, also set as OpenTelemetry's global one;
    None (and nothing installed) when tracing is off.

    The spans still queued are exported when the process exits (the SDK's exit hook).
    """
    if not settings.tracing:
        return None
    provider = build_tracer_provider(
        BatchSpanProcessor(OTLPSpanExporter()), service_name=service_name
    )
    trace.set_tracer_provider(provider)
    return provider
