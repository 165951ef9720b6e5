"""``sync-worker``: load the settings, then run an arq worker over the shared jobs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from arq.worker import Worker
from redis.exceptions import RedisError
from shared.config_file import ConfigError
from shared.jobs.queue import DEFAULT_QUEUE_NAME
from shared.logging import configure_logging
from shared.settings import load_settings
from shared.tracing.install import WORKER_SERVICE, install_tracing

from sync_worker.options import PROCESS_KEY, WorkerOptions, WorkerProcess, build_worker_options

log = structlog.get_logger("sync_worker.main")
# Seconds between attempts to start again after Redis went away: doubling, at most the max.
REDIS_RETRY_FIRST = 1.0
REDIS_RETRY_MAX = 15.0

NO_REDIS = (
    "sync-worker: BROKER_REDIS_URL is not set; the worker takes its jobs from Redis "
    "(without Redis the broker runs the jobs in-process and no worker is needed)"
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sync-worker", description="Run the broker's background jobs from Redis (arq)."
    )
    parser.add_argument(
        "--queue",
        default=DEFAULT_QUEUE_NAME,
        metavar="NAME",
        help=f"the arq queue to consume (default {DEFAULT_QUEUE_NAME})",
    )
    parser.add_argument("--burst", action="store_true", help="process the queued jobs, then exit")
    parser.add_argument(
        "--max-jobs", type=int, default=10, metavar="N", help="jobs run at once (default 10)"
    )
    parser.add_argument(
        "--job-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="a job running longer is cancelled; a job whose worker died is run again this "
        "long plus 10 s after it started (default 120)",
    )
    parser.add_argument(
        "--http-host",
        default="0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        metavar="HOST",
        help="address of the /healthz, /readyz and /metrics server (default 0.0.0.0)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=8001,
        metavar="PORT",
        help="its port (default 8001; 0: any free port; -1: no server)",
    )
    parser.add_argument(
        "--http-port-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the port the server listens on to PATH once it listens (with --http-port 0, "
        "so that replicas sharing one network namespace never collide; a health check reads it)",
    )
    return parser.parse_args(argv)


def run(options: WorkerOptions) -> int:
    """Run the arq worker until SIGINT/SIGTERM (or, in burst mode, an empty queue)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # arq's Worker picks up the current loop
    try:
        worker = Worker(**options)
        worker.run()
    finally:
        # arq skips its shutdown hook when Redis fails under it (it talks to Redis first):
        # stop the process here then, so its monitoring port and clients are released before
        # the next attempt binds them again.
        process: WorkerProcess = options["ctx"][PROCESS_KEY]
        if process.running:
            loop.run_until_complete(process.stop())
        asyncio.set_event_loop(None)
        loop.close()
    if options["burst"] and worker.jobs_failed:
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = _parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"sync-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, trace_ids=settings.tracing)
    if settings.redis_url is None:
        print(NO_REDIS, file=sys.stderr)
        return 2
    tracer_provider = install_tracing(settings, service_name=WORKER_SERVICE)
    delay = REDIS_RETRY_FIRST
    while True:
        # Built anew for each attempt: a stopped worker has closed its clients and engine.
        try:
            options = build_worker_options(
                settings,
                queue_name=args.queue,
                burst=args.burst,
                max_jobs=args.max_jobs,
                job_timeout=args.job_timeout,
                http_host=args.http_host,
                http_port=None if args.http_port < 0 else args.http_port,
                http_port_file=args.http_port_file,
                tracer_provider=tracer_provider,
            )
        except ConfigError as exc:
            print(f"sync-worker: configuration error: {exc}", file=sys.stderr)
            return 2
        log.info(
            "worker.starting",
            queue=options["queue_name"],
            burst=options["burst"],
            jobs=[function.name for function in options["functions"]],
        )
        try:
            return run(options)
        except (RedisError, OSError) as exc:
            if args.burst:
                print(f"sync-worker: cannot use Redis: {exc}", file=sys.stderr)
                return 1
            # Redis went away (a restart, a failover): wait and start again, rather than exit
            # and leave it to the orchestrator's back-off (Kubernetes' reaches minutes).
            # Nothing is lost meanwhile: jobs wait in the queue or are re-found by the scans.
            log.warning("worker.redis_unavailable", error=str(exc), retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, REDIS_RETRY_MAX)


if __name__ == "__main__":
    sys.exit(main())
