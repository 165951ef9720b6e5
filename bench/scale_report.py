"""What ``bench.scale`` prints: one row per size, the admin requests' p95 by size, the goals, and
the same figures as JSON (``--json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.admin_probes import ProbeResult
from bench.rounds import Measurement
from bench.scale_load import Load

REFRESH_P50_GROWTH = 1.2  # refresh p50 at the largest size over the smallest, at most
LISTING_P95_MS = 200.0  # every admin listing's p95 at the largest audit table, below
STATS = "/admin/oauth2/stats"


def count_label(value: int) -> str:
    """10000 -> 10k, 1000000 -> 1M (as ``--sizes`` takes them)."""
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= factor and value % (factor // 10) == 0:
            return f"{value / factor:g}{suffix}"
    return str(value)


def rounded(value: int) -> str:
    """A measured count, short: 4512345 -> 4.5M, 26610 -> 27k."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    return f"{value / 1_000:.0f}k" if value >= 10_000 else str(value)


@dataclass(frozen=True)
class Size:
    sessions: int
    audit_rows: int

    @property
    def label(self) -> str:
        return f"{count_label(self.sessions)} sessions, {count_label(self.audit_rows)} audit rows"


@dataclass(frozen=True)
class SizeResult:
    """Everything measured at one size."""

    size: Size
    counts: dict[str, int]  # rows per seeded table, after housekeeping
    seed_seconds: float
    housekeeping_seconds: float
    rollup_seconds: float
    snapshot_seconds: float
    load: Load
    probes: list[ProbeResult]
    rss_mb: float | None
    token_updates: int  # refresh_tokens rows updated during the load (rotations)
    hot_token_updates: int  # of which HOT: no index entry written

    @property
    def hot_share(self) -> float:
        return self.hot_token_updates / self.token_updates if self.token_updates else math.nan

    def listings(self) -> list[ProbeResult]:
        return [probe for probe in self.probes if not probe.probe.path.startswith(STATS)]

    def stats(self) -> list[ProbeResult]:
        return [probe for probe in self.probes if probe.probe.path.startswith(STATS)]


def _worst(probes: Sequence[ProbeResult]) -> ProbeResult | None:
    measured = [probe for probe in probes if probe.times_ms]
    return max(measured, key=lambda probe: probe.p95) if measured else None


def _p95(probes: Sequence[ProbeResult]) -> float:
    worst = _worst(probes)
    return worst.p95 if worst else math.nan


def print_summary(results: Sequence[SizeResult]) -> None:
    """One row per size."""
    print()
    print(
        f"{'sessions':>9}{'refresh':>10}{'audit':>8}{'seed':>7} |{'refresh/s':>10}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'errors':>7} |{'intro/s':>9}{'p50 ms':>8}{'errors':>7} |"
        f"{'listings':>9}{'stats':>7}"
    )
    print(
        f"{'':>9}{'tokens':>10}{'rows':>8}{'s':>7} |{'':>10}{'':>8}{'':>8}{'':>7} |"
        f"{'':>9}{'':>8}{'':>7} |{'p95 ms':>9}{'p95 ms':>7}"
    )
    for result in results:
        refresh, intro = result.load.refresh, result.load.introspection
        print(
            f"{count_label(result.size.sessions):>9}"
            f"{rounded(result.counts.get('refresh_tokens', 0)):>10}"
            f"{count_label(result.size.audit_rows):>8}{result.seed_seconds:>7.0f} |"
            f"{refresh.requests_per_sec:>10.0f}{refresh.p50_ms:>8.2f}{refresh.p99_ms:>8.2f}"
            f"{refresh.errors:>7} |{intro.requests_per_sec:>9.0f}{intro.p50_ms:>8.2f}"
            f"{intro.errors:>7} |{_p95(result.listings()):>9.1f}{_p95(result.stats()):>7.1f}"
        )
    for result in results:
        worst = _worst(result.listings())
        print(
            f"  {result.size.label}: refresh CPU {result.load.cpu.summary()}; broker RSS "
            + ("n/a" if result.rss_mb is None else f"{result.rss_mb:.0f} MB")
            + f"; HOT rotations {100 * result.hot_share:.0f} %"
            + (f"; slowest listing {worst.probe.label}" if worst else "")
        )


def print_probe_table(results: Sequence[SizeResult]) -> None:
    """Each admin request's p95 (ms), one column per size."""
    labels: list[str] = []
    for result in results:
        labels += [p.probe.label for p in result.probes if p.probe.label not in labels]
    width = max((len(label) for label in labels), default=20) + 2
    print(f"\n{'admin request, p95 ms':<{width}}" + "".join(_column(r) for r in results))
    for label in labels:
        cells = []
        for result in results:
            found = [p for p in result.probes if p.probe.label == label]
            cells.append(f"{found[0].p95:>12.1f}" if found and found[0].times_ms else f"{'-':>12}")
        print(f"{label:<{width}}" + "".join(cells))


def _column(result: SizeResult) -> str:
    size = result.size
    return f"{count_label(size.sessions) + '/' + count_label(size.audit_rows):>12}"


def goals(results: Sequence[SizeResult]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) for each goal the sizes measured."""
    lines = []
    by_sessions = sorted(results, key=lambda result: result.size.sessions)
    small, large = by_sessions[0], by_sessions[-1]
    if large.size.sessions > small.size.sessions:
        growth = large.load.refresh.p50_ms / small.load.refresh.p50_ms
        lines.append(
            (
                f"refresh p50 at {count_label(large.size.sessions)} / at "
                f"{count_label(small.size.sessions)} sessions",
                f"{growth:.2f}",
                f"<= {REFRESH_P50_GROWTH}",
                _verdict(growth, growth <= REFRESH_P50_GROWTH),
            )
        )
    largest = max(results, key=lambda result: result.size.audit_rows)
    worst = _worst(largest.listings())
    if worst is not None:
        lines.append(
            (
                f"admin listings p95 at {count_label(largest.size.audit_rows)} audit rows",
                f"{worst.p95:.1f} ms",
                f"< {LISTING_P95_MS:.0f} ms",
                _verdict(worst.p95, worst.p95 < LISTING_P95_MS)
                + ("" if worst.p95 < LISTING_P95_MS else f" ({worst.probe.label})"),
            )
        )
    return lines


def _verdict(value: float, good: bool) -> str:
    if math.isnan(value):
        return "not measured"
    return "ok" if good else "not met"


def print_goals(results: Sequence[SizeResult]) -> None:
    print()
    checks = goals(results)
    if not checks:
        print("goals: not measured (needs two session counts)")
    for figure, value, target, verdict in checks:
        print(f"{figure:<48}{value:>10}   target {target:<10}{verdict}")


def _measurement(measurement: Measurement) -> dict[str, Any]:
    return {
        "requests_per_sec": measurement.requests_per_sec,
        "p50_ms": measurement.p50_ms,
        "p99_ms": measurement.p99_ms,
        "errors": measurement.errors,
        "runs": len(measurement.runs),
    }


def as_json(results: Sequence[SizeResult]) -> dict[str, Any]:
    """The figures of every size, and the goals, as one JSON document."""
    sizes = []
    for result in results:
        cpu = result.load.cpu
        sizes.append(
            {
                "sessions": result.size.sessions,
                "audit_rows": result.size.audit_rows,
                "rows": result.counts,
                "seed_seconds": result.seed_seconds,
                "housekeeping_seconds": result.housekeeping_seconds,
                "rollup_seconds": result.rollup_seconds,
                "snapshot_seconds": result.snapshot_seconds,
                "refresh": _measurement(result.load.refresh),
                "introspection": _measurement(result.load.introspection),
                "refresh_live_sessions": result.load.live_sessions,
                "refresh_token_passes": result.load.token_passes,
                "broker_cpu_us_per_refresh": 1e6 * cpu.server_seconds / cpu.requests
                if cpu.requests
                else None,
                "postgres_cpu_us_per_refresh": 1e6 * cpu.database_seconds / cpu.requests
                if cpu.requests and cpu.database_seen
                else None,
                "broker_rss_mb": result.rss_mb,
                "refresh_token_updates": result.token_updates,
                "hot_refresh_token_updates": result.hot_token_updates,
                "admin": [
                    {
                        "request": probe.probe.label,
                        "p50_ms": probe.p50,
                        "p95_ms": probe.p95,
                        "rows": probe.rows,
                        "n": len(probe.times_ms),
                        "error": probe.error,
                    }
                    for probe in result.probes
                ],
            }
        )
    checks = [
        {"figure": figure, "value": value, "target": target, "verdict": verdict}
        for figure, value, target, verdict in goals(results)
    ]
    return {"sizes": sizes, "goals": checks}


def _finite(value: Any) -> Any:
    """NaN (a figure not measured) as None, in nested lists and dicts."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def write_json(path: Path, results: Sequence[SizeResult]) -> None:
    text = json.dumps(_finite(as_json(results)), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
