"""``make bench``, admin part: the admin API's latencies at 100,000 users and 1,000,000 audit rows.

Steps: a throw-away PostgreSQL database, migrated; seeded with set-based SQL (``INSERT ...
SELECT ... FROM generate_series``, one statement per table, the audit rows in chunks of 250,000)
with 100,000 ``users``, ~130,000 ``oauth2_profiles`` (``google``, ``github``, ``corp``) each with
its ``oauth2_tokens`` row, 150,000 ``auth_sessions`` with 1-3 ``refresh_tokens`` each, and
1,000,000 ``audit_actions`` over 60 days in the mix the broker writes (three quarters
``refresh_token.rotated``); then ``VACUUM (ANALYZE)``, as autovacuum would soon after. The daily
rollup is the worker's job body (``shared.jobs.audit_rollup.roll_up_audit_events``) run in this
process for ``--rollup-seconds``; what it has not counted by then, its set-based stand-in
(``roll_up_backlog``, beside it) counts. Then the broker (one uvicorn worker, no periodic jobs)
starts with seeded user 1 as its admin (``admins: [user:<id>]``), a refresh grant gives that
admin an access token, and each admin request is timed over one keep-alive HTTP connection: a
warm-up, then N sequential repetitions (p50, p95, max, rows returned). Requests whose p95 is
above 100 ms are replayed once in this process against an in-process broker on the same
database, which records the SQL they ran; the slow statements are shown with the first lines of
``EXPLAIN (ANALYZE, BUFFERS)``. It prints numbers and exits 0 whatever they are; the database
and the broker are removed on the way out, also on Ctrl-C or an error.

This module holds the options, the order of the steps and ``main``; the parts:
``bench.admin_seed_sql`` (the seed's statements), ``bench.admin_seed`` (running them),
``bench.admin_jobs`` (the rollup and the stats snapshot), ``bench.admin_probes`` (the timed
requests), ``bench.admin_plans`` (the SQL of slow ones) and ``bench.admin_report`` (printing).

Usage: ``python -m bench.admin [--quick] [--repetitions N] [--users N] [--sessions N]
[--audit-rows N]``; ``python -m bench.run`` runs it last (``--skip-admin``, ``--admin-only``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from shared.db.migrate import upgrade_to_head

from bench.admin_jobs import ROLLUP_TIME_LIMIT, roll_up, run_stats_snapshot
from bench.admin_plans import explain_requests
from bench.admin_probes import build_probes, time_probe
from bench.admin_report import (
    EXPLAIN_OVER_MS,
    print_plans,
    print_rollup,
    print_seed_report,
    print_table,
)
from bench.admin_seed import ADMIN_CLIENT, ADMIN_SCOPE, seed_admin_data, seed_admin_session
from bench.admin_seed_sql import CLIENTS, SeedScale
from bench.database import DEFAULT_SERVER_URL, SERVER_URL_ENV, bench_database
from bench.processes import report_server_log, run_guarded
from bench.servers import start_broker


@dataclass(frozen=True)
class AdminBenchOptions:
    """How much to seed, how often to time each request, how long the rollup job may run."""

    scale: SeedScale = field(default_factory=SeedScale)
    repetitions: int = 20
    export_repetitions: int = 5
    deep_pages: int = 50
    rollup_seconds: float = ROLLUP_TIME_LIMIT

    @classmethod
    def quick(cls) -> AdminBenchOptions:
        return cls(repetitions=10, export_repetitions=3, rollup_seconds=30.0)


def broker_config(admin_id: uuid.UUID) -> dict[str, Any]:
    """The seeded clients, the console client allowed the admin scope, ``admin_id`` as admin."""
    return {
        "providers": [{"id": "dev", "type": "dev"}],
        "clients": [
            *(
                {"id": client, "redirect_uris": [f"http://127.0.0.1:3000/{client}/cb"]}
                for client, _share in CLIENTS
            ),
            {
                "id": ADMIN_CLIENT,
                "redirect_uris": [f"http://127.0.0.1:3000/{ADMIN_CLIENT}/cb"],
                "scopes": ADMIN_SCOPE.split(),
            },
        ],
        "admins": [f"user:{admin_id}"],
    }


def run_admin_bench(server_url: str, options: AdminBenchOptions | None = None) -> int:
    """The whole admin part on a throw-away database of ``server_url``; prints, returns 0."""
    options = options or AdminBenchOptions()
    scale = options.scale
    began = time.monotonic()
    print(
        f"\nadmin API: {scale.users:,} users, {scale.sessions:,} sessions, "
        f"{scale.audit_rows:,} audit rows; {options.repetitions} repetitions per request"
    )
    with (
        tempfile.TemporaryDirectory(prefix="broker-bench-admin-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        database_url = stack.enter_context(bench_database(server_url))
        upgrade_to_head(database_url)
        print("seeding (set-based INSERT ... SELECT):")
        report = seed_admin_data(database_url, scale)
        print_seed_report(report)
        rollup = roll_up(
            database_url, report.counts["audit_actions"], time_limit=options.rollup_seconds
        )
        print_rollup(rollup, options.rollup_seconds)
        snapshot_seconds = asyncio.run(run_stats_snapshot(database_url))
        print(
            f"stats snapshot, the worker's job (shared.jobs.stats_snapshot): "
            f"{snapshot_seconds * 1000:.0f} ms"
        )
        if rollup.counts_total != report.counts["audit_actions"]:
            print(
                f"  WARNING: the daily counts sum to {rollup.counts_total:,}, not "
                f"{report.counts['audit_actions']:,}"
            )

        # No periodic jobs: they would roll up, purge and refresh under the measurement.
        broker = start_broker(
            stack,
            workdir,
            database_url,
            broker_config(report.admin_id),
            stem="broker-admin",
            env={"BROKER_PERIODIC_JOBS": "0"},
        )
        issuer = broker.issuer
        log_start = len(broker.server.log())
        now = dt.datetime.now(dt.UTC)
        token = broker.access_token(seed_admin_session(database_url, report.admin_id), ADMIN_CLIENT)
        print(f"broker on {issuer} (pid {broker.server.process.pid}), admin user:{report.admin_id}")
        with httpx2.Client(
            base_url=issuer, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:
            probes = build_probes(
                client,
                report.admin_id,
                now,
                repetitions=options.repetitions,
                export_repetitions=options.export_repetitions,
                deep_pages=options.deep_pages,
            )
            results = [time_probe(client, probe) for probe in probes]
        print_table(results)
        slow = [r for r in results if not r.error and r.p95 > EXPLAIN_OVER_MS]
        if slow:
            print_plans(slow, explain_requests(database_url, broker.env, token, slow))
        else:
            print(f"no request had a p95 above {EXPLAIN_OVER_MS:.0f} ms")
        report_server_log(broker.server, log_start)
    print(f"admin part: {time.monotonic() - began:.0f} s in all")
    return 0


def parse_args(argv: list[str] | None) -> AdminBenchOptions:
    parser = argparse.ArgumentParser(
        prog="bench.admin", description="Seed 100,000 users and time the admin API (prints)."
    )
    parser.add_argument("--quick", action="store_true", help="10 repetitions per request")
    parser.add_argument("--repetitions", type=int, help="timed requests per query (default 20)")
    parser.add_argument("--users", type=int, default=SeedScale.users)
    parser.add_argument("--sessions", type=int, default=SeedScale.sessions)
    parser.add_argument("--audit-rows", type=int, default=SeedScale.audit_rows)
    parser.add_argument(
        "--rollup-seconds",
        type=float,
        help=f"seconds of the rollup job; SQL counts the rest (default {ROLLUP_TIME_LIMIT:g})",
    )
    args = parser.parse_args(argv)
    base = AdminBenchOptions.quick() if args.quick else AdminBenchOptions()
    return AdminBenchOptions(
        scale=SeedScale(
            users=max(2, args.users),
            sessions=max(1, args.sessions),
            audit_rows=max(1, args.audit_rows),
        ),
        repetitions=max(1, args.repetitions or base.repetitions),
        export_repetitions=base.export_repetitions,
        deep_pages=base.deep_pages,
        rollup_seconds=args.rollup_seconds or base.rollup_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    server_url = os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL)
    return run_guarded(lambda: run_admin_bench(server_url, options))


if __name__ == "__main__":
    sys.exit(main())
