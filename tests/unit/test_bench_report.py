"""``bench.report``: the headline is the refresh grant against the same-tokens baseline, each figure
is judged against its own target, and the sign-only ratio is still printed, without one."""

from __future__ import annotations

from pathlib import Path

from bench.cpu_share import CpuShare
from bench.report import RunFacts, print_report
from bench.rounds import Measurement
from bench.token_supply import TokenSupply
from bench.wrk import parse_wrk_output

RUN = """  Latency Distribution
     50%    1.00ms
     99%    {p99}ms
  {requests} requests in 3.00s, 1.00MB read
Requests/sec:    {rate}
"""


def _measurement(key: str, *rates: float, p99: float = 2.0) -> Measurement:
    runs = [
        parse_wrk_output(RUN.format(p99=p99, requests=int(rate * 3), rate=rate)) for rate in rates
    ]
    return Measurement(key, runs)


def _measurements(*, refresh_p99: float = 2.0) -> dict[str, Measurement]:
    return {
        "static": _measurement("static", 10_000, 10_000, 10_000),
        "jwks": _measurement("jwks", 9_500, 9_000, 9_800),
        "discovery": _measurement("discovery", 9_000, 9_200, 9_100),
        "sign": _measurement("sign", 5_000, 5_000, 5_000),
        "same_tokens": _measurement("same_tokens", 2_000, 2_500, 2_000),
        # Each round against its own baseline run: 0.65, 0.52, 0.61 -> median 0.61.
        "refresh": _measurement("refresh", 1_300, 1_300, 1_220, p99=refresh_p99),
    }


def _facts(tmp_path: Path, *, connections: int = 32, commits: int = 900) -> RunFacts:
    return RunFacts(
        connections=connections,
        rss_mb=120.0,
        commits=commits,
        rotations=1_000,
        supply=TokenSupply(tmp_path / "tokens.txt", 10_000),
        broker_cpu=CpuShare(0),
        baseline_cpu=CpuShare(0, "baseline", with_database=False),
    )


def _line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def test_the_headline_is_the_refresh_grant_against_the_same_tokens_baseline(capsys, tmp_path):
    print_report(_measurements(), _facts(tmp_path))
    output = capsys.readouterr().out

    assert "per-round ratios, refresh / same tokens: 0.65, 0.52, 0.61" in output
    assert _line(output, "headline:").endswith(
        "refresh grant / same-tokens baseline 0.61 (median of the rounds), "
        "target >= 0.6 (stretch 0.7): ok"
    )
    assert _line(output, "refresh / same-tokens baseline").split()[4] == "0.61"
    sign_only = _line(output, "refresh / sign-only baseline")
    assert "0.26" in sign_only and "for comparison with earlier results" in sign_only


def test_grouped_commits_below_one_per_rotation_meet_the_target(capsys, tmp_path):
    print_report(_measurements(), _facts(tmp_path, commits=412))
    line = _line(capsys.readouterr().out, "COMMITs per rotation")
    assert "0.412" in line and "<= 1" in line and line.endswith("ok")


def test_two_commits_per_rotation_are_above_the_target(capsys, tmp_path):
    print_report(_measurements(), _facts(tmp_path, commits=2_000))
    assert _line(capsys.readouterr().out, "COMMITs per rotation").endswith("above target")


def test_the_tail_is_judged_only_at_the_connections_its_target_is_set_for(capsys, tmp_path):
    print_report(_measurements(refresh_p99=3.5), _facts(tmp_path))
    assert _line(capsys.readouterr().out, "refresh p99 / p50 at c=32").endswith("below target")

    print_report(_measurements(refresh_p99=3.5), _facts(tmp_path, connections=64))
    assert _line(capsys.readouterr().out, "refresh p99 / p50 at c=64").endswith(
        "not judged (measured at c=64)"
    )
