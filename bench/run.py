"""``make bench``: load the broker with wrk and print how it compares with minimal baselines.

Steps: create a throw-away PostgreSQL database and migrate it; start the broker (one uvicorn
worker) and ``bench.baseline_app`` as subprocesses; seed one refresh token per refresh request;
drive five targets with ``wrk -t1`` (a warm-up each, then rounds that run every target in
turn; the table shows medians over the rounds, and each ratio is the median of its per-round
ratios, a target against the baseline run just before it);
print a table, the ratios against their targets, the broker's RSS, the COMMITs per refresh
rotation measured from ``pg_stat_database``, and the CPU time per refresh of the broker and of
a local PostgreSQL server (``/proc``), which says where the time goes (the ratios say how the
broker compares). Then ``bench.worker`` measures the sync worker
(upstream refreshes/s with one and two processes, audit relay events/s; smaller with
``--quick``), and ``bench.admin`` the admin API at 100,000 users and 1,000,000 audit rows
(``--skip-admin`` leaves it out, ``--admin-only`` runs only it). It prints numbers and exits 0
whatever they are; the databases and every subprocess are removed on the way out, also on Ctrl-C
or an error.

Usage: ``python -m bench.run [--quick] [--duration S] [--connections N] [--tokens N]
[--skip-admin | --admin-only]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml
from joserfc.jwk import ECKey
from shared.crypto.keyring import Keyring
from shared.db.migrate import upgrade_to_head
from sqlalchemy.engine import make_url

from bench.admin import AdminBenchOptions, run_admin_bench
from bench.baseline_app import ISSUER_ENV, JWKS_FILE_ENV, SIGNING_JWK_ENV
from bench.database import DEFAULT_SERVER_URL, SERVER_URL_ENV, bench_database, libpq_url
from bench.processes import (
    VENV_BIN,
    BenchError,
    Server,
    cpu_seconds,
    free_port,
    http_get,
    process_ids,
    report_server_log,
    run_guarded,
    server,
    server_env,
)
from bench.seed import CLIENT_ID, seed_refresh_tokens, write_tokens
from bench.verifier import VerifierRates, measure_verifier
from bench.worker import WorkerBenchOptions, bench_redis_url, run_worker_bench

REFRESH_SCRIPT = Path(__file__).resolve().parent / "refresh.lua"

# Targets (ratio >= unless noted).
JWKS_RATIO_TARGET = 0.9
DISCOVERY_RATIO_TARGET = 0.9
REFRESH_RATIO_TARGET = 0.35
REFRESH_RATIO_STRETCH = 0.45
REFRESH_TAIL_TARGET = 4.0  # p99 / p50, at most
RSS_TARGET_MB = 150.0  # at most
COMMITS_PER_ROTATION_MAX = 1.05

_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS_PER_SEC = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_LUA_LINE = re.compile(r"^bench-lua (\w+)=(.*)$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


# --------------------------------------------------------------------------- wrk


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


# --------------------------------------------------------------------------- database


def xact_commits(server_url: str, database: str, *, settle: float = 1.0) -> int:
    """``pg_stat_database.xact_commit`` of ``database``, once it stops moving.

    Backends publish their counters lazily (at most once a second, later when idle), so the value
    is read until two readings ``settle`` seconds apart agree. Read from the server's admin
    database so these reads do not count themselves.
    """
    with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:

        def read() -> int:
            connection.execute("SELECT pg_stat_clear_snapshot()")
            row = connection.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone()
            return int(row[0]) if row else 0

        previous = read()
        for _ in range(30):
            time.sleep(settle)
            current = read()
            if current == previous:
                return current
            previous = current
        return previous


def rotated_tokens(database_url: str) -> int:
    """Refresh tokens the broker marked used: the rotations it actually committed."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL"
        ).fetchone()
        return int(row[0]) if row else 0


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    repeats: int
    connections: int
    tokens: int
    worker: WorkerBenchOptions
    admin: AdminBenchOptions | None = None  # None: --skip-admin
    admin_only: bool = False


@dataclass
class Measurement:
    """The repeated runs of one target and their medians."""

    name: str
    runs: list[WrkResult]

    def _median(self, values: Iterator[float]) -> float:
        return statistics.median(values) if self.runs else math.nan

    @property
    def requests_per_sec(self) -> float:
        return self._median(run.requests_per_sec for run in self.runs)

    @property
    def p50_ms(self) -> float:
        return self._median(run.p50_ms for run in self.runs)

    @property
    def p99_ms(self) -> float:
        return self._median(run.p99_ms for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


class TokenSupply:
    """Where the next wrk run starts in the token file; every run uses tokens never sent."""

    def __init__(self, path: Path, total: int) -> None:
        self.path = path
        self.total = total
        self.offset = 0
        self.succeeded = 0
        self.failed = 0
        self.first_error = ""
        self.last_rate = 0.0
        self.ran_out = False

    def run(self, url: str, duration: int, connections: int) -> WrkResult | None:
        """One wrk run from the next unused token; None (and a warning) when none is left."""
        remaining = self.total - self.offset
        if remaining <= 0:
            print("    WARNING: no refresh tokens left, run skipped; rerun with a larger --tokens")
            self.ran_out = True
            return None
        expected = int(self.last_rate * duration)
        if expected > remaining:
            print(
                f"    WARNING: {remaining} refresh tokens left, about {expected} needed for the "
                "next run; rerun with a larger --tokens"
            )
        result = run_wrk(
            url,
            duration=duration,
            connections=connections,
            script=REFRESH_SCRIPT,
            script_args=(str(self.path), str(self.offset)),
        )
        if "sent" not in result.lua:
            raise BenchError(f"refresh.lua printed no summary:\n{result.output}")
        self.offset += result.lua_int("sent")
        self.succeeded += result.lua_int("ok")
        self.failed += result.errors
        self.last_rate = max(self.last_rate, result.requests_per_sec)
        if result.errors and not self.first_error:
            self.first_error = result.lua.get("first_error", "")
        if result.lua_int("exhausted"):
            self.ran_out = True
            print(
                f"    WARNING: the {self.total} refresh tokens ran out during this run; its "
                "numbers are not valid: rerun with a larger --tokens"
            )
        return result


@dataclass
class CpuShare:
    """CPU time of the broker and of a local PostgreSQL server while the refresh grant ran.

    Read from ``/proc`` around each run: the broker's process, and every process named
    ``postgres`` (its backends, WAL writer, checkpointer...), found at the start of the run.
    Where the bench's PostgreSQL is on another machine there are none, and it says so.
    """

    broker_pid: int
    broker_seconds: float = 0.0
    database_seconds: float = 0.0
    database_seen: bool = False
    seconds: float = 0.0
    requests: int = 0

    def measure(self, run: Callable[[], WrkResult | None]) -> WrkResult | None:
        database = process_ids("postgres")
        broker_before = cpu_seconds(self.broker_pid)
        database_before = sum(cpu_seconds(pid) for pid in database)
        started = time.monotonic()
        result = run()
        if result is not None:
            self.seconds += time.monotonic() - started
            self.broker_seconds += cpu_seconds(self.broker_pid) - broker_before
            self.database_seconds += sum(cpu_seconds(pid) for pid in database) - database_before
            self.database_seen = self.database_seen or bool(database)
            self.requests += result.requests
        return result

    def reset(self) -> None:
        """Forget the warm-up."""
        self.broker_seconds = self.database_seconds = self.seconds = 0.0
        self.requests = 0

    def summary(self) -> str:
        if not self.requests:
            return "not measured"
        per_request = 1e6 * self.broker_seconds / self.requests
        busy = 100 * self.broker_seconds / self.seconds
        line = f"broker {per_request:.0f} us per request ({busy:.0f} % of a core)"
        if self.database_seen:
            per_rotation = 1e6 * self.database_seconds / self.requests
            line += f", PostgreSQL {per_rotation:.0f} us per rotation"
        else:
            line += ", PostgreSQL not on this machine"
        return line


@dataclass(frozen=True)
class Target:
    """One URL to load; ``script`` sets the method, ``supply`` makes it the refresh grant."""

    key: str
    name: str
    url: str
    script: Path | None = None
    supply: TokenSupply | None = None
    cpu: CpuShare | None = None  # where this target's CPU time is counted

    def run(self, duration: int, connections: int) -> WrkResult | None:
        if self.cpu is not None:
            return self.cpu.measure(lambda: self._run(duration, connections))
        return self._run(duration, connections)

    def _run(self, duration: int, connections: int) -> WrkResult | None:
        if self.supply is not None:
            return self.supply.run(self.url, duration, connections)
        return run_wrk(self.url, duration=duration, connections=connections, script=self.script)


def measure_all(targets: list[Target], options: Options) -> dict[str, Measurement]:
    """Warm every target up, then run them round-robin, so drift on the machine hits all alike."""
    print(f"warm-up, {options.warmup} s per target")
    for target in targets:
        warm = target.run(options.warmup, options.connections)
        if warm is not None:
            _print_result(target.name, warm)
    for target in targets:
        if target.cpu is not None:
            target.cpu.reset()
    measurements = {target.key: Measurement(target.name, []) for target in targets}
    for index in range(options.repeats):
        print(f"round {index + 1} of {options.repeats}, {options.duration} s per target")
        for target in targets:
            result = target.run(options.duration, options.connections)
            if result is not None:
                _print_result(target.name, result)
                measurements[target.key].runs.append(result)
    return measurements


def _print_result(name: str, result: WrkResult) -> None:
    line = (
        f"  {name:<26}{result.requests_per_sec:10.1f} req/s   p50 {result.p50_ms:7.2f} ms   "
        f"p99 {result.p99_ms:7.2f} ms   errors {result.errors}"
    )
    if result.errors and result.lua.get("first_error"):
        line += f" (first: {result.lua['first_error'][:200]})"
    print(line)


# --------------------------------------------------------------------------- report


def _verdict(value: float, good: bool) -> str:
    if math.isnan(value):
        return "not measured"
    return "ok" if good else "below target"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def round_ratios(target: Measurement, baseline: Measurement) -> list[float]:
    """Requests/s of ``target`` over ``baseline`` in each round.

    The two ran back to back within the round, so a drift in the machine's speed (other
    tenants, frequency) moves both alike; the median of these ratios is the reported ratio.
    """
    return [
        _ratio(run.requests_per_sec, base.requests_per_sec)
        for run, base in zip(target.runs, baseline.runs, strict=False)
    ]


def median_ratio(target: Measurement, baseline: Measurement) -> float:
    ratios = [ratio for ratio in round_ratios(target, baseline) if not math.isnan(ratio)]
    return statistics.median(ratios) if ratios else math.nan


def _commit_verdict(rotations: int, per_rotation: float) -> str:
    if not rotations:
        return "no rotation"
    return "ok" if per_rotation <= COMMITS_PER_ROTATION_MAX else "above expected"


def print_report(
    measurements: dict[str, Measurement],
    *,
    rss_mb: float | None,
    commits: int,
    rotations: int,
    supply: TokenSupply,
    cpu: CpuShare,
) -> None:
    """The table of medians, then each ratio or figure against its target."""
    print()
    print(f"{'target':<32}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for measurement in measurements.values():
        print(
            f"{measurement.name:<32}{measurement.requests_per_sec:>12.1f}"
            f"{measurement.p50_ms:>10.2f}{measurement.p99_ms:>10.2f}{measurement.errors:>8}"
        )
    if supply.ran_out:
        print("WARNING: the refresh tokens ran out: the refresh grant's numbers are not valid")
    print()
    static, sign = measurements["static"], measurements["sign"]
    jwks_ratio = median_ratio(measurements["jwks"], static)
    discovery_ratio = median_ratio(measurements["discovery"], static)
    refresh = measurements["refresh"]
    refresh_ratio = median_ratio(refresh, sign)
    for name, measured, baseline in (
        ("JWKS / static", measurements["jwks"], static),
        ("discovery / static", measurements["discovery"], static),
        ("refresh / sign", refresh, sign),
    ):
        ratios = ", ".join(f"{ratio:.2f}" for ratio in round_ratios(measured, baseline))
        print(f"per-round ratios, {name}: {ratios}")
    print()
    tail = _ratio(refresh.p99_ms, refresh.p50_ms)
    refresh_verdict = _verdict(refresh_ratio, refresh_ratio >= REFRESH_RATIO_TARGET)
    if refresh_ratio >= REFRESH_RATIO_STRETCH:
        refresh_verdict = "ok (stretch met)"
    lines = [
        (
            "JWKS / static baseline",
            f"{jwks_ratio:.2f}",
            f">= {JWKS_RATIO_TARGET}",
            _verdict(jwks_ratio, jwks_ratio >= JWKS_RATIO_TARGET),
        ),
        (
            "discovery / static baseline",
            f"{discovery_ratio:.2f}",
            f">= {DISCOVERY_RATIO_TARGET}",
            _verdict(discovery_ratio, discovery_ratio >= DISCOVERY_RATIO_TARGET),
        ),
        (
            "refresh / sign-only baseline",
            f"{refresh_ratio:.2f}",
            f">= {REFRESH_RATIO_TARGET} (stretch {REFRESH_RATIO_STRETCH})",
            refresh_verdict,
        ),
        (
            "refresh p99 / p50",
            f"{tail:.2f}",
            f"<= {REFRESH_TAIL_TARGET:g}",
            _verdict(tail, tail <= REFRESH_TAIL_TARGET),
        ),
        (
            "broker RSS after the run",
            "n/a" if rss_mb is None else f"{rss_mb:.1f} MB",
            f"<= {RSS_TARGET_MB:g} MB",
            "unknown" if rss_mb is None else _verdict(rss_mb, rss_mb <= RSS_TARGET_MB),
        ),
    ]
    per_rotation = _ratio(commits, rotations)
    lines.append(
        (
            "COMMITs per rotation",
            f"{per_rotation:.3f}",
            "~1.0",
            _commit_verdict(rotations, per_rotation),
        )
    )
    for label, value, target, verdict in lines:
        print(f"{label:<32}{value:>10}   target {target:<28}{verdict}")
    print(
        f"  ({commits} commits in the bench database for {rotations} rotations recorded in "
        f"refresh_tokens; {supply.succeeded} refresh responses were 200, {supply.failed} were "
        f"errors; {supply.offset} of {supply.total} tokens sent)"
    )
    if rotations and per_rotation > 1.5:
        print(
            "  note: xact_commit counts every transaction, read-only ones too (for example a "
            "connection-pool pre-ping run in autocommit)"
        )
    if supply.first_error:
        print(f"  first refresh error: {supply.first_error}")
    # What the ratio hides: how much CPU each refresh costs, whatever the machine's speed.
    print(f"refresh CPU: {cpu.summary()}")


# --------------------------------------------------------------------------- extras

INTROSPECTOR, INTROSPECTOR_SECRET = "bench-introspector", "bench-introspector-secret-0123456789"


def first_access_token(issuer: str, refresh_token: str) -> str:
    """An access token of the bench client, from one refresh grant."""
    body = urllib.parse.urlencode(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID}
    ).encode()
    with urllib.request.urlopen(f"{issuer}/token", data=body, timeout=10) as response:
        token: str = json.loads(response.read())["access_token"]
    return token


@dataclass(frozen=True)
class Extras:
    introspection: Measurement
    verifier: VerifierRates


def measure_extras(
    workdir: Path, issuer: str, jwks_body: bytes, access_token: str, options: Options
) -> Extras:
    """Introspection under wrk (3 rounds) and the verifier against raw joserfc, in-process."""
    credentials = base64.b64encode(f"{INTROSPECTOR}:{INTROSPECTOR_SECRET}".encode()).decode()
    script = workdir / "introspect.lua"
    body = urllib.parse.urlencode({"token": access_token, "token_type_hint": "access_token"})
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.headers["Authorization"] = "Basic {credentials}"\n',
        encoding="ascii",
    )
    target = Target("introspect", "broker introspection", f"{issuer}/introspect", script=script)
    print("introspection and verifier")
    target.run(options.warmup, options.connections)
    introspection = Measurement(target.name, [])
    for _ in range(min(3, options.repeats)):
        result = target.run(options.duration, options.connections)
        assert result is not None
        _print_result(target.name, result)
        introspection.runs.append(result)
    rates = measure_verifier(issuer, json.loads(jwks_body), access_token)
    print(f"  verifier {rates.verifier:,.0f}/s, raw joserfc {rates.joserfc:,.0f}/s")
    return Extras(introspection, rates)


def print_extras(extras: Extras) -> None:
    intro = extras.introspection
    print(
        f"\n{'broker introspection':<32}{intro.requests_per_sec:>12.1f}{intro.p50_ms:>10.2f}"
        f"{intro.p99_ms:>10.2f}{intro.errors:>8}"
    )
    rates = extras.verifier
    print(
        f"verifier (oidc_broker_verifier), warm JWKS cache: "
        f"{rates.verifier:,.0f} verifications/s; "
        f"raw joserfc on the same token: {rates.joserfc:,.0f}/s; ratio {rates.ratio:.2f}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench.run",
        description="Benchmark the broker against minimal baselines (prints numbers).",
    )
    parser.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per target (default 3)")
    # Five rounds: on a shared 2-core machine one round's ratio moves by +-20 % (other tenants,
    # the scheduler placing wrk beside the server); the median of five is steadier.
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per target")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    parser.add_argument(
        "--tokens", type=int, help="refresh tokens to seed (default 150000; 40000 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-ups")
    admin = parser.add_mutually_exclusive_group()
    admin.add_argument("--skip-admin", action="store_true", help="leave out bench.admin")
    admin.add_argument("--admin-only", action="store_true", help="run only bench.admin")
    args = parser.parse_args(argv)
    return Options(
        duration=args.duration or (3 if args.quick else 10),
        warmup=args.warmup or (1 if args.quick else 3),
        repeats=max(1, args.repeats),
        connections=max(1, args.connections),
        tokens=args.tokens or (40_000 if args.quick else 150_000),
        worker=WorkerBenchOptions.quick() if args.quick else WorkerBenchOptions(),
        admin=None
        if args.skip_admin
        else (AdminBenchOptions.quick() if args.quick else AdminBenchOptions()),
        admin_only=args.admin_only,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    server_url = os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL)
    if options.admin_only:
        return run_guarded(lambda: run_admin_bench(server_url, options.admin))
    if shutil.which("wrk") is None:
        print(
            "bench: wrk is not installed; install it first (apt-get install wrk)", file=sys.stderr
        )
        return 1
    return run_guarded(lambda: _bench(server_url, options))


def _bench(server_url: str, options: Options) -> int:
    print(
        f"bench: wrk -t1 -c{options.connections}, {options.warmup} s warm-up, "
        f"{options.repeats} x {options.duration} s per target; {options.tokens} refresh tokens"
    )
    with (
        tempfile.TemporaryDirectory(prefix="broker-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        database_url = stack.enter_context(bench_database(server_url))
        database = make_url(database_url).database or ""
        print(f"database {database}: migrating")
        upgrade_to_head(database_url)
        started = time.monotonic()
        tokens = asyncio.run(seed_refresh_tokens(database_url, options.tokens + 1))
        for_introspection = tokens.pop()
        supply = TokenSupply(workdir / "refresh-tokens.txt", len(tokens))
        write_tokens(supply.path, tokens)
        print(f"seeded {len(tokens)} sessions in {time.monotonic() - started:.1f} s")

        broker, issuer = start_broker(stack, workdir, database_url)
        status, jwks_body = http_get(f"{issuer}/.well-known/jwks.json")
        if status != 200:
            raise BenchError(f"the broker's JWKS answered {status}")
        baseline = start_baseline(stack, workdir, issuer, jwks_body)
        broker_log_start = len(broker.log())
        print(f"broker on {issuer} (pid {broker.process.pid}), baseline on {baseline}")

        access_token = first_access_token(issuer, for_introspection)
        extras = measure_extras(workdir, issuer, jwks_body, access_token, options)

        post_script = workdir / "post.lua"
        post_script.write_text('wrk.method = "POST"\n', encoding="ascii")
        cpu = CpuShare(broker.process.pid)
        targets = [
            Target("static", "baseline static JWKS", f"{baseline}/jwks"),
            Target("jwks", "broker JWKS", f"{issuer}/.well-known/jwks.json"),
            Target("discovery", "broker discovery", f"{issuer}/.well-known/openid-configuration"),
            Target("sign", "baseline ES256 sign", f"{baseline}/sign", script=post_script),
            Target("refresh", "broker refresh grant", f"{issuer}/token", supply=supply, cpu=cpu),
        ]
        # Only the refresh grant touches the database: this counts its commits alone.
        commits_before = xact_commits(server_url, database)
        measurements = measure_all(targets, options)
        rss_mb = broker.rss_mb()
        # Stopping the broker closes its connections, whose backends then publish their counters.
        broker.stop()
        commits = xact_commits(server_url, database) - commits_before
        rotations = rotated_tokens(database_url)

        print_report(
            measurements,
            rss_mb=rss_mb,
            commits=commits,
            rotations=rotations,
            supply=supply,
            cpu=cpu,
        )
        print_extras(extras)
        report_server_log(broker, broker_log_start)
    run_worker_bench(server_url, bench_redis_url(os.environ), options.worker)
    if options.admin is not None:
        run_admin_bench(server_url, options.admin)
    return 0


def start_broker(
    stack: contextlib.ExitStack, workdir: Path, database_url: str
) -> tuple[Server, str]:
    """The broker (one uvicorn worker) on a free port, ready; returns it and its issuer."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config_path = workdir / "broker.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "providers": [{"id": "dev", "type": "dev"}],
                "clients": [
                    {"id": CLIENT_ID, "redirect_uris": ["http://127.0.0.1:3000/cb"]},
                    {
                        "id": INTROSPECTOR,
                        "secret": INTROSPECTOR_SECRET,
                        "redirect_uris": ["http://127.0.0.1:3001/cb"],
                    },
                ],
            }
        ),
        encoding="utf-8",
    )
    env = server_env(
        {
            "BROKER_ENCRYPTION_KEYS": Keyring.generate().serialize(),
            "BROKER_DATABASE_URL": database_url,
            "BROKER_ISSUER": issuer,
            "BROKER_CONFIG": str(config_path),
            "BROKER_LOG_LEVEL": "WARNING",
            "BROKER_VAR_DIR": str(workdir / "var"),
        }
    )
    command = [str(VENV_BIN / "broker"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    broker = stack.enter_context(
        server(
            "broker",
            command,
            env=env,
            ready_url=f"{issuer}/readyz",
            log_path=workdir / "broker.log",
        )
    )
    return broker, issuer


def start_baseline(
    stack: contextlib.ExitStack, workdir: Path, issuer: str, jwks_body: bytes
) -> str:
    """``bench.baseline_app`` under uvicorn (one worker, no access log); returns its base URL."""
    jwks_path = workdir / "jwks.json"
    jwks_path.write_bytes(jwks_body)
    signing_key = ECKey.generate_key(
        "P-256", parameters={"kid": "bench-baseline", "alg": "ES256", "use": "sig"}
    )
    env = server_env(
        {
            JWKS_FILE_ENV: str(jwks_path),
            SIGNING_JWK_ENV: json.dumps(signing_key.as_dict(private=True)),
            ISSUER_ENV: issuer,
        }
    )
    port = free_port()
    command = [
        str(VENV_BIN / "python"),
        "-m",
        "uvicorn",
        "--factory",
        "bench.baseline_app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    base_url = f"http://127.0.0.1:{port}"
    stack.enter_context(
        server(
            "baseline",
            command,
            env=env,
            ready_url=f"{base_url}/jwks",
            log_path=workdir / "baseline.log",
        )
    )
    return base_url


if __name__ == "__main__":
    sys.exit(main())
