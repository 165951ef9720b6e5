"""A TCP proxy in front of a real server that can cut a connection at a chosen moment.

Tests use it between the broker and PostgreSQL to lose the server's answer to a statement the
server has already executed and committed: the failure a network blip or a dying proxy causes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class CuttingProxy:
    """Forwards bytes both ways; ``cut_next_reply()`` drops the next server reply and hangs up."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._cut_armed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def cut_next_reply(self) -> None:
        self._cut_armed = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
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
