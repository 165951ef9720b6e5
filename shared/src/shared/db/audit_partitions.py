"""The weekly partitions of ``audit_actions`` on PostgreSQL: their names and bounds, which exist,
and the statements that create and drop one.

**Layout** (migration 0009). ``audit_actions`` is partitioned by RANGE on ``occurred_at``: one
partition per ISO week, Monday 00:00 UTC to the next Monday, named ``audit_actions_pYYYYMMDD``
after its Monday, and ``audit_actions_default`` for any row no week covers, so an insert never
fails for want of a partition. The periodic job keeps the week of ``now`` and the next
:data:`WEEKS_AHEAD` in place (``shared.jobs.audit_retention``), so rows reach the default
partition only when the jobs have not run for that long, or with a clock outside every week;
creating a week's partition moves the default partition's rows of that week into it, in the
transaction that attaches it. SQLite keeps one table.

**Why weeks.** At 1,000 refreshes/s the table grows by ~86M rows a day. Every query that does
not name a time range plans and probes every partition — the audit relay and the rollup read
in ``(txid, id)`` order, which no range prunes. With the retention's 400 days that is ~62
weekly partitions or ~405 daily ones: measured on PostgreSQL 15, the relay's batch query took
~3 ms (planning ~2 ms) against weekly partitions and ~35 ms (planning ~30 ms) against daily
ones. A week is ~600M rows at that rate, which PostgreSQL keeps and drops as easily as a day.

**Keys.** A unique index of a partitioned table must contain the partition key: the primary
key is ``(id, occurred_at)``. ``id`` stays unique across partitions because one sequence draws
every id (moving rows between partitions keeps theirs); ``event_id`` is a random UUID, unique
without an index, as before. The ``(txid, id)`` order the relay and the rollup read and the
listing's indexes exist on every partition.

**Locks.** A new partition is made beside the table and attached (``ATTACH PARTITION`` takes
SHARE UPDATE EXCLUSIVE on ``audit_actions``: inserts and reads go on), which scans the default
partition under ACCESS EXCLUSIVE; dropping a partition takes ACCESS EXCLUSIVE on
``audit_actions`` for the few milliseconds of the drop. Both wait at most :data:`LOCK_TIMEOUT`
for their locks, so a long read (an export) makes them try again on the next run rather than
hold up the refresh grant's inserts queued behind them. All changes to the layout take the
advisory lock :data:`ADVISORY_LOCK` first and check again under it, so two workers running the
job at once do each change once.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import column, func, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.tables import AUDIT_TABLE

PARENT = AUDIT_TABLE.name
DEFAULT_PARTITION = f"{PARENT}_default"
WEEK = dt.timedelta(days=7)
# Weeks kept in place beyond the current one: a month of stopped jobs before rows land in the
# default partition (which still takes them).
WEEKS_AHEAD = 4
LOCK_TIMEOUT = "1s"
ADVISORY_LOCK = 7270002  # pg_advisory_xact_lock key of audit partition changes
# Every column, in the table's order: rows move between partitions with their id and txid.
COLUMNS = ", ".join(column.name for column in AUDIT_TABLE.columns)

_NAME = re.compile(rf"^{PARENT}_p(\d{{8}})$")
_MONDAY = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)  # weeks are counted from a Monday


@dataclass(frozen=True, order=True)
class Week:
    """One week's partition: rows with ``start <= occurred_at < end``."""

    start: dt.datetime  # a Monday, 00:00 UTC

    @classmethod
    def of(cls, at: dt.datetime) -> Week:
        """The week ``at`` falls in."""
        weeks = (at.astimezone(dt.UTC) - _MONDAY) // WEEK
        return cls(_MONDAY + weeks * WEEK)

    @classmethod
    def named(cls, name: str) -> Week | None:
        """The week of a partition named by the layout; None for any other table."""
        match = _NAME.match(name)
        if match is None:
            return None
        try:
            start = dt.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
        except ValueError:
            return None
        return cls(start) if cls.of(start).start == start else None

    @property
    def end(self) -> dt.datetime:
        return self.start + WEEK

    @property
    def name(self) -> str:
        return f"{PARENT}_p{self.start:%Y%m%d}"

    def later(self, weeks: int) -> Week:
        return Week(self.start + weeks * WEEK)


def is_partition(table_name: str) -> bool:
    """Whether a table is one of the layout's partitions (the models describe only the parent)."""
    return table_name == DEFAULT_PARTITION or Week.named(table_name) is not None


def weeks_ahead(now: dt.datetime, ahead: int = WEEKS_AHEAD) -> list[Week]:
    """The week of ``now`` and the ``ahead`` weeks after it."""
    current = Week.of(now)
    return [current.later(n) for n in range(ahead + 1)]


def _literal(at: dt.datetime) -> str:
    return f"'{at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}+00'"


def default_partition_sql() -> str:
    return f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {PARENT} DEFAULT"


class PartitionStatements(NamedTuple):
    """What creates one week's partition, in this order and in one transaction."""

    lock: str  # nothing lands in the default partition between the move and the attach
    create: str
    move: str  # the default partition's rows of that week, if any (its row count)
    attach: str


def create_partition_sql(week: Week) -> PartitionStatements:
    """The statements that create ``week``'s partition and move the default partition's rows
    of that week into it (a week no partition covered yet)."""
    start, end = _literal(week.start), _literal(week.end)
    # Names and instants of the layout only, never input.
    moved = (
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "  # noqa: S608
        f"WHERE occurred_at >= {start} AND occurred_at < {end} RETURNING {COLUMNS}) "
        f"INSERT INTO {week.name} ({COLUMNS}) SELECT {COLUMNS} FROM moved"
    )
    return PartitionStatements(
        lock=f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE",
        create=f"CREATE TABLE {week.name} (LIKE {PARENT} INCLUDING DEFAULTS)",
        move=moved,
        attach=(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {week.name} "
            f"FOR VALUES FROM ({start}) TO ({end})"
        ),
    )


def drop_partition_sql(week: Week) -> str:
    return f"DROP TABLE {week.name}"


async def lock_layout(connection: AsyncConnection) -> None:
    """For the rest of the transaction: wait at most :data:`LOCK_TIMEOUT` for any lock, then
    hold the advisory lock of layout changes."""
    await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    await connection.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})"))


async def existing_weeks(connection: AsyncConnection) -> list[Week]:
    """The week partitions ``audit_actions`` has, oldest first (any other partition is not
    the layout's, and left alone)."""
    names = await connection.scalars(
        text(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    return sorted(week for name in names if (week := Week.named(name)) is not None)


async def oldest_in_default(connection: AsyncConnection) -> dt.datetime | None:
    """The earliest ``occurred_at`` in the default partition (None: it is empty)."""
    default = table(DEFAULT_PARTITION, column("occurred_at"))
    oldest: dt.datetime | None = await connection.scalar(select(func.min(default.c.occurred_at)))
    return oldest


async def estimated_rows(connection: AsyncConnection, week: Week) -> int:
    """The planner's row count of a partition (counting a week's rows would read them all)."""
    rows = await connection.scalar(
        text("SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"),
        {"name": week.name},
    )
    return max(0, int(rows or 0))
