"""The weekly partition layout of ``audit_actions``: which week a row belongs to, the names, and
the weeks kept ahead."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from shared.db.audit_partitions import (
    DEFAULT_PARTITION,
    WEEKS_AHEAD,
    Week,
    is_partition,
    weeks_ahead,
)

UTC = dt.UTC


@pytest.mark.parametrize(
    ("at", "monday"),
    [
        (dt.datetime(2026, 12, 7, 0, 0, tzinfo=UTC), dt.datetime(2026, 12, 7, tzinfo=UTC)),
        (
            dt.datetime(2026, 12, 13, 23, 59, 59, 999999, tzinfo=UTC),
            dt.datetime(2026, 12, 7, tzinfo=UTC),
        ),
        (dt.datetime(2026, 12, 14, 0, 0, tzinfo=UTC), dt.datetime(2026, 12, 14, tzinfo=UTC)),
        # Another offset: the week is the UTC one (Monday 00:30 in Paris is Sunday in UTC).
        (
            dt.datetime(2026, 12, 14, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            dt.datetime(2026, 12, 7, tzinfo=UTC),
        ),
        (dt.datetime(1999, 3, 3, 12, 0, tzinfo=UTC), dt.datetime(1999, 3, 1, tzinfo=UTC)),
    ],
)
def test_a_row_belongs_to_the_utc_week_from_monday_midnight(
    at: dt.datetime, monday: dt.datetime
) -> None:
    week = Week.of(at)
    assert week.start == monday
    assert week.start <= at < week.end
    assert week.end - week.start == dt.timedelta(days=7)


def test_a_partition_is_named_after_its_monday_and_read_back_from_the_name() -> None:
    week = Week.of(dt.datetime(2026, 12, 9, tzinfo=UTC))
    assert week.name == "audit_actions_p20261207"
    assert Week.named(week.name) == week
    assert is_partition(week.name) and is_partition(DEFAULT_PARTITION)


@pytest.mark.parametrize(
    "name",
    [
        "audit_actions",
        "audit_actions_p20261208",  # a Tuesday: not a week of the layout
        "audit_actions_p20261399",
        "audit_actions_p2026120",
        "audit_daily_counts",
        "audit_actions_p20261207_pkey",
    ],
)
def test_other_tables_are_not_partitions_of_the_layout(name: str) -> None:
    assert Week.named(name) is None
    assert not is_partition(name)


def test_the_current_week_and_the_next_ones_are_kept_ahead() -> None:
    now = dt.datetime(2026, 12, 31, 18, 0, tzinfo=UTC)
    weeks = weeks_ahead(now)
    assert len(weeks) == WEEKS_AHEAD + 1
    assert weeks[0].start <= now < weeks[0].end
    assert all(later.start == earlier.end for earlier, later in itertools.pairwise(weeks))
