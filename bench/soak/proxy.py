"""A small round-robin TCP proxy: the one address (the issuer) in front of the soak's brokers.

Each new connection goes to the next backend in turn; a backend that refuses the connection
(killed, not listening yet) is skipped for the next one, as a load balancer's passive check
would. Bytes are copied both ways until both sides are done; a backend that dies mid-request
closes the client's side too, so the client sees the connection drop, as it would behind a real
load balancer. The load generator opens one connection per request, so requests alternate
between the brokers.

Run as ``python -m bench.soak.proxy --port N --backend 127.0.0.1:A --backend 127.0.0.1:B``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import Sequence

CONNECT_TIMEOUT = 2.0
CHUNK = 65536


class RoundRobinProxy:
    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self._turn = itertools.count()
        self.connections: set[asyncio.Task[None]] = set()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for step in range(len(self.backends)):
            host, port = self.backends[(first + step) % len(self.backends)]
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        return None

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)
        backend = await self._connect()
        if backend is None:
            client_w.close()
            return
        server_r, server_w = backend
        try:
            await asyncio.gather(_pump(client_r, server_w), _pump(server_r, client_w))
        finally:
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on; a reset ends both directions."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


async def serve(port: int, backends: Sequence[tuple[str, int]]) -> None:
    proxy = RoundRobinProxy(backends)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
        server.close()
        for connection in list(proxy.connections):
            connection.cancel()
        await asyncio.gather(*proxy.connections, return_exceptions=True)


def _backend(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", type=_backend, action="append", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
