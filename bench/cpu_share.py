"""CPU time per request: the broker's and a local PostgreSQL server's per refresh, the baseline
app's per response, read from ``/proc``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.processes import cpu_seconds, process_ids
from bench.wrk import WrkResult


@dataclass
class CpuShare:
    """CPU time of a server (the broker, the baseline app) and of a local PostgreSQL server
    while its target ran.

    Read from ``/proc`` around each run: the server's process, and (``with_database``) every
    process named ``postgres`` (its backends, WAL writer, checkpointer...), found at the start of
    the run. Where the bench's PostgreSQL is on another machine there are none, and it says so.
    """

    pid: int
    name: str = "broker"
    with_database: bool = True
    server_seconds: float = 0.0
    database_seconds: float = 0.0
    database_seen: bool = False
    seconds: float = 0.0
    requests: int = 0

    def measure(self, run: Callable[[], WrkResult | None]) -> WrkResult | None:
        database = process_ids("postgres") if self.with_database else []
        server_before = cpu_seconds(self.pid)
        database_before = sum(cpu_seconds(pid) for pid in database)
        started = time.monotonic()
        result = run()
        if result is not None:
            self.seconds += time.monotonic() - started
            self.server_seconds += cpu_seconds(self.pid) - server_before
            self.database_seconds += sum(cpu_seconds(pid) for pid in database) - database_before
            self.database_seen = self.database_seen or bool(database)
            self.requests += result.requests
        return result

    def reset(self) -> None:
        """Forget the warm-up."""
        self.server_seconds = self.database_seconds = self.seconds = 0.0
        self.requests = 0

    def summary(self) -> str:
        if not self.requests:
            return "not measured"
        per_request = 1e6 * self.server_seconds / self.requests
        busy = 100 * self.server_seconds / self.seconds
        line = f"{self.name} {per_request:.0f} us per request ({busy:.0f} % of a core)"
        if not self.with_database:
            return line
        if self.database_seen:
            per_rotation = 1e6 * self.database_seconds / self.requests
            line += f", PostgreSQL {per_rotation:.0f} us per rotation"
        else:
            line += ", PostgreSQL not on this machine"
        return line
