"""The body cap at ASGI level: what the application may receive, and what the client gets."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from broker.http.body_limit import BodyLimit
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

CAP = 1024


def http_scope(*headers: tuple[bytes, bytes]) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "root_path": "",
        "query_string": b"",
        "headers": list(headers),
    }


class Client:
    """The server's side of one request: body chunks to hand out, and what was sent back."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.receive_calls = 0
        self.handed_out = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.receive_calls += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        self.handed_out += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, starts
        return int(starts[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])

    def json(self) -> object:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if "body" in m))


class ReadsBody:
    """An endpoint that reads its whole body (as ``request.body()`` does) and echoes its size."""

    def __init__(self) -> None:
        self.calls = 0
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1

        async def counting() -> Message:
            message = await receive()
            self.received += len(message.get("body", b""))
            return message

        body = await Request(scope, counting).body()
        await JSONResponse({"size": len(body)})(scope, receive, send)


def run(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, client: Client
) -> Awaitable[None]:
    return BodyLimit(app, max_bytes=CAP)(scope, client.receive, client.send)


def assert_too_large(client: Client) -> None:
    assert client.status == 413
    assert client.json() == {
        "error": "invalid_request",
        "error_description": f"the request body is larger than {CAP} bytes",
    }
    assert client.headers[b"cache-control"] == b"no-store"


async def test_a_content_length_over_the_cap_is_answered_413_without_a_single_receive():
    app = ReadsBody()
    client = Client([b"x" * 50_000_000])
    await run(app, http_scope((b"content-length", b"50000000")), client)
    assert_too_large(client)
    assert client.receive_calls == 0
    assert app.calls == 0


@pytest.mark.parametrize(
    "values",
    [[b"ten"], [b"-1"], [b"1e3"], [b""], [b"10, 10"], [b"10", b"11"], [b"\xd9\xa1"]],
    ids=["word", "negative", "exponent", "empty", "list", "two values", "arabic digit"],
)
async def test_a_malformed_content_length_is_a_400_invalid_request(values):
    app = ReadsBody()
    client = Client([b"x" * 10])
    await run(app, http_scope(*((b"content-length", v) for v in values)), client)
    assert client.status == 400
    assert client.json()["error"] == "invalid_request"
    assert client.receive_calls == 0
    assert app.calls == 0


async def test_a_content_length_repeated_with_one_value_counts_once():
    app = ReadsBody()
    client = Client([b"x" * 10])
    await run(app, http_scope((b"content-length", b"10"), (b"content-length", b"10")), client)
    assert client.status == 200
    assert client.json() == {"size": 10}


async def test_a_chunked_body_is_cut_off_past_the_cap_and_the_application_never_runs():
    app = ReadsBody()
    client = Client([b"x" * 100] * 500_000)  # 50 MB in 100-byte chunks
    await run(app, http_scope((b"transfer-encoding", b"chunked")), client)
    assert_too_large(client)
    assert app.calls == 0
    assert client.handed_out <= CAP + 100  # reading stopped at the first chunk past the cap


async def test_a_chunked_body_within_the_cap_reaches_the_application_whole():
    app = ReadsBody()
    client = Client([b"a" * 300, b"b" * 300, b"c" * 424])  # exactly the cap
    await run(app, http_scope((b"transfer-encoding", b"chunked")), client)
    assert client.status == 200
    assert client.json() == {"size": CAP}


async def test_a_body_longer_than_declared_is_cut_off_and_the_413_replaces_the_answer():
    """A server that does not hold the client to its Content-Length (or a body that came with
    none): the application gets at most the cap, and whatever it answers, the client gets 413."""

    class SwallowsErrors(ReadsBody):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().__call__(scope, receive, send)
            except Exception:
                await JSONResponse({"ok": True})(scope, receive, send)

    for headers in ([(b"content-length", b"10")], []):
        app = SwallowsErrors()
        client = Client([b"x" * 100] * 500)
        await run(app, http_scope(*headers), client)
        assert_too_large(client)
        assert app.received <= CAP
        assert client.handed_out <= CAP + 100


async def test_a_response_already_started_is_aborted_not_answered_twice():
    async def streams_then_reads(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    client = Client([b"x" * 100] * 500)
    with pytest.raises(Exception, match="larger than"):
        await run(streams_then_reads, http_scope(), client)
    assert client.status == 200  # the one response start; no 413 after it
    assert client.handed_out <= CAP + 100
