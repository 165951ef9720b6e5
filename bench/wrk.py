"""wrk runs: ``wrk -t1 --latency`` against one URL, its output parsed into a :class:`WrkResult`."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import BenchError

_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS_PER_SEC = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_LUA_LINE = re.compile(r"^bench-lua (\w+)=(.*)$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, parsed from its ``--latency`` output."""

    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx responses (non-200s, with the Lua script)
    lua: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def lua_int(self, name: str) -> int:
        return int(self.lua.get(name, "0") or 0)


def parse_wrk_output(text: str) -> WrkResult:
    """Requests/s, p50, p99 (in ms), the request count and the errors of one wrk run."""
    latencies = {pct: float(value) * _UNIT_MS[unit] for pct, value, unit in _LATENCY.findall(text)}
    rate = _REQUESTS_PER_SEC.search(text)
    if rate is None or "50" not in latencies or "99" not in latencies:
        raise BenchError(f"unexpected wrk output:\n{text}")
    requests = _REQUESTS.search(text)
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET_ERRORS.search(text)
    lua = dict(_LUA_LINE.findall(text))
    errors = sum(int(value) for value in sockets.groups()) if sockets else 0
    if "failed" in lua:
        # The Lua script counts every non-200 (wrk's own count leaves out 201-399).
        errors += int(lua["failed"] or 0)
    elif non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests_per_sec=float(rate.group(1)),
        p50_ms=latencies["50"],
        p99_ms=latencies["99"],
        requests=int(requests.group(1)) if requests else 0,
        errors=errors,
        lua=lua,
        output=text,
    )


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    script: Path | None = None,
    script_args: tuple[str, ...] = (),
) -> WrkResult:
    """``wrk -t1 -cN -dS --latency`` against one URL (one thread: one Lua state)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 60} s: {url}") from None
    if completed.returncode != 0:
        raise BenchError(f"wrk exited {completed.returncode}: {completed.stderr.strip()}")
    return parse_wrk_output(completed.stdout)
