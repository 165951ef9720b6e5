"""The soak's own PostgreSQL cluster and Redis server, on free ports in a temporary directory.

Never the machine's shared servers: the faults restart PostgreSQL and stop Redis, so both are
throw-away ones started here (``initdb`` + ``pg_ctl`` as the ``postgres`` user when run as root,
which ``initdb`` requires; ``redis-server`` with an append-only file, so a stop keeps the queue
and the audit stream as a production Redis would) and removed when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from bench.processes import BenchError, free_port

DATABASE = "broker"
PG_START_TIMEOUT = 60  # seconds pg_ctl waits for the server (-t)
REDIS_READY_TIMEOUT = 20.0
_PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "120",
    "shared_buffers": "'64MB'",
    # A throw-away cluster on a shared machine: its restarts are clean shutdowns (checkpointed),
    # so nothing the soak checks depends on fsync.
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


def _as_postgres() -> list[str]:
    """``runuser -u postgres --`` as root (initdb refuses root); nothing otherwise."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(command: list[str], what: str, timeout: float = 120.0) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}): {result.stderr or result.stdout}")


@dataclass
class Postgres:
    """A PostgreSQL cluster of its own: ``start``/``restart``/``stop`` through ``pg_ctl``."""

    datadir: Path
    socket_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        """The broker's ``BROKER_DATABASE_URL``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def libpq_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def init(self) -> None:
        for directory in (self.datadir, self.socket_dir, self.log_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(directory, "postgres", "postgres")
        _run(
            [
                *_as_postgres(),
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        settings = {
            **_PG_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.datadir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# broker soak\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _pg_ctl(self, *args: str) -> list[str]:
        return [*_as_postgres(), "pg_ctl", "-D", str(self.datadir), "-l", str(self.log_path), *args]

    def start(self) -> None:
        _run(self._pg_ctl("-w", "-t", str(PG_START_TIMEOUT), "start"), "pg_ctl start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is dropped, the server comes back."""
        _run(
            self._pg_ctl("-w", "-t", str(PG_START_TIMEOUT), "-m", "fast", "restart"),
            "pg_ctl restart",
        )

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                self._pg_ctl("-w", "-t", "30", "-m", "immediate", "stop"),
                capture_output=True,
                timeout=60,
                check=False,
            )

    def create_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Redis:
    """``redis-server`` with an append-only file in its own directory; ``stop`` is a clean
    shutdown (SIGTERM: the file is flushed), ``start`` brings it back with what it held."""

    directory: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + REDIS_READY_TIMEOUT
        client = self.client()
        try:
            while True:
                if self.process.poll() is not None:
                    raise BenchError(f"redis-server exited with {self.process.returncode}")
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not answer within {REDIS_READY_TIMEOUT} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class Cluster:
    postgres: Postgres
    redis: Redis


@contextlib.contextmanager
def cluster(workdir: Path) -> Iterator[Cluster]:
    """A fresh PostgreSQL (with an empty ``broker`` database) and Redis under ``workdir``,
    stopped when the block ends."""
    # initdb runs as postgres, which must reach its directories inside the temporary one.
    workdir.chmod(0o755)
    postgres = Postgres(
        datadir=workdir / "pg" / "data",
        socket_dir=workdir / "pg" / "socket",
        log_path=workdir / "pg" / "log" / "postgresql.log",
    )
    redis_server = Redis(directory=workdir / "redis", log_path=workdir / "redis.log")
    try:
        postgres.init()
        postgres.start()
        postgres.create_database()
        redis_server.start()
        yield Cluster(postgres, redis_server)
    finally:
        redis_server.stop()
        postgres.stop()
