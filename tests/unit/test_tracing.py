"""Tracing without I/O: when it is on, what is installed when it is off (nothing), the spans the
processes keep, the trace context a job carries, and trace ids in log lines."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from broker.app import create_app
from broker.http.request_observer import RequestObserver
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from shared.db.hot_path import HotPathPool, TracedHotPathPool, create_hot_path_pool
from shared.logging import configure_logging
from shared.runtime import build_runtime
from shared.settings import ConfigError, load_settings, make_settings
from shared.tracing.http_client import TracedAsyncClient, url_without_query
from shared.tracing.install import install_tracing
from shared.tracing.jobs import context_of

from tests.support.logging_state import restore_logging  # noqa: F401 - a fixture
from tests.support.tracing import recording_provider

ENDPOINT = "http://127.0.0.1:4318"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BROKER_VAR_DIR": str(tmp_path / "var")}


# --- on or off ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{ENDPOINT}/v1/traces"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_an_otlp_endpoint_turns_tracing_on(env: dict[str, str], variables: dict[str, str]) -> None:
    assert load_settings({**env, **variables}).tracing is True


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        {"OTEL_SERVICE_NAME": "broker", "OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_without_an_endpoint_or_when_disabled_tracing_is_off(
    env: dict[str, str], variables: dict[str, str]
) -> None:
    assert load_settings({**env, **variables}).tracing is False


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://collector:4317"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ],
)
def test_what_the_exporter_would_only_fail_on_later_stops_startup_naming_the_variable(
    env: dict[str, str], variables: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings({**env, **variables})


def test_with_tracing_off_nothing_is_installed_and_nothing_is_traced(tmp_path: Path) -> None:
    settings = make_settings()
    global_provider = trace.get_tracer_provider()

    assert install_tracing(settings, service_name="oidc-broker") is None

    assert trace.get_tracer_provider() is global_provider  # the API's proxy, no SDK behind it
    runtime = build_runtime(settings)
    assert runtime.resources.tracer_provider is None
    assert type(runtime.http) is httpx2.AsyncClient
    assert not runtime.engine.sync_engine.dispatch.before_cursor_execute  # no listener
    app = create_app(runtime)
    assert isinstance(app, RequestObserver) and app.spans is None
    pool = create_hot_path_pool("postgresql+psycopg://db/broker", max_size=1)
    assert type(pool) is HotPathPool


def test_with_tracing_off_a_process_never_imports_the_sdk_exporter_or_instrumentation() -> None:
    # In a fresh interpreter: this one has imported the SDK for the other tests.
    program = textwrap.dedent(
        """
        import sys
        from broker.app import create_app
        from shared.runtime import build_runtime
        from shared.settings import make_settings
        from shared.tracing.install import install_tracing
        import sync_worker.main

        settings = make_settings()
        assert install_tracing(settings, service_name="oidc-broker") is None
        create_app(build_runtime(settings))
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry.")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = ast.literal_eval(done.stdout.strip())
    assert "opentelemetry.trace" in loaded  # the API: no-op objects, nothing installed
    heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")
    assert [name for name in loaded if name.startswith(heavy)] == []


def test_with_a_provider_every_component_makes_spans() -> None:
    provider, _exporter = recording_provider()
    runtime = build_runtime(make_settings(), tracer_provider=provider)
    assert isinstance(runtime.http, TracedAsyncClient)
    assert runtime.engine.sync_engine.dispatch.before_cursor_execute
    app = create_app(runtime)
    assert isinstance(app, RequestObserver) and app.spans is not None
    tracer = provider.get_tracer("test")
    pool = create_hot_path_pool("postgresql+psycopg://db/broker", max_size=1, tracer=tracer)
    assert isinstance(pool, TracedHotPathPool)


# --- which spans are kept -----------------------------------------------------------------------


def test_a_client_span_outside_any_request_or_job_is_not_exported() -> None:
    provider, exporter = recording_provider()
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("SELECT broker", kind=SpanKind.CLIENT):
        pass  # the key reload timer, a readiness probe: no parent
    with (
        tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER),
        tracer.start_as_current_span("SELECT broker", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("process housekeeping", kind=SpanKind.CONSUMER):
        pass

    kept = [(span.name, span.kind) for span in exporter.get_finished_spans()]
    assert kept == [
        ("SELECT broker", SpanKind.CLIENT),
        ("GET /x", SpanKind.SERVER),
        ("process housekeeping", SpanKind.CONSUMER),
    ]


def test_the_service_is_named_oidc_broker_unless_the_environment_names_one() -> None:
    provider, _exporter = recording_provider()
    # The test run sets no OTEL_SERVICE_NAME: the name given by the process is used.
    assert provider.resource.attributes["service.name"] == "broker-tests"


# --- job trace context --------------------------------------------------------------------------


def test_a_jobs_trace_context_makes_its_run_a_child_of_the_enqueuer() -> None:
    parent = trace.get_current_span(context_of({"traceparent": TRACEPARENT}))
    ids = parent.get_span_context()
    assert ids.is_remote
    assert trace.format_trace_id(ids.trace_id) == "0af7651916cd43dd8448eb211c80319c"
    assert trace.format_span_id(ids.span_id) == "b7ad6b7169203331"


@pytest.mark.parametrize(
    "carrier",
    [None, "00-0af7-b7ad-01", ["traceparent"], {"traceparent": 7}, {"traceparent": "garbage"}, {}],
)
def test_no_or_a_malformed_trace_context_starts_a_new_trace(carrier: Any) -> None:
    assert not trace.get_current_span(context_of(carrier)).get_span_context().is_valid


# --- upstream URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("https://idp.example.com/token?code=abc&state=def", "https://idp.example.com/token"),
        ("https://user:pw@idp.example.com:8443/a/b?x=1#f", "https://idp.example.com:8443/a/b"),
        ("http://[::1]:9000/avatar.png?sig=s3cret", "http://[::1]:9000/avatar.png"),
    ],
)
def test_an_upstream_url_is_recorded_without_query_or_credentials(url: str, recorded: str) -> None:
    assert url_without_query(httpx2.URL(url)) == recorded


# --- logs ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_a_line_logged_inside_a_span_names_its_trace_and_span(
    capsys: pytest.CaptureFixture[str],
) -> None:
    provider, _exporter = recording_provider()
    configure_logging("INFO", "json", trace_ids=True)
    log = structlog.get_logger("broker.test")

    with provider.get_tracer("test").start_as_current_span("GET /x") as span:
        log.info("inside")
    log.info("outside")

    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    ids = span.get_span_context()
    assert inside["trace_id"] == trace.format_trace_id(ids.trace_id)
    assert inside["span_id"] == trace.format_span_id(ids.span_id)
    assert "trace_id" not in outside and "span_id" not in outside


@pytest.mark.usefixtures("restore_logging")
def test_with_tracing_off_log_lines_carry_no_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    provider, _exporter = recording_provider()
    configure_logging("INFO", "json")

    with provider.get_tracer("test").start_as_current_span("GET /x"):
        structlog.get_logger("broker.test").info("inside")

    (line,) = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert "trace_id" not in line
