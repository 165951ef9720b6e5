"""The measurement loop: every target warmed up, then run round-robin; medians per target."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.cpu_share import CpuShare
from bench.token_supply import TokenSupply
from bench.wrk import WrkResult, run_wrk


@dataclass(frozen=True)
class Rounds:
    """How long and how often each target is loaded, and with how many wrk connections."""

    duration: int
    warmup: int
    repeats: int
    connections: int


@dataclass
class Measurement:
    """The repeated runs of one target and their medians."""

    name: str
    runs: list[WrkResult]

    def _median(self, values: Iterator[float]) -> float:
        return statistics.median(values) if self.runs else math.nan

    @property
    def requests_per_sec(self) -> float:
        return self._median(run.requests_per_sec for run in self.runs)

    @property
    def p50_ms(self) -> float:
        return self._median(run.p50_ms for run in self.runs)

    @property
    def p99_ms(self) -> float:
        return self._median(run.p99_ms for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


@dataclass(frozen=True)
class Target:
    """One URL to load; ``script`` sets the method (``script_args`` are passed to it),
    ``supply`` makes it the refresh grant."""

    key: str
    name: str
    url: str
    script: Path | None = None
    script_args: tuple[str, ...] = ()
    supply: TokenSupply | None = None
    cpu: CpuShare | None = None  # where this target's CPU time is counted

    def run(self, duration: int, connections: int) -> WrkResult | None:
        if self.cpu is not None:
            return self.cpu.measure(lambda: self._run(duration, connections))
        return self._run(duration, connections)

    def _run(self, duration: int, connections: int) -> WrkResult | None:
        if self.supply is not None:
            return self.supply.run(self.url, duration, connections)
        return run_wrk(
            self.url,
            duration=duration,
            connections=connections,
            script=self.script,
            script_args=self.script_args,
        )


def measure_all(targets: list[Target], rounds: Rounds) -> dict[str, Measurement]:
    """Warm every target up, then run them round-robin, so drift on the machine hits all alike."""
    print(f"warm-up, {rounds.warmup} s per target")
    for target in targets:
        warm = target.run(rounds.warmup, rounds.connections)
        if warm is not None:
            print_run(target.name, warm)
    for target in targets:
        if target.cpu is not None:
            target.cpu.reset()
    measurements = {target.key: Measurement(target.name, []) for target in targets}
    for index in range(rounds.repeats):
        print(f"round {index + 1} of {rounds.repeats}, {rounds.duration} s per target")
        for target in targets:
            result = target.run(rounds.duration, rounds.connections)
            if result is not None:
                print_run(target.name, result)
                measurements[target.key].runs.append(result)
    return measurements


def print_run(name: str, result: WrkResult) -> None:
    """One progress line per wrk run."""
    line = (
        f"  {name:<26}{result.requests_per_sec:10.1f} req/s   p50 {result.p50_ms:7.2f} ms   "
        f"p99 {result.p99_ms:7.2f} ms   errors {result.errors}"
    )
    if result.errors and result.lua.get("first_error"):
        line += f" (first: {result.lua['first_error'][:200]})"
    print(line)
