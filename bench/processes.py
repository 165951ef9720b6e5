"""The benchmarks' subprocesses: start a server, wait until it answers, stop it on the way out.

Used by ``bench.servers`` (the broker and the baseline app) and ``bench.worker`` (the upstream
stand-in and the sync workers). Every process runs in a session of its own and is stopped by the
block that started it, also on Ctrl-C, SIGTERM (see :func:`unwind_on_signals`) or an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 25.0  # the broker's uvicorn waits up to 20 s for in-flight requests
LOG_TAIL_CHARS = 3000

_ERROR_LOG_LINE = re.compile(r'"level":\s*"(error|critical)"|Traceback \(most recent call last\)')


class BenchError(RuntimeError):
    """The benchmark could not be set up (a server did not start, wrk failed...)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET (any status; no exception for 4xx/5xx)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat), 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the machine, all cores (/proc/stat)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


def process_ids(name: str) -> list[int]:
    """The processes whose command name is ``name`` (/proc/<pid>/comm), e.g. ``postgres``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text(encoding="ascii").strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return found


@dataclass
class Server:
    """A subprocess started by :func:`server`, with its combined output in ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def error_lines(self, since: int = 0) -> list[str]:
        """Error and traceback lines logged after ``since`` characters of the log."""
        return [line for line in self.log()[since:].splitlines() if _ERROR_LOG_LINE.search(line)]

    def rss_mb(self) -> float | None:
        """Resident set size from /proc/<pid>/status, in MB (MiB)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="ascii")
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; always reaped."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def server(
    name: str, command: list[str], *, env: dict[str, str], ready_url: str, log_path: Path
) -> Iterator[Server]:
    """Run ``command`` until the block ends, once ``ready_url`` answers 200."""
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this script, which then stops it in order.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(name, process, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise BenchError(
                    f"{name} exited with {process.returncode} before it was ready:\n"
                    f"{running.log()[-LOG_TAIL_CHARS:]}"
                )
            try:
                if http_get(ready_url, timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{name} was not ready within {READY_TIMEOUT:.0f} s:\n"
                    f"{running.log()[-LOG_TAIL_CHARS:]}"
                )
            time.sleep(0.1)
        yield running
    finally:
        running.stop()


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any BROKER_* variable, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER_")}
    env.update(extra)
    return env


def report_server_log(server_: Server, since: int) -> None:
    """Print error lines the server logged after ``since`` characters of its log."""
    errors = server_.error_lines(since)
    if errors:
        print(f"\n{server_.name} logged {len(errors)} error line(s); the first ones:")
        for line in errors[:5]:
            print(f"  {line[:400]}")
    else:
        print(f"\n{server_.name} logged no errors during the load.")


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def unwind_on_signals() -> None:
    """Make Ctrl-C and SIGTERM both unwind through the cleanup (even if SIGINT was inherited as
    ignored, as in a background job)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)


def run_guarded(bench: Callable[[], int]) -> int:
    """Run a benchmark's body as a command: Ctrl-C or SIGTERM unwinds every ``with`` block
    (servers stopped, databases dropped) and exits 130; a ``BenchError`` is one line, exit 1."""
    unwind_on_signals()
    try:
        return bench()
    except KeyboardInterrupt:
        print("\nbench: interrupted; cleaned up", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
