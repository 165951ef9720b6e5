"""``bench.wrk`` reads wrk's ``--latency`` output and ``bench.report`` turns rounds into ratios:
what ``make bench`` prints rests on these."""

from __future__ import annotations

import math

import pytest

from bench.processes import BenchError
from bench.report import median_ratio, round_ratios
from bench.rounds import Measurement
from bench.wrk import parse_wrk_output

REFRESH_RUN = """Running 3s test @ http://127.0.0.1:8000/token
  1 threads and 32 connections
  Latency Distribution
     50%  850.00us
     75%    2.00ms
     90%    3.00ms
     99%   12.50ms
  1234 requests in 3.00s, 1.00MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:    411.33
bench-lua sent=1240
bench-lua ok=1230
bench-lua failed=4
bench-lua first_error=400 invalid_grant
bench-lua exhausted=0
"""


def _run(rate: float) -> str:
    return REFRESH_RUN.replace("411.33", str(rate))


def test_a_refresh_run_counts_socket_errors_and_the_scripts_non_200s() -> None:
    result = parse_wrk_output(REFRESH_RUN)
    assert (result.requests_per_sec, result.p50_ms, result.p99_ms) == (411.33, 0.85, 12.5)
    assert result.requests == 1234
    # 3 socket errors + 4 non-200s counted by refresh.lua (wrk's own 7 leaves out 201-399).
    assert result.errors == 7
    assert (result.lua_int("sent"), result.lua_int("ok"), result.lua_int("missing")) == (
        1240,
        1230,
        0,
    )
    assert result.lua["first_error"] == "400 invalid_grant"


def test_a_run_without_the_script_counts_wrks_non_2xx() -> None:
    plain = "\n".join(line for line in REFRESH_RUN.splitlines() if "bench-lua" not in line)
    assert parse_wrk_output(plain).errors == 3 + 7


def test_output_without_latencies_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match="unexpected wrk output"):
        parse_wrk_output("Requests/sec: 10.0\n")


def test_the_ratio_is_the_median_of_the_rounds_ratios_each_against_its_own_baseline() -> None:
    target = Measurement("target", [parse_wrk_output(_run(rate)) for rate in (90, 300, 40)])
    baseline = Measurement("baseline", [parse_wrk_output(_run(rate)) for rate in (100, 400, 0)])
    ratios = round_ratios(target, baseline)
    assert ratios[:2] == [0.9, 0.75] and math.isnan(ratios[2])
    assert median_ratio(target, baseline) == pytest.approx(0.825)
    assert math.isnan(median_ratio(Measurement("none", []), baseline))
