"""The benchmarks' throw-away PostgreSQL database: created on the server, dropped afterwards.

``BROKER_BENCH_DATABASE_URL`` names the server (default: the local one, user postgres).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from sqlalchemy.engine import make_url

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SERVER_URL_ENV = "BROKER_BENCH_DATABASE_URL"


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as psycopg's ``connect`` takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def throwaway_database(server_url: str, prefix: str) -> Iterator[str]:
    """A fresh ``<prefix><random>`` database on the server; dropped when the block ends."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(server_url)
            .set(database=name, drivername="postgresql+psycopg")
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_database(server_url: str) -> contextlib.AbstractContextManager[str]:
    """A fresh ``bench_<random>`` database for one benchmark run."""
    return throwaway_database(server_url, "bench_")
