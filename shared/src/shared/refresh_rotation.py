"""Refresh-token rotation: exchange the family's newest token for its successor (RFC 9700 §4.14.2).

**Successors are derived, not drawn.** A token's successor is HMAC-SHA256 of the token under a
key derived from the keyring (256 bits, unpredictable without the keyring). So when the same
token is presented again within the reuse interval — a retry after a lost response (a crash, a
cut connection, a proxy timeout), two browser tabs refreshing at once — the broker hands out
that same successor again (same value, same expiry), as long as it is still the family's unused
token: one live token per family, never a second family, and still nothing stored but SHA-256
hashes. Each such answer is audited ``refresh_token.retried``, in the transaction that gives it.
Outside the interval, or once the successor has itself been used, a rotated token presented
again is a replay: the whole family (the session) is revoked and
``refresh_token.reuse_detected`` is audited. ``BROKER_REUSE_RESPONSE`` widens what a replay
revokes: every live session of the user (``user``), and also the user's upstream links
(``user_and_upstream``: marked revoked here, their grants revoked at the providers by the caller
after the commit).

A rotation also needs a live session of the same client, an active user, and an upstream link
that is neither revoked nor waiting for re-authentication (``oauth2_tokens.state``).

On PostgreSQL the rotation is one statement (data-modifying CTEs) on the hot-path pool: one
round trip, and at most one transaction per rotation — one transaction may carry a group of
concurrent rotations (``rotate_group_on_hot_path``, fed by ``shared.rotation_groups``), each
with its own time, successor and audit row. SQLite (the embedded default) and refreshes that
narrow the scope run the same steps as separate statements inside the caller's transaction.
When any of them finds nothing to rotate, ``resolve_failed_rotation`` says why (for each
request on its own), or answers the reuse interval's grant.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg
from sqlalchemy import exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import audit_values, record_audit_core
from shared.auth_sessions import (
    USER_CLAIM_COLUMNS,
    SessionGrant,
    lookup_refresh_token,
    revoke_session,
    revoke_user_sessions,
)
from shared.crypto.keyring import Keyring
from shared.crypto.opaque import b64url, token_hash
from shared.db.hot_path import HotPathPool, PoolTimeout
from shared.db.tables import AUDIT_TABLE, LINKS, REFRESH_TOKENS, SESSIONS, USERS
from shared.revocations import Revocation
from shared.settings import ReuseResponse
from shared.upstream_tokens import RevokedGrant, revoke_user_links

SUCCESSOR_PURPOSE = "refresh-token-successor"
RETRIED = "refresh_token.retried"
# Link states that stop a session's refreshes (the others are "ok" and "refresh_failing").
BLOCKING_LINK_STATES = ("revoked", "needs_reauth")


class RotationFailure(Enum):
    UNKNOWN = "unknown"  # never issued, or purged
    EXPIRED = "expired"
    WRONG_CLIENT = "wrong_client"
    REVOKED = "revoked"  # the session was revoked or the user disabled
    REUSED = "reused"  # an already rotated token: the family is now revoked
    LINK_REVOKED = "link_revoked"  # the upstream link behind the session was revoked
    REAUTH_REQUIRED = "reauth_required"  # the upstream link needs the user to sign in again


class RotationError(Exception):
    def __init__(
        self,
        failure: RotationFailure,
        session_id: Any = None,
        revocations: Sequence[Revocation] = (),
        upstream_grants: Sequence[RevokedGrant] = (),
    ) -> None:
        super().__init__(failure.value)
        self.failure = failure
        self.session_id = session_id
        # What a replay revoked, for the caller to act on after the commit: publish the
        # sessions' revocations; revoke the links' grants at their providers.
        self.revocations = list(revocations)
        self.upstream_grants = list(upstream_grants)


@dataclass(frozen=True)
class RotationPolicy:
    """How long refresh tokens live, the reuse interval, and the keys successors derive from."""

    refresh_ttl: int
    reuse_interval: int  # seconds; 0: any second presentation is a replay
    successor_keys: tuple[bytes, ...] = field(repr=False)  # the keyring's keys, primary first
    reuse_response: ReuseResponse = "family"  # what a replay revokes

    @classmethod
    def build(
        cls,
        keyring: Keyring,
        *,
        refresh_ttl: int,
        reuse_interval: int,
        reuse_response: ReuseResponse = "family",
    ) -> RotationPolicy:
        keys = keyring.derived_keys(SUCCESSOR_PURPOSE)
        return cls(refresh_ttl, reuse_interval, keys, reuse_response)

    def successor(self, presented: str, key_index: int = 0) -> str:
        digest = hmac.digest(self.successor_keys[key_index], presented.encode(), "sha256")
        return b64url(digest).decode("ascii")

    def expires_at(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.refresh_ttl)


# --------------------------------------------------------------------------- PostgreSQL


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
        return _granted(row[1:], self.client_id, self.successor, self.expires_at)


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


def _granted(
    row: Sequence[Any], client_id: str, successor: str, expires_at: dt.datetime
) -> SessionGrant:
    """A grant from a row of (session_id, user_id, provider, scope, auth_time, *claims)."""
    return SessionGrant(
        session_id=row[0],
        user_id=row[1],
        client_id=client_id,
        provider=row[2],
        scope=row[3],
        auth_time=row[4],
        refresh_token=successor,
        refresh_expires_at=expires_at,
        user=dict(zip(USER_CLAIM_COLUMNS, row[5:], strict=True)),
    )


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


# --------------------------------------------------------------------------- portable


def _link_blocks(state: tuple[str, ...]) -> Any:
    """``EXISTS`` a link of the session's profile in one of ``state``."""
    return exists().where(LINKS.c.profile_id == SESSIONS.c.profile_id, LINKS.c.state.in_(state))


async def rotate_in_transaction(
    connection: AsyncConnection,
    policy: RotationPolicy,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    ip: str | None = None,
) -> SessionGrant:
    """The same rotation as separate statements inside the caller's transaction.

    Raises ``RotationError``; on ``REUSED`` the caller must commit so the family's revocation
    and its audit row persist.
    """
    successor = policy.successor(presented)
    expires_at = policy.expires_at(now)
    live_session = (
        select(SESSIONS.c.id)
        .join(USERS, USERS.c.id == SESSIONS.c.user_id)
        .where(
            SESSIONS.c.client_id == client_id,
            SESSIONS.c.revoked_at.is_(None),
            USERS.c.status == "active",
            ~_link_blocks(BLOCKING_LINK_STATES),
        )
    )
    used = (
        await connection.execute(
            update(REFRESH_TOKENS)
            .where(
                REFRESH_TOKENS.c.token_hash == token_hash(presented),
                REFRESH_TOKENS.c.used_at.is_(None),
                REFRESH_TOKENS.c.expires_at > now,
                REFRESH_TOKENS.c.session_id.in_(live_session),
            )
            .values(used_at=now)
            .returning(REFRESH_TOKENS.c.session_id)
        )
    ).first()
    if used is None:
        return await resolve_failed_rotation(
            connection, policy, presented=presented, client_id=client_id, now=now, ip=ip
        )
    await connection.execute(
        insert(REFRESH_TOKENS).values(
            session_id=used.session_id,
            token_hash=token_hash(successor),
            created_at=now,
            expires_at=expires_at,
        )
    )
    row = (
        await connection.execute(_session_and_claims().where(SESSIONS.c.id == used.session_id))
    ).one()
    await connection.execute(
        insert(AUDIT_TABLE).values(
            **audit_values(
                action="refresh_token.rotated",
                actor=f"client:{client_id}",
                subject=str(row.user_id),
                client_id=client_id,
                ip=ip,
                data={"sid": str(row.id)},
                now=now,
            )
        )
    )
    return _granted(tuple(row), client_id, successor, expires_at)


def _session_and_claims() -> Any:
    return select(
        SESSIONS.c.id,
        SESSIONS.c.user_id,
        SESSIONS.c.provider,
        SESSIONS.c.scope,
        SESSIONS.c.auth_time,
        *(USERS.c[name] for name in USER_CLAIM_COLUMNS),
    ).join(USERS, USERS.c.id == SESSIONS.c.user_id)


# --------------------------------------------------------------------------- failures


async def resolve_failed_rotation(
    connection: AsyncConnection,
    policy: RotationPolicy,
    *,
    presented: str,
    client_id: str,
    now: dt.datetime,
    ip: str | None = None,
) -> SessionGrant:
    """Why a rotation found nothing (raised as ``RotationError``), or the reuse interval's grant.

    A replay revokes the family; the caller must commit even when this raises. The reuse
    interval's grant adds its ``refresh_token.retried`` row; the caller commits it with the
    answer.
    """
    row = await lookup_refresh_token(connection, token_hash(presented))
    if row is None:
        raise RotationError(RotationFailure.UNKNOWN)
    if row.client_id != client_id:
        # RFC 6749 §10.4: bound to its client; another client learns nothing about it.
        raise RotationError(RotationFailure.WRONG_CLIENT)
    if row.session_revoked_at is not None or row.user_status != "active":
        raise RotationError(RotationFailure.REVOKED, row.session_id)
    if row.link_state == "revoked":
        raise RotationError(RotationFailure.LINK_REVOKED, row.session_id)
    if row.link_state == "needs_reauth":
        raise RotationError(RotationFailure.REAUTH_REQUIRED, row.session_id)
    if row.used_at is not None:
        # `now` was read before this statement ran, so a concurrent winner's `used_at` can be
        # later than it: in strict mode (0) the window must not exist at all.
        since_rotation = now - row.used_at
        if policy.reuse_interval > 0 and since_rotation <= dt.timedelta(
            seconds=policy.reuse_interval
        ):
            # docs/security.md "Refresh-token rotation and reuse": the successor nobody has used
            # yet is what the lost response carried, so this is a retry, not a theft.
            grant = await _live_successor(connection, policy, presented, client_id, now)
            if grant is not None:
                await record_audit_core(
                    connection,
                    action=RETRIED,
                    actor=f"client:{client_id}",
                    subject=str(row.user_id),
                    client_id=client_id,
                    ip=ip,
                    data={
                        "sid": str(row.session_id),
                        # A concurrent winner's used_at can be later than this request's `now`.
                        "seconds_after_rotation": round(
                            max(since_rotation.total_seconds(), 0.0), 3
                        ),
                    },
                    now=now,
                )
                return grant
        revocations, grants = await _respond_to_replay(
            connection, policy.reuse_response, row.session_id, row.user_id, client_id, now
        )
        raise RotationError(RotationFailure.REUSED, row.session_id, revocations, grants)
    if row.expires_at <= now:
        raise RotationError(RotationFailure.EXPIRED, row.session_id)
    raise RotationError(RotationFailure.REVOKED, row.session_id)


async def _live_successor(
    connection: AsyncConnection,
    policy: RotationPolicy,
    presented: str,
    client_id: str,
    now: dt.datetime,
) -> SessionGrant | None:
    """The presented token's successor, if it is still the family's unused, unexpired token."""
    candidates = {
        token_hash(policy.successor(presented, index)): index
        for index in range(len(policy.successor_keys))  # a keyring rotated within the interval
    }
    row = (
        await connection.execute(
            _session_and_claims()
            .add_columns(REFRESH_TOKENS.c.token_hash, REFRESH_TOKENS.c.expires_at)
            .join(REFRESH_TOKENS, REFRESH_TOKENS.c.session_id == SESSIONS.c.id)
            .where(
                REFRESH_TOKENS.c.token_hash.in_(list(candidates)),
                REFRESH_TOKENS.c.used_at.is_(None),
                REFRESH_TOKENS.c.expires_at > now,
            )
        )
    ).first()
    if row is None:
        return None
    successor = policy.successor(presented, candidates[row.token_hash])
    claims = tuple(row)[: 5 + len(USER_CLAIM_COLUMNS)]
    return _granted(claims, client_id, successor, row.expires_at)


async def _respond_to_replay(
    connection: AsyncConnection,
    response: ReuseResponse,
    session_id: Any,
    user_id: Any,
    client_id: str,
    now: dt.datetime,
) -> tuple[list[Revocation], list[RevokedGrant]]:
    """Revoke what ``response`` says a replay revokes, and audit it with the list."""
    actor = f"client:{client_id}"
    reason = "refresh_token_reuse"
    grants: list[RevokedGrant] = []
    ended_with_links: list[Revocation] = []
    if response == "user_and_upstream":
        # ... and the upstream grants the broker holds for the user: the links are marked
        # revoked now (the user signs in through each provider again); the caller revokes the
        # grants at the providers after the commit. Links are locked before sessions, the order
        # the upstream refresh and the profile sync take them in, so the two cannot deadlock.
        grants, ended_with_links = await revoke_user_links(
            connection, user_id, now=now, actor=actor, reason=reason
        )
    if response == "family":
        # RFC 9700 §4.14.2: a rotated token presented again revokes the whole family.
        family = await revoke_session(connection, session_id, now=now, reason=reason, actor=actor)
        revocations = [family] if family is not None else []
    else:
        # docs/security.md "Reuse response policy": a replay means someone else holds the user's
        # tokens, maybe from more than one device or client: every session of the user goes
        # (the family among them), in one lock order (session id), so concurrent replays
        # cannot deadlock.
        revocations = ended_with_links + await revoke_user_sessions(
            connection, user_id, now=now, reason=reason, actor=actor
        )
    await record_audit_core(
        connection,
        action="refresh_token.reuse_detected",
        actor=actor,
        subject=str(user_id),
        client_id=client_id,
        data={
            "sid": str(session_id),
            "policy": response,
            "revoked_sessions": [str(revocation.session_id) for revocation in revocations],
            "revoked_links": [
                {"id": str(grant.link_id), "provider": grant.provider} for grant in grants
            ],
        },
        now=now,
    )
    return revocations, grants
