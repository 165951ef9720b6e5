"""Direct dispatch of the hot paths: what goes where, and how their errors are answered."""

from __future__ import annotations

import io
import json

import httpx2
import pytest
import structlog
from broker.app import DIRECT, EXCEPTION_HANDLERS, create_app
from broker.http.body_limit import BodyLimit
from broker.http.direct_routes import DirectRoutes, direct_endpoints
from broker.http.errors import InvalidGrant
from broker.http.metrics import BrokerMetrics
from broker.http.request_observer import RequestObserver
from shared.logging import build_access_logger
from shared.runtime import build_runtime
from shared.settings import make_settings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class Endpoint:
    """A raw ASGI endpoint that answers its name, or raises what it is given."""

    def __init__(self, name: str, raises: Exception | None = None) -> None:
        self.name = name
        self.raises = raises

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.raises is not None:
            raise self.raises
        via = "router" if "router" in scope else "direct"
        await PlainTextResponse(f"{self.name} {via}")(scope, receive, send)


class Tagged:
    """Route middleware that marks the response, to show direct calls keep it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-tagged", b"yes")]
            await send(message)

        await self.app(scope, receive, tagged)


class FailsAfterStart:
    """Starts a 200, then fails before the body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("failed after the start")


def _client(app: ASGIApp) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")


async def test_exact_method_and_path_skip_the_router_and_keep_route_middleware() -> None:
    routes = [
        Route(
            "/token",
            Endpoint("token"),
            methods=["POST", "OPTIONS"],
            middleware=[Middleware(Tagged)],
        ),
        Route("/other", Endpoint("other"), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    direct = DirectRoutes(app, direct_endpoints(routes, [("POST", "/token")]), EXCEPTION_HANDLERS)
    async with _client(direct) as client:
        posted = await client.post("/token")
        assert (posted.text, posted.headers["x-tagged"]) == ("token direct", "yes")
        # Another method, a near path, another route: Starlette's router, as before.
        assert (await client.options("/token")).text == "token router"
        assert (await client.post("/token/", follow_redirects=False)).status_code == 307
        assert (await client.post("/other")).text == "other router"
        assert (await client.get("/token")).status_code == 405


@pytest.mark.parametrize(
    ("direct", "problem"),
    [
        ([("POST", "/function")], "cannot be dispatched directly"),
        ([("GET", "/items/7")], "cannot be dispatched directly"),
        ([("GET", "/missing")], "no route"),
        ([("GET", "/asgi")], "no route"),  # the route takes POST only
    ],
)
def test_only_static_routes_with_asgi_endpoints_can_be_direct(
    direct: list[tuple[str, str]], problem: str
) -> None:
    async def function(request: Request) -> Response:
        return PlainTextResponse("")

    routes = [
        Route("/function", function, methods=["POST"]),
        Route("/items/{item_id}", Endpoint("item"), methods=["GET"]),
        Route("/asgi", Endpoint("asgi"), methods=["POST"]),
    ]
    with pytest.raises(ValueError, match=problem):
        direct_endpoints(routes, direct)


def test_the_route_chosen_is_the_one_the_router_would_choose() -> None:
    first, second = Endpoint("first"), Endpoint("second")
    routes = [Route("/twice", first, methods=["POST"]), Route("/twice", second, methods=["POST"])]
    assert direct_endpoints(routes, [("POST", "/twice")]) == {("POST", "/twice"): first}
    # A parameter route listed earlier catches the path in the router: it cannot go direct.
    shadowed = [Route("/{anything}", Endpoint("any"), methods=["POST"]), *routes]
    with pytest.raises(ValueError, match="cannot be dispatched directly"):
        direct_endpoints(shadowed, [("POST", "/twice")])


async def test_a_mounted_app_goes_through_the_router() -> None:
    routes = [Route("/token", Endpoint("token"), methods=["POST"])]
    direct = DirectRoutes(
        Starlette(routes=routes), direct_endpoints(routes, [("POST", "/token")]), {}
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/broker/token",
        "root_path": "/broker",
        "headers": [],
        "query_string": b"",
    }
    await direct(scope, receive, send)
    assert sent[-1]["body"] == b"token router"


def test_the_broker_dispatches_its_hot_paths_directly(tmp_path) -> None:
    runtime = build_runtime(make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/b.db"))
    app = create_app(runtime)
    # The observer outermost, then the body cap (docs/security.md "Body limits"): the direct
    # routes are behind it like every other route.
    assert isinstance(app, RequestObserver) and isinstance(app.app, BodyLimit)
    direct = app.app.app
    assert isinstance(direct, DirectRoutes)
    assert (
        set(direct.endpoints)
        == set(DIRECT)
        == {
            ("GET", "/.well-known/openid-configuration"),
            ("GET", "/.well-known/jwks.json"),
            ("POST", "/token"),
            ("POST", "/auth/oauth2/refresh"),
        }
    )


async def test_errors_are_answered_by_the_apps_handlers_with_the_request_id() -> None:
    routes = [
        Route(
            "/grant",
            Endpoint("grant", InvalidGrant("the refresh token is invalid")),
            methods=["POST"],
        ),
        Route("/broken", Endpoint("broken", RuntimeError("bug")), methods=["POST"]),
        Route("/late", FailsAfterStart(), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    direct = [("POST", "/grant"), ("POST", "/broken"), ("POST", "/late")]
    metrics = BrokerMetrics()
    stream = io.StringIO()
    observed = RequestObserver(
        DirectRoutes(app, direct_endpoints(routes, direct), EXCEPTION_HANDLERS),
        metrics=metrics,
        access_log=build_access_logger(stream=stream),
    )
    async with _client(observed) as client:
        refused = await client.post("/grant", headers={"X-Request-ID": "req-1"})
        assert refused.status_code == 400
        assert refused.json() == {
            "error": "invalid_grant",
            "error_description": "the refresh token is invalid",
        }
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["x-request-id"] == "req-1"
        with structlog.testing.capture_logs() as logged:
            failed = await client.post("/broken", headers={"X-Request-ID": "req-2"})
        assert failed.status_code == 500
        assert failed.json()["error"] == "server_error" and "bug" not in failed.text
        assert failed.headers["x-request-id"] == "req-2"
        assert [(e["event"], e["path"]) for e in logged] == [("request.failed", "/broken")]
        # A response under way is not followed by an error response: the error goes on up.
        with pytest.raises(RuntimeError, match="after the start"):
            await client.post("/late")
    exposition = metrics.render().decode()
    assert 'method="POST",route="/grant",status="400"} 1.0' in exposition
    assert 'method="POST",route="/broken",status="500"} 1.0' in exposition
    assert 'method="POST",route="/late",status="200"} 1.0' in exposition
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["route"], line["status"]) for line in lines] == [
        ("/grant", 400),
        ("/broken", 500),
        ("/late", 200),
    ]
