"""What the admin bench prints: the seed's timings, the rollup, the table of requests and the plans
of the slow ones."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.admin_jobs import RollupRun
from bench.admin_plans import SlowRequests
from bench.admin_probes import ProbeResult
from bench.admin_seed import SeedReport

TARGET_MS = 200.0  # the issue: every admin request answers within 200 ms
EXPLAIN_OVER_MS = 100.0  # requests whose p95 is above this get their SQL explained
SLOW_STATEMENT_MS = 20.0
PLAN_LINES = 12


def print_seed_report(report: SeedReport) -> None:
    """Seconds per seeding step, and the rows of each table."""
    for name, seconds in report.seconds.items():
        print(f"  {name:<34}{seconds:8.1f} s")
    print(f"  {'total':<34}{report.total_seconds:8.1f} s")
    print("  rows: " + ", ".join(f"{name} {count:,}" for name, count in report.counts.items()))


def print_rollup(run: RollupRun, time_limit: float) -> None:
    """The job's rate, what its stand-in counted, and the counts' sum."""
    if run.job_runs:
        print(
            f"audit rollup, the worker's job (shared.jobs.audit_rollup, default payload): "
            f"{run.job_rows:,} rows in {run.job_seconds:.1f} s = {run.rate:,.0f} rows/s "
            f"({run.job_runs} job runs)"
        )
    if run.sql_rows:
        why = (
            f"the job's time budget of {time_limit:.0f} s ran out (--rollup-seconds)"
            if run.job_runs
            else "the job could not run"
        )
        print(
            f"  {run.sql_rows:,} rows counted by the equivalent INSERT ... SELECT ... GROUP BY "
            f"in {run.sql_seconds:.1f} s instead: {why}"
        )
    print(f"  audit_daily_counts sums to {run.counts_total:,}")


def print_table(results: Sequence[ProbeResult]) -> None:
    """p50, p95, max and rows of each request, flagged above :data:`TARGET_MS`."""
    width = max(44, *(len(result.probe.label) for result in results)) + 2
    print()
    print(f"{'endpoint + query':<{width}}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'rows':>8}  n")
    for result in results:
        label = f"{result.probe.label:<{width}}"
        if result.error:
            print(f"{label}{'ERROR ' + result.error:>35}")
            continue
        rows = "-" if result.rows is None else str(result.rows)
        line = (
            f"{label}{result.p50:9.1f}{result.p95:9.1f}{result.max:9.1f}{rows:>8}"
            f"  {len(result.times_ms)}"
        )
        if result.size > 100_000:
            line += f"  ({result.size / 1e6:.1f} MB)"
        if result.p95 > TARGET_MS:
            line += f"  <-- p95 > {TARGET_MS:.0f} ms"
        print(line)
    over = [result for result in results if not result.error and result.p95 > TARGET_MS]
    failed = [result for result in results if result.error]
    print(
        f"\n{len(results) - len(failed)} requests measured, {len(over)} with p95 above "
        f"{TARGET_MS:.0f} ms, {len(failed)} failed"
    )
    for result in failed:
        print(f"ERROR: {result.probe.label} answered {result.error}")


_PLAN_NOISE = ("Worker ", "Sort Method", "Memory Usage", "Batches:", "Planning", "Buffers: shared")


def _plan_summary(lines: Sequence[str]) -> list[str]:
    """The plan's first node lines (with their filters and row counts) and its timings."""
    nodes = [line for line in lines if not line.strip().startswith(_PLAN_NOISE)]
    nodes = [line for line in nodes if not line.startswith("Execution")]
    head = nodes[:PLAN_LINES]
    if len(nodes) > PLAN_LINES:
        head.append(f"  ... ({len(nodes) - PLAN_LINES} more plan lines)")
    buffers = next((line.strip() for line in lines if "Buffers: shared" in line), "")
    timings = [line for line in lines if line.startswith(("Planning Time", "Execution Time"))]
    return [*head, *([buffers] if buffers else []), *timings]


def _short_sql(sql: str, width: int = 300) -> str:
    """``SELECT … FROM …``: the column list elided, the rest cut to ``width`` characters."""
    flat = " ".join(sql.split())
    depth = 0
    for index, char in enumerate(flat):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and flat.startswith(" FROM ", index) and flat.startswith("SELECT "):
            flat = "SELECT … " + flat[index + 1 :]
            break
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_plans(slow: Sequence[ProbeResult], found: SlowRequests) -> None:
    """Each slow request's statements, and the plans of those that took at least
    :data:`SLOW_STATEMENT_MS` in PostgreSQL."""
    print(f"\nSQL of the requests with p95 above {EXPLAIN_OVER_MS:.0f} ms (replayed in-process):")
    if found.replay_error:
        print(
            f"  ERROR: could not replay them in-process to capture their SQL: {found.replay_error}"
        )
        for result in slow:
            print(f"  slow: {result.probe.label} (p95 {result.p95:.1f} ms)")
        return
    for request in found.requests:
        result, statements, explained = request.result, request.statements, request.explained
        in_driver = sum(statement.ms for statement in statements)
        in_postgres = sum(
            item.executed_ms for item in explained if not math.isnan(item.executed_ms)
        )
        print(
            f"\n* {result.probe.label}: p95 {result.p95:.1f} ms over HTTP; {len(statements)} "
            f"statements, {in_driver:.1f} ms in the database driver, {in_postgres:.1f} ms "
            "executing in PostgreSQL (EXPLAIN ANALYZE)"
        )
        heavy = [item for item in explained if not item.executed_ms < SLOW_STATEMENT_MS]
        if not heavy:
            print(
                f"  no statement ran {SLOW_STATEMENT_MS:.0f} ms in PostgreSQL: the time goes to "
                "the broker process (decoding and encoding rows) and the transfer"
            )
        for item in sorted(heavy, key=lambda item: -item.executed_ms):
            print(f"  {item.executed_ms:.1f} ms in PostgreSQL: {_short_sql(item.statement.sql)}")
            for line in _plan_summary(item.plan):
                print(f"    {line}")
