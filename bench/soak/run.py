"""One soak run: the cluster and the services up, the admin bootstrapped through the CLI, the
load and the fault schedule at once, then the checks and the report; everything removed at the
end (also on Ctrl-C or an error)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from bench.processes import BenchError
from bench.soak.checks import Results, run_checks
from bench.soak.cluster import Cluster, cluster
from bench.soak.faults import Event, FaultRecord, Faults, Timing
from bench.soak.ledger import Ledger
from bench.soak.load import ADMIN_SUBJECT, Load, LoadOptions
from bench.soak.processes import (
    PROVIDER,
    Service,
    Services,
    broker_command,
    build_services,
    stopped_at_exit,
)
from bench.soak.report import RunInfo, render

# Each schedule scales every fault window (Timing.scaled); ``ci`` is the CI test's
# (tests/integration/test_soak.py): the same faults and checks, each window an eighth.
SCHEDULES = {"default": 1.0, "short": 0.25, "ci": 0.125}
GRACE = 2.0  # seconds a fault window lasts past recovery
UPSTREAM_TOKEN_LIFETIME = 40  # the stand-in's access tokens: the workers refresh every ~20 s


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 5.0
    schedule: str = "default"
    rate: float = 20.0
    # Strict by default, so a refresh whose answer was lost shows as a revoked session (the
    # broker's own default, 60 s, answers that retry with the same successor instead).
    reuse_interval: int = 0
    seed: int | None = None
    keep: bool = False  # keep the temporary directory (logs, data) for a post-mortem

    @property
    def timing(self) -> Timing:
        return Timing.scaled(SCHEDULES[self.schedule])


@dataclass
class SoakResult:
    text: str
    results: Results
    records: list[FaultRecord]
    ledger: Ledger
    events: list[Event] = field(default_factory=list)
    seconds: float = 0.0
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.results.failed


def broker_settings(options: SoakOptions) -> dict[str, str]:
    """The brokers' and workers' ``BROKER_*`` settings beyond the cluster and the config."""
    return {
        "BROKER_DB_POOL_SIZE": "5",
        "BROKER_REFRESH_REUSE_INTERVAL": str(options.reuse_interval),
        # Upstream tokens live 40 s: refreshed from half their lifetime on, within 30 s of expiry.
        "BROKER_UPSTREAM_REFRESH_MARGIN": "30",
        "BROKER_UPSTREAM_REFRESH_SCAN_INTERVAL": "2",
        "BROKER_UPSTREAM_RETRY_BASE": str(max(2, round(10 * SCHEDULES[options.schedule]))),
        "BROKER_UPSTREAM_RETRY_MAX": "60",
    }


async def _start(services: Services, http: httpx2.AsyncClient) -> None:
    async def up(*group: Service) -> None:
        for service in group:
            service.spawn()
        await asyncio.gather(*(service.wait_ready(http) for service in group))

    await up(services.upstream)
    await up(*services.brokers)
    await up(services.proxy)
    await up(*services.workers)


async def _bootstrap_admin(load: Load, services: Services) -> None:
    """The admin signs in once (no admin scope yet), is granted with ``broker admins grant``,
    and signs in again through the admin console."""
    first = await load.login(ADMIN_SUBJECT, client_id="console", admin=True, expect_admin=False)
    if first is None:
        raise BenchError("the admin's first sign-in failed")
    output = await asyncio.to_thread(
        broker_command, services, "admins", "grant", f"{PROVIDER}:{ADMIN_SUBJECT}"
    )
    print(f"  {output.strip()}")
    if await load.login_admin() is None or load.admin is None:
        raise BenchError("the admin's sign-in after the grant failed")


async def _soak(
    options: SoakOptions, the_cluster: Cluster, services: Services, workdir: Path
) -> SoakResult:
    # SIGTERM cancels the run between two steps of the loop (asyncio does the same for
    # SIGINT); the callers' clean-up then stops every process.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    timing = options.timing
    ledger = Ledger()
    load_options = LoadOptions(rate=options.rate, reuse_interval=options.reuse_interval)
    rng = random.Random(options.seed)
    async with (
        httpx2.AsyncClient(timeout=10.0, trust_env=False) as http,
        Load(services.issuer, services.upstream_url, ledger, load_options, rng) as load,
    ):
        print("starting the stand-in, two brokers, the proxy and two sync-workers")
        await _start(services, http)
        await _bootstrap_admin(load, services)
        faults = Faults(the_cluster, services, load, timing, http)
        needed = timing.warmup + sum(timing.busy_seconds()) + 5 * timing.gap + timing.tail
        extra_gap = max(0.0, (options.minutes * 60 - needed) / 5)
        if options.schedule != "default":  # --minutes spreads the default schedule only
            extra_gap = 0.0
        print(
            f"load at {options.rate:g}/s with the {options.schedule} fault schedule "
            f"(about {needed + 5 * extra_gap:.0f} s)"
        )
        stop_load, stop_supervisor = asyncio.Event(), asyncio.Event()
        started = time.time()
        supervisor = asyncio.ensure_future(faults.supervise(stop_supervisor))
        driving = asyncio.ensure_future(load.drive(stop_load, limit=4 * needed + 600))
        try:
            await faults.run(extra_gap)
            await asyncio.sleep(timing.tail)
            stop_load.set()
            await driving
            ended = time.time()
            print("load stopped; checking")
            windows = [record.window(GRACE, ended) for record in faults.records]
            results = await run_checks(
                ledger,
                database_url=the_cluster.postgres.libpq_url,
                redis_url=the_cluster.redis.url,
                upstream_url=services.upstream_url,
                reuse_interval=options.reuse_interval,
                windows=windows,
                records=faults.records,
                http=http,
            )
        finally:
            stop_supervisor.set()
            for task in (driving, supervisor):
                task.cancel()
            await asyncio.gather(driving, supervisor, return_exceptions=True)
    services.stop_all()
    errors = {service.name: service.error_lines() for service in services.all}
    settings = {
        **broker_settings(options),
        "sync-worker --job-timeout": f"{timing.job_timeout:g}",
        "upstream access-token lifetime": str(UPSTREAM_TOKEN_LIFETIME),
    }
    info = RunInfo(options.schedule, started, ended, options.rate, settings, GRACE)
    text = render(info, ledger, faults.records, faults.events, results, errors)
    if options.keep:
        _keep_evidence(workdir, ledger, faults, results)
    return SoakResult(text, results, faults.records, ledger, faults.events, ended - started)


def _keep_evidence(workdir: Path, ledger: Ledger, faults: Faults, results: Results) -> None:
    """What the load saw and the stand-in's refresh log, as JSON beside the logs."""
    evidence = {
        "faults": [dataclasses.asdict(record) for record in faults.records],
        "events": [dataclasses.asdict(event) for event in faults.events],
        "exchanges": [dataclasses.asdict(exchange) for exchange in ledger.exchanges],
        "presentations": {
            token: [dataclasses.asdict(p) for p in attempts]
            for token, attempts in ledger.presentations.items()
        },
        "sessions": [dataclasses.asdict(record) for record in ledger.sessions.values()],
        "upstream_refresh_log": results.upstream_log,
    }
    (workdir / "evidence.json").write_text(json.dumps(evidence, indent=1), encoding="utf-8")


def run_soak(options: SoakOptions) -> SoakResult:
    """The whole run; raises ``BenchError`` when something could not be set up."""
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="broker-soak-"))
    try:
        with contextlib.ExitStack() as stack:
            print(f"soak: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, work directory {workdir}")
            the_cluster = stack.enter_context(cluster(workdir))
            services = build_services(
                workdir,
                the_cluster,
                broker_settings(options),
                upstream_token_lifetime=UPSTREAM_TOKEN_LIFETIME,
                job_timeout=options.timing.job_timeout,
            )
            stack.enter_context(stopped_at_exit(services))
            print("PostgreSQL and Redis up; migrating with `broker migrate`")
            broker_command(services, "migrate")
            on_sigterm = signal.getsignal(signal.SIGTERM)
            try:
                result = asyncio.run(_soak(options, the_cluster, services, workdir))
            finally:
                signal.signal(signal.SIGTERM, on_sigterm)  # the loop's handler went with it
            result.seconds = time.monotonic() - began
            result.workdir = workdir if options.keep else None
            return result
    finally:
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
