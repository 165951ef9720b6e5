"""The bench's verdicts: the table of medians, each ratio against its target, the extras."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from bench.cpu_share import CpuShare
from bench.introspection import Extras
from bench.rounds import Measurement
from bench.token_supply import TokenSupply

# Targets (ratio >= unless noted).
JWKS_RATIO_TARGET = 0.9
DISCOVERY_RATIO_TARGET = 0.9
REFRESH_RATIO_TARGET = 0.6  # the headline: refresh grant / same-tokens baseline
REFRESH_RATIO_STRETCH = 0.7
REFRESH_TAIL_TARGET = 3.0  # p99 / p50, at most, with TAIL_TARGET_CONNECTIONS wrk connections
TAIL_TARGET_CONNECTIONS = 32
RSS_TARGET_MB = 150.0  # at most
COMMITS_PER_ROTATION_TARGET = 1.0  # at most; grouped rotations take it below 1
# Transactions in the bench database that are no rotation count too: an idle bench broker commits
# about two a second (its periodic jobs), a few thousandths per rotation over a full run, a few
# hundredths over a --quick one. Above this slack a rotation took more than one commit.
COMMITS_PER_ROTATION_SLACK = 0.05


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
    within = per_rotation <= COMMITS_PER_ROTATION_TARGET + COMMITS_PER_ROTATION_SLACK
    return "ok" if within else "above target"


def _at_least(value: float, target: float, stretch: float | None = None) -> str:
    if stretch is not None and value >= stretch:
        return "ok (stretch met)"
    return _verdict(value, value >= target)


@dataclass(frozen=True)
class RunFacts:
    """What the bench read beside wrk's numbers, for the verdicts."""

    connections: int  # wrk -c of every round
    rss_mb: float | None  # the broker's, after the rounds
    commits: int  # in the bench database during the rounds
    rotations: int  # refresh tokens marked used
    supply: TokenSupply
    broker_cpu: CpuShare  # the broker and PostgreSQL during the refresh grant's runs
    baseline_cpu: CpuShare  # the baseline app during the same-tokens runs


def print_report(measurements: dict[str, Measurement], facts: RunFacts) -> None:
    """The table of medians, the per-round ratios, the headline, each figure against its target.

    The headline is the refresh grant against the same-tokens baseline (the same response
    without a database); the sign-only ratio, the headline of earlier results, is printed beside
    it without a target.
    """
    print()
    print(f"{'target':<32}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for measurement in measurements.values():
        print(
            f"{measurement.name:<32}{measurement.requests_per_sec:>12.1f}"
            f"{measurement.p50_ms:>10.2f}{measurement.p99_ms:>10.2f}{measurement.errors:>8}"
        )
    supply = facts.supply
    if supply.ran_out:
        print("WARNING: the refresh tokens ran out: the refresh grant's numbers are not valid")
    print()
    static, refresh = measurements["static"], measurements["refresh"]
    compared = {
        "JWKS / static": (measurements["jwks"], static),
        "discovery / static": (measurements["discovery"], static),
        "refresh / same tokens": (refresh, measurements["same_tokens"]),
        "refresh / sign-only": (refresh, measurements["sign"]),
    }
    ratio = {name: median_ratio(*pair) for name, pair in compared.items()}
    for name, pair in compared.items():
        ratios = ", ".join(f"{value:.2f}" for value in round_ratios(*pair))
        print(f"per-round ratios, {name}: {ratios}")
    print()
    headline = ratio["refresh / same tokens"]
    print(
        f"headline: refresh grant / same-tokens baseline {headline:.2f} (median of the rounds), "
        f"target >= {REFRESH_RATIO_TARGET} (stretch {REFRESH_RATIO_STRETCH}): "
        f"{_at_least(headline, REFRESH_RATIO_TARGET, REFRESH_RATIO_STRETCH)}"
    )
    print()
    tail = _ratio(refresh.p99_ms, refresh.p50_ms)
    if facts.connections == TAIL_TARGET_CONNECTIONS:
        tail_verdict = _verdict(tail, tail <= REFRESH_TAIL_TARGET)
    else:
        tail_verdict = f"not judged (measured at c={facts.connections})"
    per_rotation = _ratio(facts.commits, facts.rotations)
    rss_mb = facts.rss_mb
    lines = [
        (
            "JWKS / static baseline",
            f"{ratio['JWKS / static']:.2f}",
            f">= {JWKS_RATIO_TARGET}",
            _at_least(ratio["JWKS / static"], JWKS_RATIO_TARGET),
        ),
        (
            "discovery / static baseline",
            f"{ratio['discovery / static']:.2f}",
            f">= {DISCOVERY_RATIO_TARGET}",
            _at_least(ratio["discovery / static"], DISCOVERY_RATIO_TARGET),
        ),
        (
            "refresh / same-tokens baseline",
            f"{headline:.2f}",
            f">= {REFRESH_RATIO_TARGET} (stretch {REFRESH_RATIO_STRETCH})",
            _at_least(headline, REFRESH_RATIO_TARGET, REFRESH_RATIO_STRETCH),
        ),
        (
            "refresh / sign-only baseline",
            f"{ratio['refresh / sign-only']:.2f}",
            "none",
            "for comparison with earlier results",
        ),
        (
            f"refresh p99 / p50 at c={facts.connections}",
            f"{tail:.2f}",
            f"<= {REFRESH_TAIL_TARGET:g} at c={TAIL_TARGET_CONNECTIONS}",
            tail_verdict,
        ),
        (
            "broker RSS after the run",
            "n/a" if rss_mb is None else f"{rss_mb:.1f} MB",
            f"<= {RSS_TARGET_MB:g} MB",
            "unknown" if rss_mb is None else _verdict(rss_mb, rss_mb <= RSS_TARGET_MB),
        ),
        (
            "COMMITs per rotation",
            f"{per_rotation:.3f}",
            f"<= {COMMITS_PER_ROTATION_TARGET:g}",
            _commit_verdict(facts.rotations, per_rotation),
        ),
    ]
    for label, value, target, verdict in lines:
        print(f"{label:<32}{value:>10}   target {target:<28}{verdict}")
    print(
        f"  ({facts.commits} commits in the bench database for {facts.rotations} rotations "
        f"recorded in refresh_tokens; {supply.succeeded} refresh responses were 200, "
        f"{supply.failed} were errors; {supply.offset} of {supply.total} tokens sent)"
    )
    if facts.rotations and per_rotation > 1.5:
        print(
            "  note: xact_commit counts every transaction, read-only ones too (for example a "
            "connection-pool pre-ping run in autocommit)"
        )
    if supply.first_error:
        print(f"  first refresh error: {supply.first_error}")
    # What the ratios hide: how much CPU each response costs, whatever the machine's speed.
    print(f"refresh CPU: {facts.broker_cpu.summary()}")
    print(f"same-tokens baseline CPU: {facts.baseline_cpu.summary()}")


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
