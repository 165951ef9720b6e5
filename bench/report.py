"""The bench's verdicts: the table of medians, each ratio against its target, the extras."""

from __future__ import annotations

import math
import statistics

from bench.cpu_share import CpuShare
from bench.introspection import Extras
from bench.rounds import Measurement
from bench.token_supply import TokenSupply

# Targets (ratio >= unless noted).
JWKS_RATIO_TARGET = 0.9
DISCOVERY_RATIO_TARGET = 0.9
REFRESH_RATIO_TARGET = 0.35
REFRESH_RATIO_STRETCH = 0.45
REFRESH_TAIL_TARGET = 4.0  # p99 / p50, at most
RSS_TARGET_MB = 150.0  # at most
COMMITS_PER_ROTATION_MAX = 1.05


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


def print_extras(extras: Extras) -> None:
    """Introspection's medians as a row of the table, then the verifier's rates."""
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
