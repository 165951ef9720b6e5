"""One way to open a span and record its failure: the exception's type, never its message or
stack trace.

An exception's text can quote what it failed on (a URL with its query string, a header value,
a form field, a database row); a type name cannot. So the SDK's own recording (an exception
event with message and stack trace) is turned off for every span the broker opens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue


def tracer_of(provider: TracerProvider | None, name: str) -> Tracer | None:
    """A component's tracer from the process's provider; None when tracing is off."""
    return None if provider is None else provider.get_tracer(name)


def error_type(exc: BaseException) -> str:
    """The ``error.type`` attribute for ``exc``: its fully qualified class name."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def mark_failed(span: Span, error: str) -> None:
    """Status ERROR, and ``error.type`` (an exception type or a status code) as its reason."""
    span.set_attribute("error.type", error)
    span.set_status(Status(StatusCode.ERROR))


@contextmanager
def current_span(
    tracer: Tracer,
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue],
    parent: Context | None = None,
) -> Iterator[Span]:
    """A span, current while the block runs (a child of ``parent``, else of the current
    context); an exception escaping the block marks it failed with the exception's type."""
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            mark_failed(span, error_type(exc))
            raise
