"""``make bench-scale``: how the refresh grant, introspection and the admin API cost as the data
grows — 10k, 100k and 1M sessions, 1M and 10M audit rows.

For each size, a throw-away PostgreSQL database is migrated and seeded in set-based SQL
(``bench.admin_seed``: two users for three sessions, their linked profiles and upstream links,
the sessions with their refresh-token history — up to ``--tokens-per-session`` tokens each, all
but the newest rotated — and the audit rows over 60 days); the worker's jobs then run as a
deployment would have run them: housekeeping until it has purged what it would (sessions past
their retention), the audit rollup (``--rollup-seconds`` of the job, then its set-based
stand-in for the rest) and the stats snapshot. A real ``broker serve`` (one uvicorn worker, no
periodic jobs) starts on it. Then wrk
drives the refresh grant with the current tokens of seeded live sessions and introspection of
others (``bench.scale_load``), round-robin after a warm-up, and the admin API is timed from an
admin's token (``bench.admin_probes``: each listing with its filters, page 2 and a deep keyset
page, and the statistics; the exports are left out, their time is their size). Requests whose
p95 is above 100 ms get their SQL's ``EXPLAIN (ANALYZE, BUFFERS)``. Once the broker has stopped,
the share of the rotations' ``UPDATE`` of ``refresh_tokens`` that were HOT (no index written) is
read from ``pg_stat_user_tables``. The database is dropped before the next size.

It prints one row per size (``bench.scale_report``), each admin request's p95 by size, and the
goals: the refresh grant's p50 at the largest session count at most 1.2 times its p50 at the
smallest, and every admin listing's p95 below 200 ms at the largest audit table. It exits 0
whatever the numbers are.

Usage: ``python -m bench.scale [--sizes 10k,100k,1M] [--audit-rows 1M,1M,10M] [--duration S]
[--repeats N] [--connections N] [--repetitions N] [--deep-pages N] [--tokens-per-session N]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import psycopg
from shared.db.migrate import upgrade_to_head
from sqlalchemy.engine import make_url

from bench.admin import broker_config as admin_broker_config
from bench.admin_jobs import roll_up, run_housekeeping_to_the_end, run_stats_snapshot
from bench.admin_plans import explain_requests
from bench.admin_probes import build_probes, time_probe
from bench.admin_report import EXPLAIN_OVER_MS, print_plans, print_rollup, print_seed_report
from bench.admin_report import print_table as print_admin_table
from bench.admin_seed import (
    ADMIN_CLIENT,
    SEEDED_TABLES,
    seed_admin_data,
    seed_admin_session,
    table_rows,
)
from bench.admin_seed_sql import SeedScale
from bench.database import DEFAULT_SERVER_URL, SERVER_URL_ENV, bench_database, libpq_url
from bench.processes import report_server_log, run_guarded
from bench.rounds import Rounds
from bench.scale_load import (
    INTROSPECTOR,
    INTROSPECTOR_SECRET,
    measure_load,
    refresh_token_updates,
)
from bench.scale_report import (
    Size,
    SizeResult,
    print_goals,
    print_probe_table,
    print_summary,
    write_json,
)
from bench.servers import start_broker

USERS_PER_SESSION = 2 / 3  # as the admin bench: 100,000 users for 150,000 sessions
SESSION_USER_PRIME = 7919  # the seed spreads sessions over users by it (admin_seed_sql)
_COUNT = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


@dataclass(frozen=True)
class Options:
    sizes: tuple[Size, ...]
    rounds: Rounds
    repetitions: int
    deep_pages: int
    tokens_per_session: int
    rollup_seconds: float
    json_path: Path | None


def parse_count(text: str) -> int:
    """``10k`` -> 10000, ``1M`` -> 1000000, ``2500`` -> 2500."""
    match = _COUNT.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 10k, 1M, 2500)")
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    value = round(float(match.group(1)) * factor)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a count is at least 1: {text!r}")
    return value


def parse_sizes(sessions: str, audit_rows: str) -> tuple[Size, ...]:
    """The sizes: session counts, each with its audit rows (one count for all, or one each)."""
    counts = [parse_count(part) for part in sessions.split(",")]
    audit = [parse_count(part) for part in audit_rows.split(",")]
    if len(audit) == 1:
        audit *= len(counts)
    if len(audit) != len(counts):
        raise argparse.ArgumentTypeError(
            f"--audit-rows: one count for all sizes or one per size ({len(counts)})"
        )
    return tuple(Size(n, rows) for n, rows in zip(counts, audit, strict=True))


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench.scale",
        description="The refresh grant, introspection and the admin API as the data grows.",
    )
    parser.add_argument(
        "--sizes", default="10k,100k,1M", help="session counts (default %(default)s)"
    )
    parser.add_argument(
        "--audit-rows",
        default="1M,1M,10M",
        help="audit rows, one for all sizes or one per size (default %(default)s)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target")
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per target and size")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    parser.add_argument("--repetitions", type=int, default=20, help="timed admin requests each")
    parser.add_argument("--deep-pages", type=int, default=50, help="the deep page of listings")
    parser.add_argument(
        "--tokens-per-session", type=int, default=8, help="refresh tokens per session, 1 to N"
    )
    parser.add_argument(
        "--rollup-seconds", type=float, default=2.0, help="seconds of the rollup job, then SQL"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes, args.audit_rows)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    return Options(
        sizes=sizes,
        rounds=Rounds(
            duration=max(1, args.duration),
            warmup=max(1, args.warmup),
            repeats=max(1, args.repeats),
            connections=max(1, args.connections),
        ),
        repetitions=max(1, args.repetitions),
        deep_pages=max(2, args.deep_pages),
        tokens_per_session=max(1, args.tokens_per_session),
        rollup_seconds=max(0.1, args.rollup_seconds),
        json_path=args.json,
    )


def broker_config(admin_id: Any) -> dict[str, Any]:
    """The admin bench's clients and admin, with ``cli`` confidential (it introspects)."""
    config = admin_broker_config(admin_id)
    for client in config["clients"]:
        if client["id"] == INTROSPECTOR:
            client["secret"] = INTROSPECTOR_SECRET
    return config


def seed_scale(size: Size, tokens_per_session: int) -> SeedScale:
    users = max(2, round(size.sessions * USERS_PER_SESSION))
    if users % SESSION_USER_PRIME == 0:
        users += 1
    return SeedScale(
        users=users,
        sessions=size.sessions,
        audit_rows=size.audit_rows,
        tokens_per_session=tokens_per_session,
    )


def measure_size(server_url: str, size: Size, options: Options) -> SizeResult:
    """Seed a fresh database to ``size``, load a broker on it, time the admin API; drop it."""
    print(f"\n=== {size.label} ===")
    with (
        tempfile.TemporaryDirectory(prefix="broker-bench-scale-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        database_url = stack.enter_context(bench_database(server_url))
        print(f"database {make_url(database_url).database}: migrating")
        upgrade_to_head(database_url)
        print("seeding (set-based INSERT ... SELECT):")
        report = seed_admin_data(database_url, seed_scale(size, options.tokens_per_session))
        print_seed_report(report)
        housekeeping_seconds, purged = asyncio.run(run_housekeeping_to_the_end(database_url))
        print(
            f"housekeeping (shared.jobs.housekeeping) until done: {housekeeping_seconds:.1f} s, "
            "deleted " + ", ".join(f"{kind} {count:,}" for kind, count in purged.items())
        )
        with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
            connection.execute("VACUUM (ANALYZE) auth_sessions, refresh_tokens")
            counts = table_rows(connection, SEEDED_TABLES)
        print("  rows: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
        started = time.monotonic()
        rollup = roll_up(
            database_url, report.counts["audit_actions"], time_limit=options.rollup_seconds
        )
        rollup_seconds = time.monotonic() - started
        print_rollup(rollup, options.rollup_seconds)
        snapshot_seconds = asyncio.run(run_stats_snapshot(database_url))
        print(f"stats snapshot (shared.jobs.stats_snapshot): {snapshot_seconds * 1000:.0f} ms")

        broker = start_broker(
            stack,
            workdir,
            database_url,
            broker_config(report.admin_id),
            stem="broker-scale",
            env={"BROKER_PERIODIC_JOBS": "0"},
        )
        log_start = len(broker.server.log())
        print(f"broker on {broker.issuer} (pid {broker.server.process.pid})")
        admin_token = broker.access_token(
            seed_admin_session(database_url, report.admin_id), ADMIN_CLIENT
        )
        load = measure_load(workdir, database_url, report.token_seed, broker, options.rounds)
        rss_mb = broker.server.rss_mb()
        now = dt.datetime.now(dt.UTC)
        with httpx2.Client(
            base_url=broker.issuer,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=120,
        ) as client:
            probes = build_probes(
                client,
                report.admin_id,
                now,
                repetitions=options.repetitions,
                export_repetitions=0,
                deep_pages=options.deep_pages,
                exports=False,
            )
            results = [time_probe(client, probe) for probe in probes]
        print_admin_table(results)
        slow = [r for r in results if not r.error and r.p95 > EXPLAIN_OVER_MS]
        if slow:
            print_plans(slow, explain_requests(database_url, broker.env, admin_token, slow))
        report_server_log(broker.server, log_start)
        broker.server.stop()  # its connections' backends publish their counts as they exit
        (updated, hot), (updated_before, hot_before) = (
            refresh_token_updates(database_url),
            load.updates_before,
        )
    return SizeResult(
        size=size,
        counts=counts,
        seed_seconds=report.total_seconds,
        housekeeping_seconds=housekeeping_seconds,
        rollup_seconds=rollup_seconds,
        snapshot_seconds=snapshot_seconds,
        load=load,
        probes=results,
        rss_mb=rss_mb,
        token_updates=updated - updated_before,
        hot_token_updates=hot - hot_before,
    )


def _bench(server_url: str, options: Options) -> int:
    began = time.monotonic()
    rounds = options.rounds
    print(
        "bench.scale: "
        + "; ".join(size.label for size in options.sizes)
        + f"; wrk -t1 -c{rounds.connections}, {rounds.warmup} s warm-up, {rounds.repeats} x "
        f"{rounds.duration} s per target; {options.repetitions} timed requests per admin query"
    )
    results = [measure_size(server_url, size, options) for size in options.sizes]
    print_summary(results)
    print_probe_table(results)
    print_goals(results)
    if options.json_path is not None:
        write_json(options.json_path, results)
        print(f"\nfigures written to {options.json_path}")
    print(f"bench.scale: {time.monotonic() - began:.0f} s in all")
    return 0


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    server_url = os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL)
    if shutil.which("wrk") is None:
        print(
            "bench: wrk is not installed; install it first (apt-get install wrk)", file=sys.stderr
        )
        return 1
    return run_guarded(lambda: _bench(server_url, options))


if __name__ == "__main__":
    sys.exit(main())
