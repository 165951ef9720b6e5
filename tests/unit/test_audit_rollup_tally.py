"""The rollup counts a batch a slice at a time: the same totals, and the loop keeps turning."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import NamedTuple

from shared.jobs.audit_rollup import SLICE, _tally
from sqlalchemy.ext.asyncio import create_async_engine

DAY = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)


class AuditRow(NamedTuple):
    action: str
    subject: str
    occurred_at: dt.datetime
    provider: str
    sid: str | None = None


async def test_a_batch_counted_in_slices_gives_the_batch_totals_and_yields_the_loop() -> None:
    early, late = uuid.uuid4(), uuid.uuid4()
    rows = [
        AuditRow("refresh_token.rotated", str(uuid.uuid4()), DAY, "corp") for _ in range(3 * SLICE)
    ]
    # `early` is seen late in the first slice and earlier in the last; `late` the other way.
    rows[0] = AuditRow("user.signed_in", str(early), DAY + dt.timedelta(hours=5), "corp")
    rows[-1] = AuditRow("user.signed_in", str(early), DAY + dt.timedelta(hours=1), "corp")
    rows[1] = AuditRow("refresh_token.rotated", str(late), DAY + dt.timedelta(hours=1), "corp")
    rows[-2] = AuditRow("refresh_token.rotated", str(late), DAY + dt.timedelta(hours=6), "gh")
    rows[2] = AuditRow("user.disabled", "user:admin", DAY - dt.timedelta(days=1), "")

    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.connect() as connection:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            before = turns
            counts, seen = await _tally(connection, rows)
            during = turns - before
            task.cancel()
    finally:
        await engine.dispose()

    # Every row's provider is in its data: no database query, so only the slices yield.
    assert during >= 2
    assert counts == {
        (DAY.date(), "refresh_token.rotated", "corp"): 3 * SLICE - 4,
        (DAY.date(), "refresh_token.rotated", "gh"): 1,
        (DAY.date(), "user.signed_in", "corp"): 2,
        ((DAY - dt.timedelta(days=1)).date(), "user.disabled", ""): 1,
    }
    assert seen[early] == DAY + dt.timedelta(hours=5)
    assert seen[late] == DAY + dt.timedelta(hours=6)
    # The other rotations' users (one each), and the two above.
    assert len(seen) == (3 * SLICE - 5) + 2
