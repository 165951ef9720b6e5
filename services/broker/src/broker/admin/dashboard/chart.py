"""The overview's chart: sign-ins per provider per day as stacked bars, laid out for inline SVG.

Pure geometry (no I/O, no markup): the template draws the rectangles, axis labels and legend it
is given, each bar with a ``<title>`` for its numbers. Every day of the range gets a slot, so a
day without sign-ins shows as a gap rather than disappearing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WIDTH = 960
HEIGHT = 260
LEFT = 44  # room for the count labels
BOTTOM = 28  # room for the day labels
TOP = 10
# Distinguishable and legible on white (the Okabe-Ito palette, safe for colour blindness).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bars: tuple[Bar, ...]
    day_labels: tuple[Label, ...]
    count_labels: tuple[Label, ...]
    gridlines: tuple[float, ...]
    legend: tuple[tuple[str, str], ...]  # (provider, colour)
    total: int


def _nice_ceiling(value: int) -> int:
    """The axis top: the smallest of 1, 2, 5 x 10^n that is at least ``value``."""
    if value <= 0:
        return 1
    magnitude: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    count = max((last - first).days + 1, 1)
    return [first + dt.timedelta(days=offset) for offset in range(count)]


def sign_in_chart(
    first: str, last: str, sign_ins: Iterable[Mapping[str, Any]], providers: Iterable[str] = ()
) -> Chart:
    """From ``stats_summary``'s ``from``, ``to`` and ``sign_ins`` (``day``, ``provider``,
    ``count``); ``providers`` fixes the colour order (others follow, sorted)."""
    days = _days(dt.date.fromisoformat(first), dt.date.fromisoformat(last))
    counts: dict[tuple[str, str], int] = {}
    for item in sign_ins:
        pair = (str(item["day"]), str(item["provider"]))
        counts[pair] = counts.get(pair, 0) + int(item["count"])
    seen = {provider for _day, provider in counts}
    known = list(providers)
    order = [p for p in known if p in seen] + sorted(seen - set(known))
    colors = {provider: PALETTE[index % len(PALETTE)] for index, provider in enumerate(order)}
    per_day = {day.isoformat(): 0 for day in days}
    for (day_key, _provider), count in counts.items():
        if day_key in per_day:
            per_day[day_key] += count
    top = _nice_ceiling(max(per_day.values(), default=0))
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / len(days)
    bar_width = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    for index, day in enumerate(days):
        key = day.isoformat()
        base = float(HEIGHT - BOTTOM)
        for provider in order:
            count = counts.get((key, provider), 0)
            if not count:
                continue
            height = plot_height * count / top
            base -= height
            bars.append(
                Bar(
                    x=round(LEFT + index * slot + (slot - bar_width) / 2, 2),
                    y=round(base, 2),
                    width=round(bar_width, 2),
                    height=round(height, 2),
                    color=colors[provider],
                    title=f"{key}: {count} sign-in{'s' if count != 1 else ''} with {provider}",
                )
            )
    label_every = max(1, math.ceil(len(days) / 10))
    day_labels = tuple(
        Label(
            x=round(LEFT + index * slot + slot / 2, 2),
            y=HEIGHT - BOTTOM + 16,
            text=day.strftime("%b %d"),
        )
        for index, day in enumerate(days)
        if index % label_every == 0
    )
    steps = (0, top // 2, top) if top >= 2 else (0, top)
    count_labels = tuple(
        Label(
            x=LEFT - 6, y=round(HEIGHT - BOTTOM - plot_height * step / top + 4, 2), text=str(step)
        )
        for step in steps
    )
    gridlines = tuple(round(HEIGHT - BOTTOM - plot_height * step / top, 2) for step in steps)
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        bars=tuple(bars),
        day_labels=day_labels,
        count_labels=count_labels,
        gridlines=gridlines,
        legend=tuple((provider, colors[provider]) for provider in order),
        total=sum(counts.values()),
    )
