"""Spans for SQL statements: the SQLAlchemy engine's, and the hot-path pool's raw psycopg ones.

The engine is traced by opentelemetry-instrumentation-sqlalchemy's per-engine tracer (its
``SQLAlchemyInstrumentor`` would also patch ``create_engine`` for the whole process, once, with
one provider). It records the statement text as SQLAlchemy sends it — placeholders, never the
bound values — and adds no SQL comments (sqlcommenter stays off).

The hot-path pool bypasses SQLAlchemy (``shared.db.hot_path``), so its statements get a span of
the same shape here: the attribute names the instrumentation writes by default, the statement
with its ``$1`` placeholders, never the parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.tracing.spans import current_span

INSTRUMENTATION = "opentelemetry.instrumentation.sqlalchemy"
HOT_PATH_TRACER = "shared.db.hot_path"


def trace_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """A client span per statement ``engine`` executes, from ``provider``."""
    # Imported here: the instrumentation's imports (about 0.1 s) are for processes that trace.
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    # The instrumentation also counts pool connections on a meter: the broker exports its own
    # Prometheus metrics, so that counter goes nowhere.
    connections = (
        NoOpMeterProvider()
        .get_meter(INSTRUMENTATION)
        .create_up_down_counter("db.client.connections.usage")
    )
    EngineTracer(  # type: ignore[no-untyped-call]
        provider.get_tracer(INSTRUMENTATION, __version__),
        engine.sync_engine,
        connections,
        enable_commenter=False,
    )


class StatementSpans:
    """Spans for the statements of one PostgreSQL server and database (the hot-path pool)."""

    def __init__(self, tracer: Tracer, conninfo: str) -> None:
        params = conninfo_to_dict(conninfo)
        self._tracer = tracer
        self._database = str(params.get("dbname") or "")
        attributes: dict[str, str | int] = {"db.system": "postgresql"}
        if self._database:
            attributes["db.name"] = self._database
        if params.get("user"):
            attributes["db.user"] = str(params["user"])
        if params.get("host"):
            attributes["net.peer.name"] = str(params["host"])
        if str(params.get("port") or "").isdigit():
            attributes["net.peer.port"] = int(str(params["port"]))
        self._attributes = attributes

    @contextmanager
    def statement(self, query: str) -> Iterator[Span]:
        """The current span while ``query`` runs: named like the instrumentation's
        (``SELECT broker``), a failure marked with its exception type only."""
        words = query.split(maxsplit=1)
        name = " ".join(part for part in (words[0] if words else "", self._database) if part)
        with current_span(
            self._tracer,
            name or "postgresql",
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "db.statement": query},
        ) as span:
            yield span
