"""The refresh grant's tokens under wrk: each run starts at the first token no run has sent yet."""

from __future__ import annotations

from pathlib import Path

from bench.processes import BenchError
from bench.wrk import WrkResult, run_wrk

REFRESH_SCRIPT = Path(__file__).resolve().parent / "refresh.lua"


class TokenSupply:
    """Where the next wrk run starts in the token file; every run uses tokens never sent."""

    def __init__(self, path: Path, total: int, client_id: str = "bench") -> None:
        self.path = path
        self.total = total
        self.client_id = client_id  # the public client the tokens were issued to
        self.offset = 0
        self.succeeded = 0
        self.failed = 0
        self.first_error = ""
        self.last_rate = 0.0
        self.ran_out = False

    def run(self, url: str, duration: int, connections: int) -> WrkResult | None:
        """One wrk run from the next unused token; None (and a warning) when none is left."""
        remaining = self.total - self.offset
        if remaining <= 0:
            print("    WARNING: no refresh tokens left, run skipped; rerun with a larger --tokens")
            self.ran_out = True
            return None
        expected = int(self.last_rate * duration)
        if expected > remaining:
            print(
                f"    WARNING: {remaining} refresh tokens left, about {expected} needed for the "
                "next run; rerun with a larger --tokens"
            )
        result = run_wrk(
            url,
            duration=duration,
            connections=connections,
            script=REFRESH_SCRIPT,
            script_args=(str(self.path), str(self.offset), self.client_id),
        )
        if "sent" not in result.lua:
            raise BenchError(f"refresh.lua printed no summary:\n{result.output}")
        self.offset += result.lua_int("sent")
        self.succeeded += result.lua_int("ok")
        self.failed += result.errors
        self.last_rate = max(self.last_rate, result.requests_per_sec)
        if result.errors and not self.first_error:
            self.first_error = result.lua.get("first_error", "")
        if result.lua_int("exhausted"):
            self.ran_out = True
            print(
                f"    WARNING: the {self.total} refresh tokens ran out during this run; its "
                "numbers are not valid: rerun with a larger --tokens"
            )
        return result
