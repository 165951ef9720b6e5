"""``make bench``: load the broker with wrk and print how it compares with minimal baselines.

Steps: create a throw-away PostgreSQL database and migrate it; start the broker (one uvicorn
worker), take one real refresh response from it, and start ``bench.baseline_app`` with the
broker's signing keys and that response to copy; seed one refresh token per refresh request;
drive six targets with ``wrk -t1`` (a warm-up each, then rounds that run every target in
turn; the table shows medians over the rounds, and each ratio is the median of its per-round
ratios, a target against a baseline run within the same round);
print a table, the headline (refresh grant / same-tokens baseline) and the other ratios against
their targets, the broker's RSS, the COMMITs per refresh rotation measured from
``pg_stat_database``, and the CPU time per refresh of the broker and of a local PostgreSQL
server, and per response of the same-tokens baseline (``/proc``), which say where the time goes
(the ratios say how the broker compares). Then ``bench.worker`` measures the sync worker
(upstream refreshes/s with one and two processes, audit relay events/s; smaller with
``--quick``), and ``bench.admin`` the admin API at 100,000 users and 1,000,000 audit rows
(``--skip-admin`` leaves it out, ``--admin-only`` runs only it). It prints numbers and exits 0
whatever they are; the databases and every subprocess are removed on the way out, also on Ctrl-C
or an error.

This module holds the options, the plan (what runs in which order) and ``main``; the parts:
``bench.wrk`` (running and parsing wrk), ``bench.rounds`` (warm-ups and round-robin rounds),
``bench.token_supply`` (the refresh tokens), ``bench.cpu_share`` (CPU per request),
``bench.commits`` (COMMITs per rotation), ``bench.servers`` (the broker and the baseline app),
``bench.broker_keys`` (the broker's signing keys, for the baseline),
``bench.introspection`` (introspection and the verifier) and ``bench.report`` (the verdicts).

Usage: ``python -m bench.run [--quick] [--duration S] [--connections N] [--tokens N]
[--skip-admin | --admin-only]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.db.migrate import upgrade_to_head
from sqlalchemy.engine import make_url

from bench.admin import AdminBenchOptions, run_admin_bench
from bench.broker_keys import signing_jwks
from bench.commits import rotated_tokens, xact_commits
from bench.cpu_share import CpuShare
from bench.database import DEFAULT_SERVER_URL, SERVER_URL_ENV, bench_database
from bench.introspection import INTROSPECTOR, INTROSPECTOR_SECRET, measure_extras
from bench.processes import BenchError, http_get, report_server_log, run_guarded
from bench.report import RunFacts, print_extras, print_report
from bench.rounds import Rounds, Target, measure_all
from bench.seed import CLIENT_ID, seed_refresh_tokens, write_tokens
from bench.servers import start_baseline, start_broker
from bench.token_supply import TokenSupply
from bench.worker import WorkerBenchOptions, bench_redis_url, run_worker_bench

# The same-tokens baseline's request: a refresh grant's form body (bench/same_tokens.lua).
SAME_TOKENS_SCRIPT = Path(__file__).resolve().parent / "same_tokens.lua"


@dataclass(frozen=True)
class Options:
    rounds: Rounds
    tokens: int
    worker: WorkerBenchOptions
    admin: AdminBenchOptions | None = None  # None: --skip-admin
    admin_only: bool = False


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
        rounds=Rounds(
            duration=args.duration or (3 if args.quick else 10),
            warmup=args.warmup or (1 if args.quick else 3),
            repeats=max(1, args.repeats),
            connections=max(1, args.connections),
        ),
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


def broker_config() -> dict[str, Any]:
    """The broker under load: the dev provider, the refresh grant's client, the introspector."""
    return {
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


def _bench(server_url: str, options: Options) -> int:
    rounds = options.rounds
    print(
        f"bench: wrk -t1 -c{rounds.connections}, {rounds.warmup} s warm-up, "
        f"{rounds.repeats} x {rounds.duration} s per target; {options.tokens} refresh tokens"
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

        broker = start_broker(stack, workdir, database_url, broker_config())
        issuer = broker.issuer
        status, jwks_body = http_get(f"{issuer}/.well-known/jwks.json")
        if status != 200:
            raise BenchError(f"the broker's JWKS answered {status}")
        # One real refresh: its access token is introspected, and the baseline copies it all.
        sample = broker.refresh(for_introspection, CLIENT_ID)
        baseline = start_baseline(
            stack,
            workdir,
            jwks_body=jwks_body,
            signing_jwks=asyncio.run(signing_jwks(broker.env)),
            sample_response=sample,
        )
        broker_log_start = len(broker.server.log())
        print(
            f"broker on {issuer} (pid {broker.server.process.pid}), "
            f"baseline on {baseline.url} (pid {baseline.server.process.pid})"
        )

        extras = measure_extras(workdir, issuer, jwks_body, sample["access_token"], rounds)

        post_script = workdir / "post.lua"
        post_script.write_text('wrk.method = "POST"\n', encoding="ascii")
        broker_cpu = CpuShare(broker.server.process.pid)
        baseline_cpu = CpuShare(baseline.server.process.pid, "baseline", with_database=False)
        targets = [
            Target("static", "baseline static JWKS", f"{baseline.url}/jwks"),
            Target("jwks", "broker JWKS", f"{issuer}/.well-known/jwks.json"),
            Target("discovery", "broker discovery", f"{issuer}/.well-known/openid-configuration"),
            Target("sign", "baseline sign-only", f"{baseline.url}/sign", script=post_script),
            # Right before the refresh grant, so that each round's headline ratio compares two
            # runs a few seconds apart.
            Target(
                "same_tokens",
                "baseline same tokens",
                f"{baseline.url}/token",
                script=SAME_TOKENS_SCRIPT,
                cpu=baseline_cpu,
            ),
            Target(
                "refresh", "broker refresh grant", f"{issuer}/token", supply=supply, cpu=broker_cpu
            ),
        ]
        # Only the refresh grant touches the database: this counts its commits alone.
        commits_before = xact_commits(server_url, database)
        measurements = measure_all(targets, rounds)
        rss_mb = broker.server.rss_mb()
        # Stopping the broker closes its connections, whose backends then publish their counters.
        broker.server.stop()
        commits = xact_commits(server_url, database) - commits_before
        rotations = rotated_tokens(database_url)

        print_report(
            measurements,
            RunFacts(
                connections=rounds.connections,
                rss_mb=rss_mb,
                commits=commits,
                rotations=rotations,
                supply=supply,
                broker_cpu=broker_cpu,
                baseline_cpu=baseline_cpu,
            ),
        )
        print_extras(extras)
        report_server_log(broker.server, broker_log_start)
    run_worker_bench(server_url, bench_redis_url(os.environ), options.worker)
    if options.admin is not None:
        run_admin_bench(server_url, options.admin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
