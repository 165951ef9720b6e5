"""``broker`` commands run in the test's own process: ``broker.cli.main.main`` with the
command's arguments and environment, its output captured. The same result as
``run_broker_cli`` (tests/support/processes.py), without the second or so a new interpreter
takes to import the CLI; each command family keeps one test that runs the real console script.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
import traceback
from collections.abc import Iterator, Mapping

from broker.cli.main import main

from tests.support.logging_state import logging_kept

# What getpass.getuser() reads (the CLI's audit actor is cli:<login name>), in its order.
_LOGIN_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")
_one_at_a_time = threading.Lock()


@contextlib.contextmanager
def _login_of(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ``'s login-name variables as in ``env`` for the block."""
    saved = {name: os.environ.get(name) for name in _LOGIN_VARIABLES}
    try:
        for name in _LOGIN_VARIABLES:
            if name in env:
                os.environ[name] = env[name]
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _exit_status(code: object) -> tuple[int, str]:
    """The exit status ``SystemExit(code)`` gives a process, and what it writes to stderr."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code, ""
    return 1, f"{code}\n"


def _run(args: tuple[str, ...], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        _one_at_a_time,
        logging_kept(),
        _login_of(env),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            main(list(args), environ=dict(env))
            status = 0
        except SystemExit as exc:
            status, message = _exit_status(exc.code)
            stderr.write(message)
        except Exception:  # what the interpreter does with an uncaught exception
            traceback.print_exc(file=stderr)
            status = 1
    return subprocess.CompletedProcess(
        ["broker", *args], status, stdout.getvalue(), stderr.getvalue()
    )


def run_broker_cli_here(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``broker <args>`` with ``env`` as its environment, in this process: its output as text
    and its exit status, as ``run_broker_cli`` gives them. Runs in a thread of its own (the
    commands call ``asyncio.run``), so it may be called from a test's event loop."""
    result: list[subprocess.CompletedProcess[str]] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(_run(args, env))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="broker-cli")
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():
        raise TimeoutError(f"broker {' '.join(args)} still running after 60 s")
    if failure:
        raise failure[0]
    return result[0]
