"""``python -m bench.soak [--minutes N] [--schedule default|short|ci] [--rate R] [--report FILE]``

Prints the report, writes it to ``--report`` as well, and exits 1 when an invariant failed
(2 when the run could not be set up).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench.processes import BenchError, unwind_on_signals
from bench.soak.run import SCHEDULES, SoakOptions, run_soak


def parse_args(argv: list[str] | None) -> tuple[SoakOptions, Path | None]:
    parser = argparse.ArgumentParser(
        prog="bench.soak", description="Soak the broker under load while faults are injected."
    )
    default = SoakOptions()
    parser.add_argument(
        "--minutes",
        type=float,
        default=default.minutes,
        help="about how long the default schedule runs (the faults spread over it)",
    )
    parser.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default=default.schedule,
        help="short: every fault window scaled to a quarter (about 2 minutes in all); ci: to an "
        "eighth (the CI test's, about 85 s)",
    )
    parser.add_argument("--rate", type=float, default=default.rate, help="operations per second")
    parser.add_argument(
        "--reuse-interval",
        type=int,
        default=default.reuse_interval,
        help="the brokers' BROKER_REFRESH_REUSE_INTERVAL (default 0, strict, so that a lost "
        "response shows as a revocation; the broker's own default is 60)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the client mix")
    parser.add_argument("--report", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, data) afterwards"
    )
    args = parser.parse_args(argv)
    options = SoakOptions(
        minutes=max(1.0, args.minutes),
        schedule=args.schedule,
        rate=max(1.0, min(200.0, args.rate)),
        reuse_interval=max(0, args.reuse_interval),
        seed=args.seed,
        keep=args.keep,
    )
    return options, args.report


def main(argv: list[str] | None = None) -> int:
    options, report = parse_args(argv)
    unwind_on_signals()
    try:
        result = run_soak(options)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nsoak: interrupted; cleaned up", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print()
    print(result.text)
    if report is not None:
        report.write_text(result.text + "\n", encoding="utf-8")
    if result.workdir is not None:
        print(f"\nwork directory kept: {result.workdir}")
    failed = result.results.failed
    verdict = "FAILED: " + ", ".join(c.name for c in failed) if failed else "every invariant held"
    print(f"\nsoak: {verdict} ({result.seconds:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
