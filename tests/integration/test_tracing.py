"""Tracing on, against the real PostgreSQL, Redis and upstream stand-in: a server span per
request named after its route template, the statements and upstream calls under it, one trace
from a sign-in to the profile sync it queued (through Redis and the worker's code), and no
token, code, secret or cookie in any span (docs/security.md "What traces carry")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from arq.worker import Worker
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from shared.clock import SystemClock
from shared.crypto.keyring import Keyring
from shared.db.tables import LINKS, PROFILES
from shared.jobs.base import JobName
from shared.jobs.noop import NoopPayload
from shared.jobs.queue import ArqJobQueue
from shared.runtime import Runtime, build_runtime
from shared.tracing import jobs as job_tracing
from sqlalchemy import select
from sync_worker.options import build_worker_options

from tests.conftest import broker_settings
from tests.support.arq_queues import drop_queue
from tests.support.flows import authorize, bearer, exchange, login, query_of, refresh
from tests.support.jwts import claims_of
from tests.support.links import stored_tokens
from tests.support.provider_broker import running_broker, serving
from tests.support.tracing import (
    children,
    descendants,
    everything_said,
    named,
    one,
    recording_provider,
    servers,
    trace_id,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

CALLBACK = "GET /auth/oauth2/{provider}/callback"
SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"
BACKEND_SECRET = "backend-secret-at-least-32-characters"


@dataclass
class Traced:
    runtime: Runtime
    broker: httpx2.AsyncClient
    exporter: InMemorySpanExporter

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
async def traced(database_url: str, upstream_idp: str, keyring: Keyring) -> AsyncIterator[Traced]:
    """The broker in-process with tracing on, its spans kept in memory."""
    provider, exporter = recording_provider()
    settings = broker_settings(database_url, upstream_idp, keyring)
    async with running_broker(settings, tracer_provider=provider) as (runtime, broker):
        yield Traced(runtime, broker, exporter)


async def signed_in(broker: httpx2.AsyncClient, idp: httpx2.AsyncClient, **claims: Any) -> Any:
    """A new upstream user signs in through `web`; the token response."""
    subject = f"trace-{uuid.uuid4().hex[:10]}"
    user = {"sub": subject, "email": f"{subject}@corp.example", "email_verified": True, **claims}
    await idp.post("/_control/user", json=user)
    return await login(broker)


# --- request spans ------------------------------------------------------------------------------


async def test_each_request_is_a_server_span_named_after_its_route_template(
    traced: Traced, idp: httpx2.AsyncClient
) -> None:
    tokens = await signed_in(traced.broker, idp)
    traced.exporter.clear()

    refreshed = await refresh(traced.broker, tokens["refresh_token"])
    unlinked = await traced.broker.delete("/auth/oauth2/links/nowhere", headers=bearer(tokens))
    unknown = await traced.broker.get("/no/such/path/42")

    assert refreshed.status_code == 200, refreshed.text
    spans = traced.spans
    token = one(servers(spans), "POST /token")  # a direct route, outside Starlette's router
    assert token.kind is SpanKind.SERVER
    assert dict(token.attributes or {}) == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "http.route": "/token",
        "http.response.status_code": 200,
        "oauth.client_id": "web",
        "user.id": claims_of(tokens["access_token"])["sub"],
    }
    assert token.status.status_code is StatusCode.UNSET
    unlink = one(servers(spans), "DELETE /auth/oauth2/links/{provider}")
    assert unlink.attributes is not None
    assert unlink.attributes["http.route"] == "/auth/oauth2/links/{provider}"
    assert unlink.attributes["http.response.status_code"] == unlinked.status_code
    assert unlink.status.status_code is StatusCode.UNSET  # a 4xx is the client's, not an error
    assert "nowhere" not in everything_said([unlink])
    # No route matched: the method alone, never the path asked for.
    missing = one(servers(spans), "GET")
    assert missing.attributes is not None
    assert "http.route" not in missing.attributes
    assert missing.attributes["http.response.status_code"] == unknown.status_code == 404
    assert "/no/such/path" not in everything_said([missing])


async def test_an_incoming_traceparent_continues_the_callers_trace(traced: Traced) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    response = await traced.broker.get(
        "/auth/oauth2/providers", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}
    )

    assert response.status_code == 200
    span = one(servers(traced.spans), "GET /auth/oauth2/providers")
    assert span.parent is not None and span.parent.is_remote
    assert span.parent.span_id == int(caller_span, 16)
    assert trace_id(span) == int(caller_trace, 16)


async def test_probes_scrapes_and_key_documents_get_no_span(traced: Traced) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"):
        assert (await traced.broker.get(path)).status_code == 200
    # ... nor do the statements a readiness probe runs outside any span.
    assert traced.spans == []


# --- statements and upstream calls --------------------------------------------------------------


async def test_statements_are_spans_under_their_request_with_placeholders_not_values(
    traced: Traced, idp: httpx2.AsyncClient
) -> None:
    tokens = await signed_in(traced.broker, idp)
    user_id = claims_of(tokens["access_token"])["sub"]
    traced.exporter.clear()

    refreshed = await refresh(traced.broker, tokens["refresh_token"])
    profile = await traced.broker.get("/auth/oauth2/profile", headers=bearer(tokens))

    assert refreshed.status_code == 200 and profile.status_code == 200
    spans = traced.spans
    # The refresh rotation: one raw statement on the hot-path pool, under POST /token.
    rotation = [
        span
        for span in children(spans, one(servers(spans), "POST /token"))
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name == "shared.db.hot_path"
    ]
    assert len(rotation) == 1
    (statement,) = rotation
    assert statement.kind is SpanKind.CLIENT
    assert statement.attributes is not None
    assert statement.attributes["db.system"] == "postgresql"
    assert "$1" in str(statement.attributes["db.statement"])
    # The profile: SQLAlchemy's statements, under GET /auth/oauth2/profile.
    queries = [
        span
        for span in children(spans, one(servers(spans), "GET /auth/oauth2/profile"))
        if span.instrumentation_scope is not None and span.instrumentation_scope.name == SQLALCHEMY
    ]
    assert queries
    texts = [str((span.attributes or {})["db.statement"]) for span in queries]
    assert any("%(" in text for text in texts)  # psycopg's placeholders
    said = everything_said([*rotation, *queries])
    for value in (user_id, tokens["refresh_token"], refreshed.json()["refresh_token"]):
        assert value not in said


async def test_a_sign_in_traces_its_calls_to_the_upstream(
    traced: Traced, idp: httpx2.AsyncClient, upstream_idp: str
) -> None:
    await signed_in(traced.broker, idp)

    spans = traced.spans
    callback = one(servers(spans), CALLBACK)
    upstream = [span for span in children(spans, callback) if span.name in ("GET", "POST")]
    calls = {(span.name, (span.attributes or {})["url.full"]): span.attributes for span in upstream}
    assert ("POST", f"{upstream_idp}/token") in calls  # the code exchange
    exchange_call = calls[("POST", f"{upstream_idp}/token")]
    assert exchange_call is not None
    assert exchange_call["http.response.status_code"] == 200
    assert exchange_call["server.address"] == "127.0.0.1"
    assert all("?" not in str(url) for _method, url in calls)


# --- never a secret -----------------------------------------------------------------------------


async def test_no_token_code_verifier_secret_or_cookie_reaches_a_span(
    traced: Traced, idp: httpx2.AsyncClient, upstream_idp: str
) -> None:
    broker = traced.broker
    subject = f"trace-{uuid.uuid4().hex[:10]}"
    await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    result = await authorize(broker, client_id="backend", redirect_uri="http://127.0.0.1:4000/cb")
    exchanged = await exchange(
        broker,
        result,
        client_id="backend",
        client_secret=BACKEND_SECRET,
        redirect_uri="http://127.0.0.1:4000/cb",
    )
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.json()
    access, refresh_token = tokens["access_token"], tokens["refresh_token"]
    basic = ("backend", BACKEND_SECRET)

    # Tokens in every place a request can carry them: header, query, form, JSON, cookie, path.
    await broker.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
    await broker.get("/userinfo", params={"access_token": access})
    await broker.post("/userinfo", data={"access_token": access})
    await broker.post("/introspect", data={"token": access}, auth=basic)
    await broker.get("/auth/oauth2/profile", headers={"Cookie": f"broker_session={access}"})
    await broker.get(f"/avatars/{access}")
    await broker.post("/auth/oauth2/profile/sync", headers={"Authorization": f"Bearer {access}"})
    rotated = await broker.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}, auth=basic
    )
    assert rotated.status_code == 200, rotated.text
    again = await broker.post(
        "/auth/oauth2/refresh",
        json={
            "refresh_token": rotated.json()["refresh_token"],
            "client_id": "backend",
            "client_secret": BACKEND_SECRET,
        },
    )
    await broker.post("/revoke", data={"token": again.json()["refresh_token"]}, auth=basic)
    # The profile sync queued above calls the upstream's userinfo with the upstream token.
    await eventually(lambda: _has_span(traced, "process sync_profile"), within=10)

    secrets = {
        access,
        refresh_token,
        tokens["id_token"],
        rotated.json()["access_token"],
        rotated.json()["refresh_token"],
        again.json()["refresh_token"],
        BACKEND_SECRET,
        "broker-secret",  # the broker's own secret at the upstream
        *(result.verifier or "",),
        *(cookie.value for cookie in broker.cookies.jar),
        *_front_channel_values(result.hops),
        *await _sent_upstream(idp),
        *await _upstream_tokens(traced.runtime, subject),
    }
    secrets.discard("")
    spans = traced.spans
    assert len(servers(spans)) >= 12 and named(spans, "process sync_profile")
    said = everything_said(spans)
    leaked = sorted(secret for secret in secrets if secret in said)
    assert leaked == []


async def _has_span(traced: Traced, name: str) -> bool:
    return bool(named(traced.spans, name))


def _front_channel_values(hops: list[httpx2.Response]) -> list[str]:
    """The codes, states, nonces and PKCE challenges in the URLs the browser went through."""
    keep = ("code", "state", "nonce", "code_challenge")
    values = []
    for hop in hops:
        for url in (str(hop.request.url), hop.headers.get("location", "")):
            query = query_of(url)
            values += [query[name] for name in keep if query.get(name)]
    return values


async def _sent_upstream(idp: httpx2.AsyncClient) -> list[str]:
    """The code and PKCE verifier the broker sent to the upstream's token endpoint."""
    requests = (await idp.get("/_control/requests")).json()
    return [
        str(request["form"][name])
        for request in requests
        for name in ("code", "code_verifier", "refresh_token", "client_secret")
        if request.get("form", {}).get(name)
    ]


async def _upstream_tokens(runtime: Runtime, subject: str) -> list[str]:
    async with runtime.engine.connect() as connection:
        profile = select(PROFILES.c.id).where(PROFILES.c.subject == subject)
        row = (await connection.execute(select(LINKS).where(LINKS.c.profile_id.in_(profile)))).one()
    return [token for token in stored_tokens(row, runtime.settings.keyring) if token]


# --- jobs ---------------------------------------------------------------------------------------


async def test_an_in_process_job_is_a_child_of_the_request_that_queued_it(
    database_url: str,
    upstream_idp: str,
    keyring: Keyring,
    idp: httpx2.AsyncClient,
    picture_server: tuple[str, list[str]],
) -> None:
    base, _asked = picture_server
    provider, exporter = recording_provider()
    settings = broker_settings(
        database_url, upstream_idp, keyring, allow_private_network_fetch=True
    )
    async with running_broker(settings, tracer_provider=provider) as (_runtime, broker):
        await signed_in(broker, idp, picture=f"{base}/alice.png")

        async def synced() -> bool:
            return bool(named(exporter.get_finished_spans(), "process sync_profile"))

        await eventually(synced, within=10)

    spans = list(exporter.get_finished_spans())
    callback = one(servers(spans), CALLBACK)
    job = one(spans, "process sync_profile")
    assert job.parent is not None and callback.context is not None
    assert job.parent.span_id == callback.context.span_id
    fetched = [(span.attributes or {}).get("url.full") for span in descendants(spans, job)]
    assert f"{base}/alice.png" in fetched  # the picture, beside the upstream's userinfo


async def test_a_sign_in_and_the_profile_sync_it_queued_through_redis_are_one_trace(
    database_url: str,
    upstream_idp: str,
    keyring: Keyring,
    redis_url: str,
    idp: httpx2.AsyncClient,
    picture_server: tuple[str, list[str]],
) -> None:
    base, asked = picture_server
    provider, exporter = recording_provider()
    queue_name = f"broker:test-jobs:{uuid.uuid4().hex}"
    settings = broker_settings(
        database_url,
        upstream_idp,
        keyring,
        redis_url=redis_url,
        allow_private_network_fetch=True,
    )
    runtime = build_runtime(settings, clock=SystemClock(), tracer_provider=provider)
    await runtime.jobs.aclose()
    # A queue of this test's own, so no other worker on this Redis takes the job.
    runtime.jobs = ArqJobQueue(
        redis_url, queue_name=queue_name, tracer=provider.get_tracer(job_tracing.TRACER_NAME)
    )
    try:
        async with serving(runtime) as broker:
            await signed_in(broker, idp, picture=f"{base}/alice.png")
        # A job queued outside any span (as the periodic timer queues its jobs).
        periodic = await runtime.jobs.enqueue(JobName.NOOP, NoopPayload())
        # The worker's own code path (its arq functions, resources and spans), in this process.
        options = build_worker_options(
            settings, queue_name=queue_name, burst=True, tracer_provider=provider
        )
        worker = Worker(**options, handle_signals=False)
        try:
            assert await worker.run_check() == 2
        finally:
            await worker.close()
    finally:
        await drop_queue(redis_url, queue_name)

    assert asked == ["/alice.png"]
    spans = list(exporter.get_finished_spans())
    callback = one(servers(spans), CALLBACK)
    send = one(spans, "send sync_profile")
    job = one(spans, "process sync_profile")
    assert send in descendants(spans, callback)
    assert job.parent is not None and send.context is not None
    assert job.parent.span_id == send.context.span_id and job.parent.is_remote
    assert trace_id(job) == trace_id(callback)
    assert job.kind is SpanKind.CONSUMER
    assert job.attributes is not None
    assert job.attributes["messaging.system"] == "arq"
    assert job.attributes["messaging.destination.name"] == queue_name
    fetched = [(span.attributes or {}).get("url.full") for span in descendants(spans, job)]
    assert f"{base}/alice.png" in fetched  # the picture, beside the upstream's userinfo
    assert any(
        span.instrumentation_scope is not None and span.instrumentation_scope.name == SQLALCHEMY
        for span in children(spans, job)
    )
    # The job queued outside any span starts a trace of its own.
    sent_alone = one(spans, "send noop")
    ran_alone = one(spans, "process noop")
    assert sent_alone.parent is None
    assert (ran_alone.attributes or {})["messaging.message.id"] == periodic
    assert trace_id(ran_alone) == trace_id(sent_alone) != trace_id(callback)
