"""Running a stand-in as a process: ``main(argv)`` with ``--host``, ``--port`` and the one OAuth
client it knows (``--client-id``/``--client-secret``), served by uvicorn until interrupted."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp

DEFAULT_CLIENT_ID = "broker"
DEFAULT_CLIENT_SECRET = "broker-secret"
"""The one OAuth client a stand-in knows unless told otherwise (the broker's test config)."""

Build = Callable[[argparse.Namespace, str], ASGIApp]
"""Builds the app from the parsed arguments and the default base URL ``http://127.0.0.1:PORT``."""


def run(
    argv: Sequence[str] | None,
    *,
    description: str | None,
    default_port: int,
    build: Build,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse ``argv``, build the stand-in and serve it until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(
        description=description.splitlines()[0] if description else None
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    app = build(args, f"http://127.0.0.1:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
