"""The rotation on PostgreSQL: one statement (data-modifying CTEs) on the hot-path pool.

One round trip, and at most one transaction per rotation — one transaction may carry a group of
concurrent rotations (``rotate_group_on_hot_path``, fed by ``groups``), each with its own time,
successor and audit row. A rotation that matched nothing comes back ``None``; the caller runs
``replays.resolve_failed_rotation``. A connection that fails during the statement leaves its
outcome unknown: the statement runs again and, finding nothing, asks whether the first one
committed, so a network failure never reads as a replay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from shared.auth_sessions import SessionGrant
from shared.crypto.opaque import token_hash
from shared.db.hot_path import HotPathPool, PoolTimeout
from shared.refresh_rotation.outcomes import session_grant
from shared.refresh_rotation.policy import RotationPolicy


@dataclass(frozen=True)
class HotPathRotation:
    """One refresh on the hot path: the presented token (its hash), the client, the request's own
    time and address, and the successor its rotation would write."""

    presented_hash: bytes
    client_id: str
    now: dt.datetime
    ip: str | None
    successor: str = field(repr=False)
    successor_hash: bytes
    expires_at: dt.datetime

    @classmethod
    def prepare(
        cls,
        policy: RotationPolicy,
        *,
        presented: str,
        client_id: str,
        now: dt.datetime,
        ip: str | None = None,
    ) -> HotPathRotation:
        successor = policy.successor(presented)
        return cls(
            presented_hash=token_hash(presented),
            client_id=client_id,
            now=now,
            ip=ip,
            successor=successor,
            successor_hash=token_hash(successor),
            expires_at=policy.expires_at(now),
        )

    @property
    def params(self) -> tuple[Any, ...]:
        """The statement's parameters, in the order of ``_ONE`` and ``_GROUP``."""
        return (
            self.now,
            self.presented_hash,
            self.client_id,
            self.successor_hash,
            self.expires_at,
            self.ip,
        )

    def granted(self, row: Sequence[Any]) -> SessionGrant:
        """The grant from a row of (ord, session_id, user_id, provider, scope, auth_time,
        *claims)."""
        return session_grant(row[1:], self.client_id, self.successor, self.expires_at)


# Where the statements below read their requests from: a relation ``req`` of (ord,
# requested_at, presented, client, successor, expires, ip) — the presented token's hash, its
# successor's hash and expiry. One request: $1 ... $6 in that order (ord 1). A group: the same
# six as arrays, one element per request (ord: its position, from 1).
_ONE = """
    req AS (
        SELECT 1::bigint AS ord, $1::timestamptz AS requested_at, $2::bytea AS presented,
               $3::text AS client, $4::bytea AS successor, $5::timestamptz AS expires,
               $6::text AS ip
    )
"""
_UNNEST = """
    SELECT * FROM unnest($1::timestamptz[], $2::bytea[], $3::text[], $4::bytea[],
                         $5::timestamptz[], $6::text[])
        WITH ORDINALITY AS r(requested_at, presented, client, successor, expires, ip, ord)
"""
_GROUP = f"req AS ({_UNNEST})"
# A group rotates only the tokens whose rows it can lock at once: a row another transaction
# holds (that token's rotation elsewhere, a revocation) is ``skipped``, and that member runs
# alone afterwards and waits for it there, so the group never waits on one member's lock.
_CLAIMING = """
    asked AS ({unnest}), claimed AS (
        SELECT rt.token_hash FROM refresh_tokens AS rt
        WHERE rt.token_hash = ANY ($2::bytea[]) AND rt.used_at IS NULL
        FOR UPDATE SKIP LOCKED
    ), skipped AS (
        SELECT asked.ord FROM asked JOIN refresh_tokens AS rt ON rt.token_hash = asked.presented
        WHERE rt.used_at IS NULL AND rt.token_hash NOT IN (SELECT token_hash FROM claimed)
    ), req AS (
        SELECT * FROM asked WHERE asked.presented IN (SELECT token_hash FROM claimed)
    )
"""
_GROUP_CLAIMING = _CLAIMING.format(unnest=_UNNEST)
# The skipped members' rows: their ord and nothing else.
_SKIPPED = """
    UNION ALL
    SELECT skipped.ord, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM skipped
"""

# The rotation, one statement (data-modifying CTEs) and so one transaction for every request in
# ``req``: mark each presented token used, if it is its family's unused, unexpired token, of a
# live session of that client and an active user, with no upstream link that stops refreshes;
# insert its successor and its ``refresh_token.rotated`` audit row, both at the request's own
# time; return the session and the user's claims by ``ord``. A request that matched nothing has
# no row. (A group holds each token at most once: see ``rotate_group_on_hot_path``.)
_ROTATE = """
    WITH {requests}, used AS (
        UPDATE refresh_tokens AS rt SET used_at = req.requested_at
        FROM req, auth_sessions AS s JOIN users AS u ON u.id = s.user_id
        WHERE rt.token_hash = req.presented AND rt.used_at IS NULL
          AND rt.expires_at > req.requested_at
          AND s.id = rt.session_id AND s.client_id = req.client AND s.revoked_at IS NULL
          AND u.status = 'active'
          AND NOT EXISTS (SELECT 1 FROM oauth2_tokens AS t WHERE t.profile_id = s.profile_id
                          AND t.state IN ('revoked', 'needs_reauth'))
        RETURNING req.ord, req.requested_at, req.client, req.successor, req.expires, req.ip,
                  s.id AS session_id, s.user_id, s.provider, s.scope, s.auth_time
    ), successor AS (
        INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
        SELECT used.successor, used.session_id, used.requested_at, used.expires FROM used
    ), audit AS (
        INSERT INTO audit_actions
            (event_id, action, actor, subject, client_id, ip, data, occurred_at)
        SELECT gen_random_uuid(), 'refresh_token.rotated', 'client:' || used.client,
               used.user_id::text, used.client, used.ip,
               jsonb_build_object('sid', used.session_id::text), used.requested_at
        FROM used
    )
    SELECT used.ord, used.session_id, used.user_id, used.provider, used.scope, used.auth_time,
           u.email, u.email_verified, u.display_name, u.picture, u.preferred_username, u.groups
    FROM used JOIN users AS u ON u.id = used.user_id
    {skipped}
"""

# After a connection failure: did this call's rotation commit? Only then does its successor row
# exist with the request's own time as ``created_at`` (an earlier rotation of the same token,
# whose successor is the same, wrote another time: a replay that meets a connection failure is
# still a replay). It still counts only for a live session and user.
_ROTATED_TO = """
    WITH {requests}
    SELECT req.ord, s.id, s.user_id, s.provider, s.scope, s.auth_time, u.email,
           u.email_verified, u.display_name, u.picture, u.preferred_username, u.groups
    FROM req JOIN refresh_tokens AS rt
        ON rt.token_hash = req.successor AND rt.created_at = req.requested_at
    JOIN auth_sessions AS s ON s.id = rt.session_id JOIN users AS u ON u.id = s.user_id
    WHERE s.revoked_at IS NULL AND u.status = 'active'
"""

_ROTATE_ONE = _ROTATE.format(requests=_ONE, skipped="")
_ROTATE_GROUP = _ROTATE.format(requests=_GROUP_CLAIMING, skipped=_SKIPPED)
_ROTATED_TO_ONE = _ROTATED_TO.format(requests=_ONE)
_ROTATED_TO_GROUP = _ROTATED_TO.format(requests=_GROUP)


@dataclass(frozen=True)
class RunAlone:
    """A group member's outcome: rotate it on its own with ``rotate_alone`` (its row was locked
    by another transaction, or the group's statement failed). ``outcome_unknown``: the group's
    first attempt was lost with its connection, so finding nothing must ask its successor row."""

    outcome_unknown: bool = False


# What each member of a group gets: its grant; None (nothing rotated: the caller runs
# ``resolve_failed_rotation``); or ``RunAlone``.
GroupOutcome = SessionGrant | None | RunAlone


async def rotate_on_hot_path(
    pool: HotPathPool,
    policy: RotationPolicy,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    ip: str | None = None,
) -> SessionGrant | None:
    """The PostgreSQL hot path: the rotation is one statement and its own transaction.

    ``None`` means nothing was rotated; the caller runs ``resolve_failed_rotation``. A
    connection that fails during the statement leaves its outcome unknown, and the first
    statement may even still be running on the server. So the rotation is run again: it waits
    behind the first one's row lock, and finding nothing to rotate means the first one either
    committed — then its successor row exists and is this call's answer — or rotated nothing.
    (Answering "reused" there would revoke the session for a network failure.)
    """
    rotation = HotPathRotation.prepare(
        policy, presented=presented, client_id=client_id, now=now, ip=ip
    )
    return await rotate_alone(pool, rotation)


async def rotate_alone(
    pool: HotPathPool, rotation: HotPathRotation, *, outcome_unknown: bool = False
) -> SessionGrant | None:
    """``rotate_on_hot_path`` for a prepared rotation (a group member told ``RunAlone``)."""
    params = rotation.params
    try:
        row = await pool.fetchone(_ROTATE_ONE, params)
    except PoolTimeout:
        raise  # the statement was never sent
    except psycopg.OperationalError:
        row = await pool.fetchone(_ROTATE_ONE, params)
        outcome_unknown = True
    if row is None and outcome_unknown:
        row = await pool.fetchone(_ROTATED_TO_ONE, params)
    return None if row is None else rotation.granted(row)


async def rotate_group_on_hot_path(
    pool: HotPathPool, rotations: Sequence[HotPathRotation]
) -> list[GroupOutcome]:
    """Rotate concurrent refreshes in one statement and one commit; an outcome per rotation.

    A token presented twice with one client is rotated once, for its first presentation; the
    others get ``None`` (nothing rotated), so they go on to the reuse interval or the replay
    verdict exactly as a request that came second (or ``RunAlone`` with the first, racing it
    for the row as two requests on their own would).

    A group of one token is answered ``RunAlone`` at once: the single path is its group.
    The group never waits for one member: a token whose row another transaction holds is left
    out, and that member gets ``RunAlone`` (it waits on its own). A statement error (a
    constraint, a value that does not fit) rolls the whole statement back, so nothing of the
    group was written: every member gets ``RunAlone``, and only the one at fault then fails. A
    connection failure is handled as on the single path, for the group at once: the statement
    is atomic, so either every member's rotation committed or none did; the group runs again,
    and a member that then finds nothing asks for its successor row. Raises (for every member)
    only what the single path raises when the database is unreachable: ``PoolTimeout``, or
    ``psycopg.OperationalError`` when the second attempt fails too.
    """
    firsts: dict[tuple[bytes, str], int] = {}
    for index, rotation in enumerate(rotations):
        firsts.setdefault((rotation.presented_hash, rotation.client_id), index)
    distinct = list(firsts.values())
    if len(distinct) == 1:  # a lone rotation has no neighbour to share with: the single path
        return [RunAlone()] * len(rotations)
    together = await _rotate_together(pool, [rotations[index] for index in distinct])
    outcomes = dict(zip(distinct, together, strict=True))
    answers: list[GroupOutcome] = []
    for index, rotation in enumerate(rotations):
        first = outcomes[firsts[(rotation.presented_hash, rotation.client_id)]]
        if index in outcomes or isinstance(first, RunAlone):
            answers.append(first)
        else:  # a second presentation of a token the group rotated or found nothing for
            answers.append(None)
    return answers


async def _rotate_together(
    pool: HotPathPool, rotations: Sequence[HotPathRotation]
) -> list[GroupOutcome]:
    """``rotate_group_on_hot_path`` for distinct tokens."""
    params = [list(column) for column in zip(*(r.params for r in rotations), strict=True)]
    outcome_unknown = False
    try:
        try:
            rows = await pool.fetchall(_ROTATE_GROUP, params)
        except PoolTimeout:
            raise  # the statement was never sent
        except psycopg.OperationalError:
            outcome_unknown = True
            rows = await pool.fetchall(_ROTATE_GROUP, params)
            # Rows the second run rotated come back from both queries, with the same grant.
            rows += await pool.fetchall(_ROTATED_TO_GROUP, params)
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        # Nothing of the statement was written: each member alone, so only its own error fails it.
        return [RunAlone(outcome_unknown)] * len(rotations)
    by_ord: dict[int, Sequence[Any]] = {}
    for row in rows:
        if row[0] not in by_ord or by_ord[row[0]][1] is None:  # a grant over a "skipped"
            by_ord[row[0]] = row
    outcomes: list[GroupOutcome] = []
    for ord_, rotation in enumerate(rotations, start=1):
        answer = by_ord.get(ord_)
        if answer is None:
            outcomes.append(None)
        elif answer[1] is None:  # skipped: its row was locked
            outcomes.append(RunAlone(outcome_unknown))
        else:
            outcomes.append(rotation.granted(answer))
    return outcomes
