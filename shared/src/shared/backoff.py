"""Exponential backoff with equal jitter, for whatever the worker tries again later: upstream
refreshes that failed for a transient reason, Logout Tokens a relying party did not take."""

from __future__ import annotations


def backoff_delay(failures: int, *, base: float, cap: float, draw: float) -> float:
    """Seconds until the next attempt after ``failures`` (>= 1) consecutive failures:
    ``base * 2^(failures-1)``, at most ``cap``, half of it fixed and half random (equal jitter,
    so attempts that failed together spread out but none comes back at once); ``draw`` is
    uniform in [0, 1)."""
    growth = float(2 ** min(max(failures, 1) - 1, 32))
    ceiling = min(cap, base * growth)
    return ceiling / 2 + draw * ceiling / 2
