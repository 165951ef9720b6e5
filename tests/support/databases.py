"""Test databases: a fresh PostgreSQL database per run (built by the real migrations), and Redis.

Sources, in order: ``BROKER_TEST_DATABASE_URL`` / ``BROKER_TEST_REDIS_URL`` (CI sets them), else
testcontainers where a Docker engine answers, else a failure that says how to provide them.
Nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from bench.database import throwaway_database

HOW_TO = (
    "Integration tests need PostgreSQL and Redis. Set BROKER_TEST_DATABASE_URL "
    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and BROKER_TEST_REDIS_URL "
    "(e.g. redis://127.0.0.1:6379/0), or run where a Docker engine is available."
)


class ServiceUnavailable(RuntimeError):
    pass


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextlib.contextmanager
def postgres_server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server the tests may create databases on."""
    configured = os.environ.get("BROKER_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    if not docker_available():
        raise ServiceUnavailable(HOW_TO)
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
        yield container.get_connection_url()


@contextlib.contextmanager
def redis_server_url() -> Iterator[str]:
    configured = os.environ.get("BROKER_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if not docker_available():
        raise ServiceUnavailable(HOW_TO)
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


def fresh_database(server_url: str) -> contextlib.AbstractContextManager[str]:
    """A uniquely named ``broker_test_<random>`` database; dropped when the block ends."""
    return throwaway_database(server_url, "broker_test_")
