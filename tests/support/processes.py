"""Start real server processes for tests and wait until they answer over HTTP.

``run_process`` runs a command with its output captured in a temporary log file, polls a
readiness URL, and stops the process (SIGTERM, then SIGKILL) when the ``with`` block ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
from shared.client_tls import client_tls_context

if TYPE_CHECKING:
    from shared.crypto.keyring import Keyring

_LOG_TAIL_CHARS = 3000
_STOP_GRACE_SECONDS = 5.0
_POLL_INTERVAL_SECONDS = 0.05


def broker_command(*args: str) -> list[str]:
    """The ``broker`` console script of this interpreter's environment, with ``args``."""
    return [str(Path(sys.executable).parent / "broker"), *args]


def broker_serve_command(port: int) -> list[str]:
    """``broker serve`` from this interpreter's environment, on ``port``."""
    return broker_command("serve", "--port", str(port))


def cli_env(
    config: Path | None = None, *, database_url: str, keyring: Keyring, **extra: str
) -> dict[str, str]:
    """The environment a ``broker`` command of a test runs in: this one without its own
    ``BROKER_`` variables, then ``config`` (its var directory beside it), the database, the
    keys, WARNING logs; ``extra`` adds or overrides."""
    files = (
        {}
        if config is None
        else {
            "BROKER_CONFIG": str(config),
            "BROKER_VAR_DIR": str(config.parent / "var"),
        }
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BROKER_")},
        **files,
        "BROKER_DATABASE_URL": database_url,
        "BROKER_ENCRYPTION_KEYS": keyring.serialize(),
        "BROKER_LOG_LEVEL": "WARNING",
        **extra,
    }


def run_broker_cli(
    *args: str, env: dict[str, str], cwd: str | Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``broker <args>`` as an operator runs it, to the end: its output as text, its exit
    status for the test to check."""
    return subprocess.run(
        broker_command(*args),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def broker_env(
    *, issuer: str, config: Path, database_url: str, keyring: Keyring, var_dir: Path, **extra: str
) -> dict[str, str]:
    """The variables a ``broker serve`` process of a test needs; ``extra`` adds or overrides."""
    return {
        "BROKER_ISSUER": issuer,
        "BROKER_CONFIG": str(config),
        "BROKER_DATABASE_URL": database_url,
        "BROKER_ENCRYPTION_KEYS": keyring.serialize(),
        "BROKER_VAR_DIR": str(var_dir),
        **extra,
    }


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningProcess:
    """A process started by :func:`run_process`."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def read_log(self) -> str:
        """Return everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``, kill it if it ignores SIGTERM, and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _answers(url: str) -> bool:
    """Tell whether ``url`` answers with a status below 500."""
    try:
        return httpx2.get(url, timeout=1.0, verify=client_tls_context()).status_code < 500
    except httpx2.HTTPError:
        return False


@contextmanager
def run_process(
    args: list[str],
    *,
    ready_url: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 30.0,
) -> Iterator[RunningProcess]:
    """Run ``args`` until the ``with`` block ends, once ``ready_url`` answers.

    ``env`` holds variables layered over the current environment. Standard output and
    error go to a temporary log file, which is kept after the process stops so that a
    failing test can still read it. Raises ``RuntimeError`` with the end of the log if the
    process exits or ``timeout`` seconds pass before ``ready_url`` answers with a status
    below 500.
    """
    fd, log_name = tempfile.mkstemp(prefix="test-process-", suffix=".log")
    log_path = Path(log_name)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=environment, cwd=cwd
        )
    running = RunningProcess(process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready_url):
            if process.poll() is not None:
                problem = f"exited with status {process.returncode}"
            elif time.monotonic() >= deadline:
                problem = f"did not answer {ready_url} within {timeout:g} s"
            else:
                time.sleep(_POLL_INTERVAL_SECONDS)
                continue
            tail = running.read_log()[-_LOG_TAIL_CHARS:]
            raise RuntimeError(f"process {args!r} {problem}; log {log_path}:\n{tail}")
        yield running
    finally:
        _stop(process)


@dataclass(frozen=True)
class BrokerProcess:
    """A ``broker serve`` started by :func:`broker_process`: the issuer it answers as, the
    variables it runs with (a worker or a CLI over the same database takes them too), and the
    process."""

    issuer: str
    env: dict[str, str]
    process: RunningProcess


@contextmanager
def broker_process(
    config: Path,
    *,
    database_url: str,
    keyring: Keyring,
    port: int | None = None,
    issuer: str | None = None,
    args: Sequence[str] = (),
    ready_path: str = "/readyz",
    cwd: str | None = None,
    **extra: str,
) -> Iterator[BrokerProcess]:
    """``broker serve`` (plus ``args``) with ``config`` on ``port`` (a free one by default) until
    the ``with`` block ends, once ``ready_path`` answers.

    Its var directory is ``var`` beside ``config``; its issuer is its own URL unless ``issuer``
    says otherwise (replicas behind one issuer); ``extra`` variables add or override.
    """
    port = free_port() if port is None else port
    url = f"http://127.0.0.1:{port}"
    issuer = url if issuer is None else issuer
    env = broker_env(
        issuer=issuer,
        config=config,
        database_url=database_url,
        keyring=keyring,
        var_dir=config.parent / "var",
        **extra,
    )
    command = [*broker_serve_command(port), *args]
    with run_process(command, ready_url=f"{url}{ready_path}", env=env, cwd=cwd) as process:
        yield BrokerProcess(issuer, env, process)


DEV_BROKER_CONFIG = """\
providers:
  - {id: dev, type: dev}
clients:
  - {id: web, redirect_uris: ["http://127.0.0.1:3000/callback"]}
"""


@contextmanager
def dev_broker_process(
    directory: Path,
    *,
    database_url: str,
    keyring: Keyring,
    cwd: str,
    port: int | None = None,
    **extra: str,
) -> Iterator[tuple[str, RunningProcess]]:
    """``broker serve`` on ``port`` (a free one by default) with the dev provider and the
    public client ``web`` (small pool, no periodic jobs, JSON logs; ``extra`` variables add or
    override); its issuer URL and process."""
    config = directory / "broker.yaml"
    config.write_text(DEV_BROKER_CONFIG, encoding="utf-8")
    with broker_process(
        config,
        database_url=database_url,
        keyring=keyring,
        port=port,
        cwd=cwd,
        **{
            "BROKER_DB_POOL_SIZE": "2",
            "BROKER_PERIODIC_JOBS": "0",
            "BROKER_LOG_FORMAT": "json",
            **extra,
        },
    ) as broker:
        yield broker.issuer, broker.process
