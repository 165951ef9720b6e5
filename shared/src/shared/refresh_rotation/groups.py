"""Group commit for the refresh hot path: concurrent rotations share one statement and one commit.

The refresh grant's rotation costs PostgreSQL a transaction, and its commit (a WAL flush) is
most of what it costs the server. ``RotationGroups.rotate`` does not send its rotation at once:
it joins the group that is filling, and the group is sent when the event loop next gets to it —
so the rotations that reach the hot path in the same loop turn (up to ``max_size``; a full group
is sent as it is, and the next rotation starts another) travel together, as one statement in
one transaction (``hot_path.rotate_group_on_hot_path``, which owns the SQL and the rules). Each
rotation keeps its own time, successor and audit row; each caller gets its own answer, and only
once the group's statement has returned, that is committed. A rotation that
matched nothing comes back ``None`` and its caller resolves it alone, as on the single path. A
member the group could not take — its token's row locked by another transaction, or a
statement error that rolled the group back — is rotated on its own afterwards, in its caller's
task: it waits, or fails, alone. Nothing waits for a group to fill: under light load groups
are single rotations, and they grow with the load.

Why in the loop, not on a timer: waiting for company would add latency to every refresh, while
requests that arrive together are already waiting for the same loop turn. Why per process: each
broker process fills its own groups; replicas never coordinate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import psycopg

from shared.auth_sessions import SessionGrant
from shared.db.hot_path import HotPathPool
from shared.refresh_rotation.hot_path import (
    GroupOutcome,
    HotPathRotation,
    RunAlone,
    rotate_alone,
    rotate_group_on_hot_path,
)
from shared.refresh_rotation.policy import RotationPolicy


@dataclass(frozen=True)
class _Member:
    rotation: HotPathRotation
    answer: asyncio.Future[GroupOutcome]


@dataclass
class GroupCounts:
    """What the groups of one process did since it started (the broker's ``/metrics``)."""

    groups: int = 0  # statements that rotated at least one refresh token, one commit each
    grouped: int = 0  # the refresh tokens those statements rotated
    # Refreshes handed to the single statement: a group of one (no concurrent neighbour), or a
    # member a group left out (its row locked, or the group's statement failed).
    alone: int = 0


class RotationGroups:
    """The groups of one process: the one filling, and those being sent."""

    def __init__(self, pool: HotPathPool, policy: RotationPolicy, *, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("a group holds at least one rotation")
        self._pool = pool
        self._policy = policy
        self._max_size = max_size
        self._filling: list[_Member] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False
        self.counts = GroupCounts()

    @property
    def max_size(self) -> int:
        return self._max_size

    async def rotate(
        self, *, presented: str, client_id: str, now: dt.datetime, ip: str | None = None
    ) -> SessionGrant | None:
        """``rotate_on_hot_path``, in the group that is filling: the grant once the group
        committed, or ``None`` when nothing was rotated (the caller runs
        ``resolve_failed_rotation``)."""
        if self._closed:
            raise psycopg.OperationalError("the rotation groups are closed")
        rotation = HotPathRotation.prepare(
            self._policy, presented=presented, client_id=client_id, now=now, ip=ip
        )
        loop = asyncio.get_running_loop()
        member = _Member(rotation, loop.create_future())
        group = self._filling
        if group is None:
            group = self._filling = []
            # The task's first step runs in a later loop turn: the group fills until then.
            task = loop.create_task(self._send(group))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        group.append(member)
        if len(group) >= self._max_size:
            self._filling = None  # full: it goes as it is; the next rotation starts a new one
        outcome = await member.answer
        if isinstance(outcome, RunAlone):
            # Alone in its group, its row was locked, or the group's statement failed: on its
            # own, in this task.
            return await rotate_alone(self._pool, rotation, outcome_unknown=outcome.outcome_unknown)
        return outcome

    async def close(self) -> None:
        """Refuse new rotations; the groups already formed are sent and answered."""
        self._closed = True
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, group: list[_Member]) -> None:
        if self._filling is group:
            self._filling = None  # sealed: later rotations start the next group
        try:
            outcomes = await rotate_group_on_hot_path(
                self._pool, [member.rotation for member in group]
            )
        except asyncio.CancelledError:  # the loop is shutting down
            for member in group:
                member.answer.cancel()
            raise
        except Exception as exc:  # the database is unreachable: every member hears it
            for member in group:
                if not member.answer.done():
                    member.answer.set_exception(exc)
            return
        # Counted here, not by the callers: a caller that gave up still had its token rotated.
        rotated = sum(isinstance(outcome, SessionGrant) for outcome in outcomes)
        self.counts.groups += int(rotated > 0)
        self.counts.grouped += rotated
        self.counts.alone += sum(isinstance(outcome, RunAlone) for outcome in outcomes)
        for member, outcome in zip(group, outcomes, strict=True):
            if not member.answer.done():  # else its caller gave up (cancelled)
                member.answer.set_result(outcome)
