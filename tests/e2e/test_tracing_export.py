"""Tracing end to end: ``broker serve`` and ``sync-worker`` processes configured only by the
standard OpenTelemetry variables export their spans over OTLP/HTTP to a receiver on 127.0.0.1,
named after their service, continuing the caller's trace, and carrying a job's trace from the
process that queued it through Redis into the worker."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from shared.crypto.keyring import Keyring
from shared.jobs.base import JobName
from shared.jobs.noop import NoopPayload
from shared.jobs.queue import ArqJobQueue

from tests.support.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.support.processes import dev_broker_process
from tests.support.tracing import recording_provider
from tests.support.waiting import eventually
from tests.support.workers import running_worker

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WITHIN = 15.0


def otel_env(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
    }


async def arrival(found: Callable[[], list[ReceivedSpan]]) -> ReceivedSpan:
    """The one span ``found`` finds, once the receiver has it."""

    async def arrived() -> bool:
        return bool(found())

    await eventually(arrived, within=WITHIN)
    (span,) = found()
    return span


async def test_broker_exports_its_request_spans_to_the_otlp_endpoint(
    tmp_path: Path, database_url: str, keyring: Keyring
) -> None:
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with (
        otlp_receiver() as (endpoint, received),
        dev_broker_process(
            tmp_path,
            database_url=database_url,
            keyring=keyring,
            cwd=str(ROOT),
            **otel_env(endpoint),
        ) as (issuer, broker),
    ):
        async with httpx2.AsyncClient() as http:
            response = await http.get(
                f"{issuer}/auth/oauth2/providers",
                headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
            )
        assert response.status_code == 200
        span = await arrival(
            lambda: [
                s
                for s in received.named("GET /auth/oauth2/providers")
                if s.trace_id == caller_trace
            ],
        )
        log = broker.read_log()

    assert span.parent_span_id == caller_span
    assert span.attributes["http.route"] == "/auth/oauth2/providers"
    assert span.attributes["http.response.status_code"] == 200
    assert span.resource["service.name"] == "oidc-broker"
    assert span.resource["deployment.environment.name"] == "e2e"
    # Its access line names the same trace and span.
    (line,) = [
        entry
        for entry in (json.loads(text) for text in log.splitlines() if text.startswith("{"))
        if entry.get("event") == "http.request" and entry.get("trace_id") == caller_trace
    ]
    assert line["span_id"] == span.span_id and line["route"] == "/auth/oauth2/providers"


async def test_a_job_run_by_the_worker_process_continues_the_trace_that_queued_it(
    tmp_path: Path, redis_url: str
) -> None:
    provider, exporter = recording_provider()
    queue_name = f"broker:test-jobs:{uuid.uuid4().hex}"
    queue = ArqJobQueue(redis_url, queue_name=queue_name, tracer=provider.get_tracer("e2e"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("BROKER_")}
    env.update(
        BROKER_ENCRYPTION_KEYS=Keyring.generate().serialize(),
        BROKER_VAR_DIR=str(tmp_path / "var"),
        BROKER_PERIODIC_JOBS="0",
        BROKER_REDIS_URL=redis_url,
    )
    try:
        with otlp_receiver() as (endpoint, received):
            with provider.get_tracer("e2e").start_as_current_span("POST /somewhere"):
                job_id = await queue.enqueue(JobName.NOOP, NoopPayload())
            env.update(otel_env(endpoint))
            async with running_worker(
                ["--queue", queue_name, "--burst"], env, tmp_path / "worker.log"
            ) as worker:
                assert await asyncio.wait_for(worker.wait(), WITHIN) == 0
            # The worker flushes its spans when it exits.
            job = await arrival(lambda: received.named("process noop"))
    finally:
        await queue.aclose()
        redis: Redis = Redis.from_url(redis_url)
        await redis.delete(
            queue_name, *[k async for k in redis.scan_iter(match=f"arq:*:{queue_name}:*")]
        )
        await redis.aclose()

    (sent,) = [span for span in exporter.get_finished_spans() if span.name == "send noop"]
    assert sent.kind is SpanKind.PRODUCER and sent.context is not None
    assert job.trace_id == trace.format_trace_id(sent.context.trace_id)
    assert job.parent_span_id == trace.format_span_id(sent.context.span_id)
    assert job.attributes["messaging.message.id"] == job_id
    assert job.resource["service.name"] == "oidc-broker-sync-worker"
