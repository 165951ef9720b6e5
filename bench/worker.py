"""Sync-worker throughput for ``make bench``: upstream refreshes per second with one and with two
``sync-worker`` processes, and audit events per second through the audit relay.

Refreshes: a throw-away PostgreSQL database gets N upstream links (``bench.upstream_links``)
whose grants a real OpenID Provider stand-in (``standins.oidc``, run as a process)
minted. Each run starts its worker processes (``bench.sync_workers``) on a queue of its own (a
scan every 0.5 s enqueues at most 1,000 due links), waits until each answers ``/readyz``, then
makes every link due and polls the database until all have a ``last_refreshed_at``. The rate is
measured from the first to the last of those timestamps; the stand-in's refresh log shows
whether each link's refresh token was presented exactly once. The two-process run re-arms the
same links (their refresh tokens rotated by the first run). The workers' own audit relay
publishes the refresh audit rows meanwhile, as it would in production.

Audit relay: ``bench.audit_relay`` (M rows, the relay job body in this process).

It prints numbers and exits 0 whatever they are; the database, this run's Redis keys (streams
and queues named ``bench:worker:<run>:*``, the job records and results of its jobs) and every
subprocess are removed on the way out, also on Ctrl-C or an error.
``BROKER_BENCH_DATABASE_URL`` names the PostgreSQL server; ``BROKER_BENCH_REDIS_URL`` the Redis,
by default logical database 15: the test suite's clean-up deletes arq job keys by pattern on its
database, which would make a concurrent benchmark lose jobs.

Usage: ``python -m bench.worker [--worker-links N] [--audit-events M] [--max-jobs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from shared.crypto.keyring import Keyring
from shared.db.migrate import upgrade_to_head
from sqlalchemy.engine import make_url

from bench.audit_relay import RelayRun, measure_audit_relay
from bench.database import DEFAULT_SERVER_URL, SERVER_URL_ENV, bench_database, libpq_url
from bench.processes import (
    VENV_BIN,
    BenchError,
    Server,
    cpu_seconds,
    free_port,
    machine_ticks,
    run_guarded,
    server,
    server_env,
)
from bench.sync_workers import (
    Worker,
    delete_keys,
    drop_queue,
    start_worker,
    worker_env,
)
from bench.upstream_links import arm_links, refresh_tokens, seed_links

REDIS_URL_ENV = "BROKER_BENCH_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
MAX_GRANTS_PER_CALL = 5000  # the stand-in's limit for POST /_control/grants
POLL_INTERVAL = 0.1
STALLED_AFTER = 30.0  # seconds without a refresh: the run is given up
SETTLE = 1.0  # after the last refresh: any duplicate would land now


@dataclass(frozen=True)
class WorkerBenchOptions:
    links: int = 2000
    audit_events: int = 50_000
    max_jobs: int = 20

    @classmethod
    def quick(cls) -> WorkerBenchOptions:
        return cls(links=500, audit_events=10_000)

    def refresh_time_limit(self) -> float:
        return 60.0 + self.links / 5  # a limit for a broken run, not a target

    def relay_time_limit(self) -> float:
        return 60.0 + self.audit_events / 200


# --------------------------------------------------------------------------- the upstream


def control(issuer: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the stand-in's ``/_control/`` API: POST with a JSON body, else GET."""
    request = urllib.request.Request(
        f"{issuer}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"upstream stand-in {path}: {exc}") from exc


def mint_grants(issuer: str, count: int) -> list[dict[str, Any]]:
    """``count`` grants of one upstream user to the broker, without a browser."""
    grants: list[dict[str, Any]] = []
    while len(grants) < count:
        body = {
            "client_id": "broker",
            "user": {"sub": "bench-upstream-user", "email": "bench@example.test"},
            "count": min(MAX_GRANTS_PER_CALL, count - len(grants)),
        }
        grants += control(issuer, "/_control/grants", body)["grants"]
    return grants


def start_upstream(stack: contextlib.ExitStack, workdir: Path) -> tuple[Server, str]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    command = [str(VENV_BIN / "python"), "-m", "standins.oidc", "--port", str(port)]
    upstream = stack.enter_context(
        server(
            "upstream stand-in",
            command,
            env=server_env({}),
            ready_url=f"{issuer}/.well-known/openid-configuration",
            log_path=workdir / "upstream.log",
        )
    )
    return upstream, issuer


# --------------------------------------------------------------------------- one refresh run


@dataclass(frozen=True)
class Setup:
    """What every refresh run shares."""

    workdir: Path
    database_url: str
    redis_url: str
    key_prefix: str  # of this run's Redis keys
    keyring: Keyring
    issuer: str
    upstream: Server
    env: dict[str, str]
    options: WorkerBenchOptions


@dataclass(frozen=True)
class RefreshRun:
    processes: int
    links: int
    refreshed: int
    span: float  # seconds from the first to the last last_refreshed_at
    waited: float  # seconds from arming until all were refreshed (or the run was given up)
    presented: int  # refresh requests the stand-in logged during the run
    once: int  # links whose refresh token it saw exactly once
    repeated: int  # links whose refresh token it saw more than once
    not_ok: int  # requests that did not end in new tokens
    per_worker: tuple[int, ...]  # ok refreshes each process counted
    upstream_ms: float  # mean upstream refresh, as the workers time it
    worker_cpu: float  # CPU seconds of the worker processes
    upstream_cpu: float  # CPU seconds of the stand-in
    machine_busy: float  # share of all cores busy meanwhile
    warnings: tuple[str, ...]  # the workers' warning and error lines until then

    @property
    def rate(self) -> float:
        return (self.refreshed - 1) / self.span if self.refreshed > 1 and self.span else 0.0

    @property
    def exactly_once(self) -> bool:
        return self.presented == self.once == self.links and self.not_ok == 0


def wait_refreshed(
    database_url: str, count: int, time_limit: float, workers: list[Worker]
) -> tuple[int, float]:
    """Poll until ``count`` links have a ``last_refreshed_at`` (or none came for a while, or
    the time limit passed); how many, and the seconds from the first to the last."""
    query = (
        "SELECT count(last_refreshed_at), "
        "extract(epoch FROM max(last_refreshed_at) - min(last_refreshed_at)) FROM oauth2_tokens"
    )
    deadline = time.monotonic() + time_limit
    last_change, last_count = time.monotonic(), -1
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        while True:
            row = connection.execute(query).fetchone()
            refreshed, span = (int(row[0]), float(row[1] or 0)) if row else (0, 0.0)
            now = time.monotonic()
            if refreshed != last_count:
                last_change, last_count = now, refreshed
            if refreshed >= count or now > deadline or now - last_change > STALLED_AFTER:
                return refreshed, span
            for worker in workers:
                if worker.server.process.poll() is not None:
                    raise BenchError(
                        f"{worker.server.name} exited with {worker.server.process.returncode}:"
                        f"\n{worker.server.log()[-3000:]}"
                    )
            time.sleep(POLL_INTERVAL)


def measure_refresh(setup: Setup, processes: int) -> RefreshRun:
    """Start ``processes`` workers, make every link due, wait until all were refreshed."""
    label = f"{processes} proc{'s' if processes > 1 else ''}"
    queue = f"{setup.key_prefix}jobs:{processes}"
    tokens = refresh_tokens(setup.database_url, setup.keyring)
    log_start = len(control(setup.issuer, "/_control/refresh_log")["refreshes"])
    try:
        with contextlib.ExitStack() as stack:
            workers = [
                start_worker(
                    stack,
                    name=f"sync-worker {n} of {label}",
                    queue=queue,
                    max_jobs=setup.options.max_jobs,
                    env=setup.env,
                    log_path=setup.workdir / f"worker-{n}-of-{processes}.log",
                )
                for n in range(1, processes + 1)
            ]
            pids = [*(worker.server.process.pid for worker in workers), setup.upstream.process.pid]
            cpu_before = [cpu_seconds(pid) for pid in pids]
            busy_before, total_before = machine_ticks()
            started = time.monotonic()
            arm_links(setup.database_url)
            refreshed, span = wait_refreshed(
                setup.database_url, len(tokens), setup.options.refresh_time_limit(), workers
            )
            waited = time.monotonic() - started
            cpu_after = [cpu_seconds(pid) for pid in pids]
            busy_after, total_after = machine_ticks()
            time.sleep(SETTLE)
            metrics = [worker.refresh_metrics() for worker in workers]
            # Read before they stop: arq prints a traceback when SIGTERM cancels a running job.
            warnings = tuple(line for worker in workers for line in worker.warnings())
        log = control(setup.issuer, "/_control/refresh_log")["refreshes"][log_start:]
    finally:
        drop_queue(setup.redis_url, queue, set(tokens))
    counts = Counter(entry["refresh_token"] for entry in log)
    cpu = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
    calls = sum(count for _, _, count in metrics)
    return RefreshRun(
        processes=processes,
        links=len(tokens),
        refreshed=refreshed,
        span=span,
        waited=waited,
        presented=len(log),
        once=sum(1 for token in tokens.values() if counts.get(token) == 1),
        repeated=sum(1 for token in tokens.values() if counts.get(token, 0) > 1),
        not_ok=sum(1 for entry in log if entry["outcome"] != "ok"),
        per_worker=tuple(ok for ok, _, _ in metrics),
        upstream_ms=1000 * sum(seconds for _, seconds, _ in metrics) / calls if calls else 0.0,
        worker_cpu=sum(cpu[:-1]),
        upstream_cpu=cpu[-1],
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        warnings=warnings,
    )


def refresh_runs(
    stack: contextlib.ExitStack,
    workdir: Path,
    database_url: str,
    redis_url: str,
    key_prefix: str,
    options: WorkerBenchOptions,
) -> list[RefreshRun]:
    """Seed the links, then the run with one process and the run with two."""
    upstream, issuer = start_upstream(stack, workdir)
    keyring = Keyring.generate("bench1")
    started = time.monotonic()
    grants = mint_grants(issuer, options.links)
    asyncio.run(seed_links(database_url, keyring, grants))
    print(f"seeded {len(grants)} links in {time.monotonic() - started:.1f} s")
    env = worker_env(
        workdir,
        database_url=database_url,
        redis_url=redis_url,
        keyring=keyring,
        issuer=issuer,
        key_prefix=key_prefix,
    )
    stack.callback(
        delete_keys, redis_url, [env["BROKER_AUDIT_STREAM"], env["BROKER_REVOCATION_STREAM"]]
    )
    setup = Setup(
        workdir, database_url, redis_url, key_prefix, keyring, issuer, upstream, env, options
    )
    runs = []
    for processes in (1, 2):
        print(f"refreshing {options.links} links with {processes} sync-worker process(es)")
        run = measure_refresh(setup, processes)
        print(f"  {run.refreshed} of {run.links} refreshed, {run.rate:.1f}/s")
        runs.append(run)
    return runs


# --------------------------------------------------------------------------- report


def _once(run: RefreshRun) -> str:
    if run.exactly_once:
        return "yes"
    never = run.links - run.once - run.repeated
    return f"NO ({never} never, {run.repeated} more than once, {run.not_ok} failed)"


def print_worker_report(runs: list[RefreshRun], relay: RelayRun | None) -> None:
    """The table (rates, scaling, relay), then what each run used."""
    print()
    for run in runs:
        label = f"worker refresh ({run.processes} proc{'s' if run.processes > 1 else ''})"
        print(
            f"{label:<32}{run.rate:>10.1f}/s   {run.refreshed} of {run.links} links in "
            f"{run.span:.2f} s; every link refreshed exactly once: {_once(run)}"
        )
    if len(runs) == 2 and runs[0].rate:
        print(f"{'scaling 2/1':<32}{runs[1].rate / runs[0].rate:>10.2f}")
    if relay is not None:
        print(
            f"{'audit relay':<32}{relay.rate:>10.1f} events/s   {relay.published} of "
            f"{relay.events} published in {relay.seconds:.2f} s ({relay.runs} relay job runs), "
            f"{relay.in_stream} in the stream"
        )
    cores = os.cpu_count() or 1
    for run in runs:
        per = max(1, run.refreshed)
        print(
            f"  {run.processes} proc: refreshes per process {'/'.join(map(str, run.per_worker))};"
            f" upstream refresh {run.upstream_ms:.1f} ms mean as the workers time it; CPU per "
            f"refresh: workers {1000 * run.worker_cpu / per:.1f} ms, stand-in "
            f"{1000 * run.upstream_cpu / per:.1f} ms; machine {100 * run.machine_busy:.0f} % "
            f"busy ({cores} cores) over {run.waited:.1f} s from arming"
        )
        if run.warnings:
            print(f"    the workers logged {len(run.warnings)} warning/error line(s); the first:")
            for line in run.warnings[:5]:
                print(f"      {line[:300]}")
    if relay is not None and relay.seconds:
        print(f"  audit relay: {100 * relay.cpu_seconds / relay.seconds:.0f} % of a core here")


# --------------------------------------------------------------------------- main


def bench_redis_url(environ: Mapping[str, str]) -> str:
    """The Redis the benchmark uses: ``BROKER_BENCH_REDIS_URL``, else logical database 15."""
    return environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def check_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"cannot reach Redis at {redis_url} ({REDIS_URL_ENV}): {exc}") from exc
    finally:
        client.close()


def run_worker_bench(server_url: str, redis_url: str, options: WorkerBenchOptions) -> None:
    """Measure and print; raises ``BenchError`` when something could not be set up."""
    check_redis(redis_url)
    key_prefix = f"bench:worker:{uuid.uuid4().hex[:12]}:"
    print(
        f"\nsync worker: {options.links} links refreshed by 1, then 2 processes (--max-jobs "
        f"{options.max_jobs}); audit relay: {options.audit_events} events; Redis keys "
        f"{key_prefix}*; load average {os.getloadavg()[0]:.2f}"
    )
    runs: list[RefreshRun] = []
    relay: RelayRun | None = None
    with (
        tempfile.TemporaryDirectory(prefix="broker-bench-worker-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        database_url = stack.enter_context(bench_database(server_url))
        print(f"database {make_url(database_url).database}: migrating")
        upgrade_to_head(database_url)
        if options.links > 0:
            runs = refresh_runs(stack, workdir, database_url, redis_url, key_prefix, options)
        if options.audit_events > 0:
            print(f"audit relay: inserting {options.audit_events} rows, then relaying them")
            relay = asyncio.run(
                measure_audit_relay(
                    database_url,
                    redis_url,
                    options.audit_events,
                    stream=f"{key_prefix}relay",
                    time_limit=options.relay_time_limit(),
                )
            )
    print_worker_report(runs, relay)


def parse_args(argv: list[str] | None) -> WorkerBenchOptions:
    parser = argparse.ArgumentParser(
        prog="bench.worker",
        description="Benchmark the sync worker's refreshes and the audit relay (prints numbers).",
    )
    default = WorkerBenchOptions()
    parser.add_argument(
        "--worker-links", type=int, default=default.links, help="links to refresh (0: none)"
    )
    parser.add_argument(
        "--audit-events", type=int, default=default.audit_events, help="audit rows (0: none)"
    )
    parser.add_argument(
        "--max-jobs", type=int, default=default.max_jobs, help="sync-worker --max-jobs"
    )
    args = parser.parse_args(argv)
    return WorkerBenchOptions(
        links=max(0, args.worker_links),
        audit_events=max(0, args.audit_events),
        max_jobs=max(1, args.max_jobs),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    server_url = os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL)

    def bench() -> int:
        run_worker_bench(server_url, bench_redis_url(os.environ), options)
        return 0

    return run_guarded(bench)


if __name__ == "__main__":
    sys.exit(main())
