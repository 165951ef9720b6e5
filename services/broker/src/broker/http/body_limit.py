"""Every request body is read through one cap, before any handler parses it.

docs/security.md "Body limits" (``BROKER_MAX_BODY_BYTES``, 64 KiB by default). The cap is
enforced here, around the whole application, so no route can read an unbounded body:

- a ``Content-Length`` over the cap is answered 413 at once, without reading a byte of the body
  (no ``receive()``); a malformed one (not digits, or two that disagree) is a 400;
- a body of unknown length (``Transfer-Encoding: chunked``) is read here first, up to the cap:
  past it the reading stops, the application never runs and the client gets the same 413, so an
  oversized body is refused whatever its framing and whether or not the route reads bodies;
- a declared body within the cap reaches the application as it arrives, counted: should more
  arrive than the cap (a server that does not hold the client to its ``Content-Length``), the
  application gets no more of it and the client gets the 413 instead of whatever the application
  answers, or, when the application has already started its response, the request is aborted
  (an exception to the server) rather than answered twice.

The 413 is the broker's usual JSON error (``PayloadTooLarge``), with ``Cache-Control: no-store``.
What the client sends after it, the server discards without keeping it (uvicorn reads and drops
the rest of the body on a kept-alive connection).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.http.errors import InvalidRequest, PayloadTooLarge

_MAX_LENGTH_DIGITS = 19  # longer is over any cap; int() refuses very long digit strings


class MalformedContentLength(ValueError):
    """The request's ``Content-Length`` is not one decimal number."""


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body length the request declares, None without ``Content-Length``.

    RFC 9110 §8.6: repeated identical values count as one; anything but digits is malformed.
    """
    found: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (found is not None and value != found):
                raise MalformedContentLength
            found = value
    if found is None:
        return None
    return int(found) if len(found) <= _MAX_LENGTH_DIGITS else 10**_MAX_LENGTH_DIGITS


def _has_transfer_encoding(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding" for name, _ in headers)


class BodyLimit:
    """Pure ASGI middleware: request bodies over ``max_bytes`` are refused with a 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        try:
            length = declared_length(headers)
        except MalformedContentLength:
            response = InvalidRequest("the Content-Length header is malformed").response()
            await response(scope, receive, send)
            return
        if length is not None and length > self.max_bytes:
            await self.too_large().response()(scope, receive, send)
            return
        if length is None and _has_transfer_encoding(headers):
            await self._read_first(scope, receive, send)
        else:
            await self._count_while_read(scope, receive, send)

    async def _read_first(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body of unknown length: read it up to the cap, then hand it to the application."""
        body = bytearray()
        pending: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: say so in turn
                pending.append(message)
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self.too_large().response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        pending.insert(0, {"type": "http.request", "body": bytes(body), "more_body": bool(pending)})

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _count_while_read(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A declared (or no) body: passed through as it arrives, cut off past the cap."""
        received = 0
        overflowed = False
        started = False

        async def limited() -> Message:
            nonlocal received, overflowed
            if overflowed:
                raise self.too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflowed = True
                    raise self.too_large()
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if overflowed:
                return  # the 413 below replaces what the application answers
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            # Whatever the application raised once its body was cut off (our PayloadTooLarge,
            # or its own error about a truncated body) is answered by the 413 below; any other
            # failure goes on to the error handlers untouched.
            if not overflowed:
                raise
        if overflowed:
            if started:
                raise self.too_large()  # a response under way: abort it, never answer twice
            await self.too_large().response()(scope, receive, send)
