"""The request observer's pieces without I/O: request ids, the access logger, schema states."""

from __future__ import annotations

import io
import json

import httpx2
import pytest
from broker.http.metrics import BrokerMetrics
from broker.http.request_observer import ObservedRoute, RequestObserver, request_id_of
from shared.db.migrate import SchemaRevisions
from shared.logging import build_access_logger
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


@pytest.mark.parametrize(
    "given",
    ["3f2a9c1e-8b7d-4c2a-9e1f-0a1b2c3d4e5f", "lb-7f3a.42", "Root:1-5759e988-bd862e3fe"],
)
def test_a_plausible_request_id_is_kept(given: str) -> None:
    assert request_id_of(_scope((b"x-request-id", given.encode()))) == given


@pytest.mark.parametrize(
    "given",
    [
        "",
        "x" * 129,  # too long to be an id
        "has space",
        "eyJhbGciOiJFUzI1NiJ9",  # the start of a JWT: never logged
        "a\nforged-log-line",
    ],
)
def test_anything_else_is_replaced_by_a_new_uuid(given: str) -> None:
    made = request_id_of(_scope((b"x-request-id", given.encode())))
    assert made != given
    assert len(made) == 32 and int(made, 16) >= 0


def test_access_logger_writes_one_json_line_and_honours_the_level() -> None:
    stream = io.StringIO()
    build_access_logger("INFO", "json", stream).info("http.request", route="/token", status=200)
    entry = json.loads(stream.getvalue())
    assert entry["event"] == "http.request"
    assert entry["level"] == "info"
    assert entry["logger"] == "broker.access"
    assert entry["route"] == "/token"
    assert entry["timestamp"].endswith("Z")
    quiet = io.StringIO()
    build_access_logger("WARNING", "json", quiet).info("http.request")
    assert quiet.getvalue() == ""


def test_console_format_is_human_readable() -> None:
    stream = io.StringIO()
    build_access_logger("INFO", "console", stream).info("http.request", route="/token")
    assert "http.request" in stream.getvalue()
    assert not stream.getvalue().startswith("{")


def test_schema_states() -> None:
    revisions = SchemaRevisions(head="0004", known=frozenset({"0001", "0002", "0003", "0004"}))
    assert revisions.state("0004") == "current"
    assert revisions.state("0002") == "behind"
    assert revisions.state(None) == "behind"  # never migrated
    assert revisions.state("0005_next_release") == "ahead"


def test_the_real_revisions_know_their_head() -> None:
    revisions = SchemaRevisions.load()
    assert revisions.head in revisions.known
    assert len(revisions.known) >= 4


async def test_observer_counts_by_route_template_and_echoes_the_id() -> None:
    async def item(request: Request) -> Response:
        return PlainTextResponse(request.path_params["item_id"])

    stream = io.StringIO()
    metrics = BrokerMetrics()
    app = Starlette(
        routes=[ObservedRoute("/items/{item_id}", item)],
        middleware=[
            Middleware(
                RequestObserver, metrics=metrics, access_log=build_access_logger(stream=stream)
            )
        ],
    )
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get("/items/1", headers={"X-Request-ID": "abc-1"})
        await client.get("/items/2")
        missing = await client.get("/nothing")
    assert first.headers["x-request-id"] == "abc-1"
    assert missing.status_code == 404 and missing.headers["x-request-id"]
    exposition = metrics.render().decode()
    assert 'broker_http_requests_total{method="GET",route="/items/{item_id}",status="200"} 2.0' in (
        exposition
    )
    assert 'route="unmatched",status="404"' in exposition
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["route"] for line in lines] == ["/items/{item_id}"] * 2 + ["unmatched"]
    assert lines[0]["request_id"] == "abc-1"
