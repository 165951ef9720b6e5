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

from shared.settings import Settings

BROKER_SERVICE = "oidc-broker"
WORKER_SERVICE = "oidc-broker-sync-worker"


def install_tracing(settings: Settings, *, service_name: str) -> trace.TracerProvider | None:
    """At process start: the OTLP-exporting provider, also set as OpenTelemetry's global one;
    None (and nothing installed, nothing of the SDK even imported) when tracing is off.

    The spans still queued are exported when the process exits (the SDK's exit hook).
    """
    if not settings.tracing:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from shared.tracing.provider import build_tracer_provider

    provider = build_tracer_provider(
        BatchSpanProcessor(OTLPSpanExporter()), service_name=service_name
    )
    trace.set_tracer_provider(provider)
    return provider
