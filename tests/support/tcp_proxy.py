"""A TCP proxy in front of a real server that can cut a connection at a chosen moment.

Tests use it between the broker and PostgreSQL to lose the server's answer to a statement the
server has already executed and committed: the failure a network blip or a dying proxy causes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class CuttingProxy:
    """Forwards bytes both ways; ``cut_next_reply()`` drops the next server reply and hangs up,
    ``hang_up()`` drops every connection at once."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._cut_armed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # the two pumps of each connection
        self._handlers: set[asyncio.Task[None]] = set()  # one per accepted connection

    def cut_next_reply(self) -> None:
        self._cut_armed = True

    def hang_up(self) -> None:
        """Drop every connection now, whatever is in flight (a network failure)."""
        for task in list(self._tasks):
            task.cancel()

    async def start(self) -> None:
        """Listen on ``port`` (a free one the first time; the same one after ``stop()``)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection (the database "goes away")."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        upstream = asyncio.create_task(self._pump(client_r, server_w, replies=False))
        downstream = asyncio.create_task(self._pump(server_r, client_w, replies=True))
        self._tasks.update((upstream, downstream))
        try:
            await asyncio.wait((upstream, downstream), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            self._tasks.difference_update((upstream, downstream))

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        while data := await reader.read(65536):
            if replies and self._cut_armed:
                self._cut_armed = False
                self.cuts += 1
                return  # the reply is lost; both sides are closed
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def cutting_proxy(host: str, port: int) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
