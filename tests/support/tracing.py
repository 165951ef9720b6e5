"""Spans recorded in memory (the SDK's ``InMemorySpanExporter``), and ways to read them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from shared.tracing.provider import build_tracer_provider


def recording_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider built as the processes build theirs, exporting each span as it ends."""
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(SimpleSpanProcessor(exporter), service_name="broker-tests")
    return provider, exporter


def named(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Iterable[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = named(spans, name)
    return span


def servers(spans: Iterable[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.SERVER]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is ``parent``."""
    assert parent.context is not None
    return [
        span
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def descendants(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    """Every span below ``root``, at any depth."""
    found: list[ReadableSpan] = []
    frontier = [root]
    while frontier:
        below = [span for parent in frontier for span in children(spans, parent)]
        found += below
        frontier = below
    return found


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def everything_said(spans: Iterable[ReadableSpan]) -> str:
    """All that the spans would export (names, attributes, events, links, status, resource),
    as one text."""
    return "\n".join(span.to_json() for span in spans)
