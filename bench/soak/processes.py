"""The soak's processes: two brokers, two sync-workers, the upstream stand-in and the proxy.

Each is a :class:`Service`: a command, its environment, a readiness URL and a log file it
appends to across restarts (a line marks each start), which the faults can ``kill`` (SIGKILL)
and ``spawn`` again. Every process is started by this run in a session of its own, and stopped
by its own pid when the run ends (also on Ctrl-C or an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import yaml
from shared.crypto.keyring import Keyring

from bench.processes import (
    LOG_TAIL_CHARS,
    READY_TIMEOUT,
    ROOT,
    STOP_GRACE,
    VENV_BIN,
    BenchError,
    free_port,
    server_env,
)
from bench.soak.cluster import Cluster

PROVIDER = "corp"
USER_CLIENT = "web"
USER_REDIRECT = "http://127.0.0.1:3000/callback"
ADMIN_CLIENT = "console"
ADMIN_REDIRECT = "http://127.0.0.1:3000/console"
INTROSPECTING_CLIENT = "backend"
INTROSPECTING_SECRET = "backend-secret-at-least-32-characters"
QUEUE = "broker:jobs"
AUDIT_STREAM = "broker:audit"

_ERROR_LINE = re.compile(r'"level":\s*"(error|critical)"|Traceback \(most recent call last\)')
# arq's own lines (the workers log at INFO): a job starting and a job ending.
_JOB_STARTED = re.compile(r"→ (\S+?):(\w+)\(")
_JOB_ENDED = re.compile(r"[←↻⊘!] (\S+?):(\w+) ")


def _event(line: str) -> str:
    """The message of a JSON log line (the line itself if it is not one)."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            event = json.loads(line).get("event")
            if isinstance(event, str):
                return event
    return line


@dataclass
class Service:
    """One long-running process of the soak, restartable."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process (not waiting for it); its output is appended to the log."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            stamp = dt.datetime.now(dt.UTC).isoformat()
            log.write(f"--- soak: {self.name} start {self.starts} at {stamp}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, http: httpx2.AsyncClient, limit: float = READY_TIMEOUT) -> float:
        """Poll the readiness URL until it answers 200; the seconds it took. Raises
        ``BenchError`` if the process exits or the time runs out."""
        started = time.monotonic()
        while True:
            if not self.running:
                code = None if self.process is None else self.process.returncode
                raise BenchError(f"{self.name} exited ({code}):\n{self.log_tail()}")
            with contextlib.suppress(httpx2.HTTPError):
                if (await http.get(self.ready_url, timeout=1.0)).status_code == 200:
                    return time.monotonic() - started
            if time.monotonic() - started > limit:
                raise BenchError(f"{self.name} was not ready within {limit:.0f} s")
            await asyncio.sleep(0.1)

    async def is_ready(self, http: httpx2.AsyncClient) -> bool:
        try:
            return self.running and (await http.get(self.ready_url, timeout=1.0)).status_code == 200
        except httpx2.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL, by its own pid, and reap it."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; always reaped."""
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        return self.log()[-LOG_TAIL_CHARS:]

    def error_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if _ERROR_LINE.search(line)]

    def job_end(self, job_id: str) -> str | None:
        """arq's line for the end of job ``job_id`` in this process's log, if there is one."""
        for event in map(_event, self.log().splitlines()):
            match = _JOB_ENDED.search(event)
            if match is not None and match[1] == job_id:
                return event.strip()
        return None

    def unfinished_jobs(self, function: str) -> list[str]:
        """Job ids of ``function`` this process started and has not finished, from arq's log
        lines since its latest start."""
        events = [_event(line) for line in self.log().rsplit("--- soak: ", 1)[-1].splitlines()]
        started = [m[1] for e in events if (m := _JOB_STARTED.search(e)) and m[2] == function]
        ended = {m[1] for e in events if (m := _JOB_ENDED.search(e)) and m[2] == function}
        return [job for job in started if job not in ended]


@dataclass
class Services:
    """Everything the soak runs besides the cluster."""

    issuer: str
    upstream: Service
    brokers: list[Service]
    workers: list[Service]
    proxy: Service
    keyring: Keyring
    env: dict[str, str]  # the brokers' and workers' BROKER_* settings
    config_path: Path
    all: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.all = [self.upstream, *self.brokers, *self.workers, self.proxy]

    @property
    def upstream_url(self) -> str:
        return self.upstream.ready_url.removesuffix("/.well-known/openid-configuration")

    def stop_all(self) -> None:
        for service in reversed(self.all):
            service.stop()


def broker_config(upstream_url: str) -> dict[str, Any]:
    """One OIDC provider (the stand-in), the users' public client, an admin console allowed
    the ``admin`` scope, and a confidential client that introspects."""
    return {
        "providers": [
            {
                "id": PROVIDER,
                "type": "oidc",
                "display_name": "Soak upstream",
                "issuer": upstream_url,
                "client_id": "broker",
                "client_secret": "broker-secret",
                "scopes": ["openid", "email", "profile", "offline_access"],
                "profile_sync_interval": 0,
            }
        ],
        "clients": [
            {"id": USER_CLIENT, "redirect_uris": [USER_REDIRECT]},
            {
                "id": ADMIN_CLIENT,
                "redirect_uris": [ADMIN_REDIRECT],
                "scopes": ["openid", "email", "profile", "offline_access", "admin"],
            },
            {
                "id": INTROSPECTING_CLIENT,
                "secret": INTROSPECTING_SECRET,
                "redirect_uris": ["http://127.0.0.1:4000/cb"],
            },
        ],
    }


def _python(*args: str) -> list[str]:
    return [str(VENV_BIN / "python"), *args]


def build_services(
    workdir: Path,
    cluster: Cluster,
    settings: Mapping[str, str],
    *,
    upstream_token_lifetime: int,
    job_timeout: float,
) -> Services:
    """The services' commands and environments, on free ports (nothing started yet)."""
    upstream_port, proxy_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    issuer = f"http://127.0.0.1:{proxy_port}"
    config_path = workdir / "broker.yaml"
    config_path.write_text(yaml.safe_dump(broker_config(upstream_url)), encoding="utf-8")
    keyring = Keyring.generate("soak1")
    env = server_env(
        {
            "BROKER_ISSUER": issuer,
            "BROKER_CONFIG": str(config_path),
            "BROKER_DATABASE_URL": cluster.postgres.url,
            "BROKER_REDIS_URL": cluster.redis.url,
            "BROKER_ENCRYPTION_KEYS": keyring.serialize(),
            "BROKER_VAR_DIR": str(workdir / "var"),
            "BROKER_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
    )
    upstream = Service(
        "upstream stand-in",
        _python(
            "-m",
            "standins.oidc",
            "--port",
            str(upstream_port),
            "--access-token-lifetime",
            str(upstream_token_lifetime),
        ),
        server_env({}),
        f"{upstream_url}/.well-known/openid-configuration",
        workdir / "upstream.log",
    )
    brokers = []
    for index in (1, 2):
        port = free_port()
        brokers.append(
            Service(
                f"broker {index}",
                [str(VENV_BIN / "broker"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env,
                f"http://127.0.0.1:{port}/readyz",
                workdir / f"broker-{index}.log",
            )
        )
    workers = []
    for index in (1, 2):
        port = free_port()
        workers.append(
            Service(
                f"sync-worker {index}",
                [
                    str(VENV_BIN / "sync-worker"),
                    *("--queue", QUEUE, "--max-jobs", "10"),
                    *("--job-timeout", str(job_timeout)),
                    *("--http-host", "127.0.0.1", "--http-port", str(port)),
                ],
                # INFO: arq's job lines say which worker is in the middle of which job.
                {**env, "BROKER_LOG_LEVEL": "INFO"},
                f"http://127.0.0.1:{port}/readyz",
                workdir / f"worker-{index}.log",
            )
        )
    backends = [broker.ready_url.removesuffix("/readyz").split("//", 1)[1] for broker in brokers]
    proxy = Service(
        "proxy",
        _python(
            "-m",
            "bench.soak.proxy",
            "--port",
            str(proxy_port),
            *(arg for backend in backends for arg in ("--backend", backend)),
        ),
        server_env({}),
        f"{issuer}/healthz",
        workdir / "proxy.log",
    )
    return Services(issuer, upstream, brokers, workers, proxy, keyring, env, config_path)


def broker_command(services: Services, *args: str) -> str:
    """Run ``broker ARGS…`` (the CLI) with the brokers' settings; its output."""
    result = subprocess.run(
        [str(VENV_BIN / "broker"), *args],
        cwd=ROOT,
        env=services.env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"broker {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


@contextlib.contextmanager
def stopped_at_exit(services: Services) -> Iterator[Services]:
    try:
        yield services
    finally:
        services.stop_all()
