"""The invariants, from what the load saw (the ledger), the database, the audit stream in Redis
and the upstream stand-in's refresh log, read once the load has stopped (every service still
running).

Each :class:`Check` says what was measured and whether it must hold: ``required`` ones are
invariants (the CI test asserts them); the others are figures a fault cannot make lossless
today, reported with what the client sees.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import psycopg
import redis

from bench.soak.faults import FaultRecord, newest_audit_row, relay_covers
from bench.soak.ledger import Exchange, Ledger, Presentation
from bench.soak.processes import AUDIT_STREAM

RELAY_WAIT = 60.0  # seconds the audit relay gets to publish what the run wrote
STREAM_PAGE = 5000
SIGNED_OUT = frozenset({"revoked_by_user", "revoked_by_client", "logout"})


@dataclass
class Check:
    name: str
    measured: int
    required: bool  # an invariant: must be 0 (or hold), the CI test asserts it
    detail: str = ""

    @property
    def holds(self) -> bool:
        return self.measured == 0


@dataclass
class Database:
    """What the broker's tables say at the end."""

    sessions: dict[str, dict[str, Any]]  # sid -> revoked_reason, revoked_at, client_id
    tokens: dict[str, list[tuple[bytes, Any]]]  # sid -> (token hash, used_at), oldest first
    hashes: dict[bytes, tuple[str, Any]]  # token hash -> (sid, used_at)
    audit: list[tuple[str, str, str | None, tuple[int, int]]]  # event_id, action, sid, position
    links: Counter[str]  # upstream link states


def read_database(url: str) -> Database:
    with psycopg.connect(url, autocommit=True) as connection:
        sessions = {
            str(sid): {"revoked_reason": reason, "revoked_at": revoked_at, "client_id": client}
            for sid, reason, revoked_at, client in connection.execute(
                "SELECT id, revoked_reason, revoked_at, client_id FROM auth_sessions"
            )
        }
        tokens: dict[str, list[tuple[bytes, Any]]] = defaultdict(list)
        hashes: dict[bytes, tuple[str, Any]] = {}
        for sid, token_hash, used_at in connection.execute(
            "SELECT session_id, token_hash, used_at FROM refresh_tokens ORDER BY created_at"
        ):
            tokens[str(sid)].append((bytes(token_hash), used_at))
            hashes[bytes(token_hash)] = (str(sid), used_at)
        audit = [
            (str(event_id), action, sid, (int(txid), int(row_id)))
            for event_id, action, sid, txid, row_id in connection.execute(
                "SELECT event_id, action, data->>'sid', txid, id FROM audit_actions "
                "ORDER BY txid, id"
            )
        ]
        links = Counter(state for (state,) in connection.execute("SELECT state FROM oauth2_tokens"))
    return Database(sessions, dict(tokens), hashes, audit, links)


def read_stream(redis_url: str) -> list[str]:
    """The ``event_id`` of every entry of the audit stream, in stream order."""
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    events: list[str] = []
    try:
        start = "-"
        while True:
            page = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                client.xrange(AUDIT_STREAM, min=start, max="+", count=STREAM_PAGE),
            )
            if not page:
                return events
            events += [fields[b"event_id"].decode() for _, fields in page]
            start = "(" + page[-1][0].decode()
    finally:
        client.close()


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class Results:
    checks: list[Check] = field(default_factory=list)
    revocations: Counter[str] = field(default_factory=Counter)
    audit_actions: Counter[str] = field(default_factory=Counter)
    links: Counter[str] = field(default_factory=Counter)
    stream_entries: int = 0
    upstream_presentations: int = 0
    upstream_repeats: Counter[str] = field(default_factory=Counter)
    upstream_log: list[dict[str, Any]] = field(default_factory=list)  # for a post-mortem

    def add(self, name: str, measured: int, *, required: bool, detail: str = "") -> None:
        self.checks.append(Check(name, measured, required, detail))

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.required and not check.holds]


# --------------------------------------------------------------------------- refresh tokens


def check_refresh_tokens(ledger: Ledger, db: Database, reuse_interval: int, out: Results) -> None:
    twice = 0
    for attempts in ledger.presentations.values():
        granted = [p for p in attempts if p.status == 200]
        successors = {p.successor for p in granted}
        if (len(granted) > 1 and reuse_interval == 0) or len(successors) > 1:
            twice += 1
    forked = sum(
        1
        for sid, rows in db.tokens.items()
        if db.sessions.get(sid, {}).get("revoked_at") is None
        and sum(1 for _, used_at in rows if used_at is None) > 1
    )
    out.add(
        "refresh tokens rotated twice",
        twice + forked,
        required=True,
        detail=f"{twice} answered 200 twice; {forked} live sessions with two unused tokens",
    )
    missing = sum(
        1
        for attempts in ledger.presentations.values()
        for p in attempts
        if p.successor is not None and _hash(p.successor) not in db.hashes
    )
    # A token the client holds and never presented without getting an answer must be live.
    dead_held = 0
    for record in ledger.sessions.values():
        if record.ended is not None or not record.tokens:
            continue
        held = record.tokens[-1]
        if any(p.status is None or p.status >= 500 for p in ledger.presentations.get(held, [])):
            continue  # its fate is the lost-response case, counted with the revocations
        row = db.hashes.get(_hash(held))
        if row is None or row[1] is not None:
            dead_held += 1
    out.add(
        "refresh tokens lost",
        missing + dead_held,
        required=True,
        detail=f"{missing} answered but not stored; {dead_held} held by a client, dead unused",
    )


# --------------------------------------------------------------------------- revoked sessions


def _replay_cause(attempts: list[list[Presentation]]) -> str | None:
    """Why a client presented one of a session's tokens again, if it did: the answer the
    earlier presentation got."""
    for presented in attempts:
        if len(presented) < 2:
            continue
        earlier = presented[:-1]
        if any(p.status is None for p in earlier):
            return "lost response"
        if any(p.status is not None and p.status >= 500 for p in earlier):
            return "5xx answer"
        return "replay of a rotated token"
    return None


def classify_revocations(ledger: Ledger, db: Database, out: Results) -> None:
    revoked = {sid: row for sid, row in db.sessions.items() if row["revoked_at"] is not None}
    causes: Counter[str] = Counter()
    for sid, row in revoked.items():
        reason = row["revoked_reason"]
        record = ledger.sessions.get(sid)
        if record is None:
            causes["a session the client never got (its code exchange went unanswered)"] += 1
            continue
        attempts = [ledger.presentations.get(token, []) for token in record.tokens]
        if reason in SIGNED_OUT and record.logged_out:
            causes["signed out by the client"] += 1
        elif reason == "refresh_token_reuse" and record.raced:
            causes["concurrent refresh of one token (reuse interval 0)"] += 1
        elif reason == "refresh_token_reuse" and (cause := _replay_cause(attempts)):
            causes[f"replay after a {cause}"] += 1
        elif reason == "upstream_revoked":
            causes["upstream link revoked"] += 1
        else:
            causes[f"never replayed ({reason})"] += 1
    out.revocations = causes
    never = sum(n for cause, n in causes.items() if cause.startswith("never replayed"))
    out.add("sessions revoked that were never replayed", never, required=True)
    out.add(
        "sessions revoked after a lost response",
        causes["replay after a lost response"],
        required=False,
        detail="the broker committed a rotation whose answer never arrived; the client's retry "
        "with the same token is a replay (BROKER_REFRESH_REUSE_INTERVAL=0): session revoked, "
        "the client sees invalid_grant and must sign in again",
    )
    out.add(
        "sessions revoked after a 5xx answer",
        causes["replay after a 5xx answer"],
        required=True,
        detail="a refresh answered 5xx must not have rotated: its retry must not be a replay",
    )
    out.add("sessions revoked by the upstream", causes["upstream link revoked"], required=True)
    refused_live = sum(
        1
        for sid, record in ledger.sessions.items()
        if record.ended == "refused" and sid in db.sessions and sid not in revoked
    )
    out.add("live sessions refused", refused_live, required=True)
    out.add(
        "sessions created whose code exchange went unanswered",
        sum(1 for sid in db.sessions if sid not in ledger.sessions),
        required=False,
        detail="the exchange committed, its answer was lost: the client has no tokens and "
        "signs in again; the session stays live, unused, until its refresh token expires",
    )


# --------------------------------------------------------------------------- audit rows


def check_audit_rows(
    ledger: Ledger,
    db: Database,
    upstream_ok: tuple[int, int],
    out: Results,
) -> None:
    out.audit_actions = Counter(action for _, action, _, _ in db.audit)
    by_sid: dict[str, Counter[str]] = defaultdict(Counter)
    for _, action, sid, _ in db.audit:
        if sid is not None:
            by_sid[sid][action] += 1
    issued = sum(1 for sid in db.sessions if by_sid[sid]["token.issued"] != 1)
    rotations = sum(
        abs(by_sid[sid]["refresh_token.rotated"] - (len(db.tokens.get(sid, [])) - 1))
        for sid in db.sessions
    )
    revocations = sum(
        1
        for sid, row in db.sessions.items()
        if by_sid[sid]["session.revoked"] != (0 if row["revoked_at"] is None else 1)
    )
    reuse = sum(1 for row in db.sessions.values() if row["revoked_reason"] == "refresh_token_reuse")
    reuse_rows = out.audit_actions["refresh_token.reuse_detected"]
    mismatched = issued + rotations + revocations + abs(reuse_rows - reuse)
    out.add(
        "audit rows that differ from the state changes",
        mismatched,
        required=True,
        detail=f"sessions without exactly one token.issued: {issued}; rotated rows vs. stored "
        f"rotations off by {rotations}; revoked sessions without exactly one session.revoked: "
        f"{revocations}; reuse_detected {reuse_rows} vs. {reuse} sessions revoked for reuse",
    )
    # Against what the clients saw: the rows may exceed it only by answers that were lost.
    seen = ledger.successful_rotations()
    unanswered = sum(
        1
        for attempts in ledger.presentations.values()
        for p in attempts
        if p.status is None or p.status >= 500
    )
    rotated = out.audit_actions["refresh_token.rotated"]
    outside = rotated - seen if rotated < seen else max(0, rotated - seen - unanswered)
    out.add(
        "rotations audited unlike the clients saw them",
        outside,
        required=True,
        detail=f"{rotated} refresh_token.rotated rows, {seen} rotations answered, "
        f"{unanswered} presentations unanswered or 5xx",
    )
    before, after = upstream_ok
    refreshed = out.audit_actions["upstream_token.refreshed"]
    off = (
        0 if before <= refreshed <= after else min(abs(refreshed - before), abs(refreshed - after))
    )
    out.add(
        "upstream refreshes audited unlike the upstream saw them",
        off,
        required=True,
        detail=f"{refreshed} upstream_token.refreshed rows; the upstream answered {before}-{after} "
        "refreshes with new tokens",
    )


def check_stream(db_events: list[str], stream: list[str], later_db: set[str], out: Results) -> None:
    counts = Counter(stream)
    out.stream_entries = len(stream)
    lost = sum(1 for event_id in db_events if event_id not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    unknown = sum(1 for event_id in counts if event_id not in later_db)
    out.add("audit rows missing from the stream", lost, required=True)
    out.add("audit rows in the stream more than once", duplicated, required=True)
    out.add("stream entries with no audit row", unknown, required=True)


# --------------------------------------------------------------------------- the upstream


def check_upstream(log: list[dict[str, Any]], out: Results) -> None:
    by_token: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(log, key=lambda entry: entry["at"]):
        by_token[str(entry["refresh_token"])].append(entry)
    after_rotation = 0
    for entries in by_token.values():
        if len(entries) < 2:
            continue
        if any(entry["outcome"] == "ok" for entry in entries[:-1]):
            after_rotation += 1
        else:
            for entry in entries[:-1]:
                out.upstream_repeats[entry["fault"] or entry["outcome"]] += 1
    out.upstream_presentations = len(log)
    out.add(
        "upstream refresh tokens presented twice",
        after_rotation,
        required=True,
        detail="presented again after the upstream had rotated them; presentations repeated "
        "after an answer that rotated nothing (503, a held request) are listed apart",
    )


# --------------------------------------------------------------------------- requests


def in_windows(exchange: Exchange, windows: list[tuple[float, float]]) -> bool:
    return any(exchange.started < end and exchange.ended > start for start, end in windows)


def check_requests(
    ledger: Ledger, windows: list[tuple[float, float]], records: list[FaultRecord], out: Results
) -> None:
    outside = [e for e in ledger.exchanges if not in_windows(e, windows)]
    out.add(
        "5xx outside fault windows",
        sum(1 for e in outside if e.status is not None and e.status >= 500),
        required=True,
    )
    out.add(
        "requests unanswered outside fault windows",
        sum(1 for e in outside if e.status is None),
        required=False,
    )
    out.add(
        "wrong answers outside fault windows",
        sum(1 for e in outside if e.unexpected),
        required=True,
        detail="a live session's token refused, another user's userinfo, an admin refused",
    )
    out.add(
        "faults not recovered",
        sum(1 for record in records if record.recovered is None),
        required=True,
    )


# --------------------------------------------------------------------------- all of it


async def run_checks(
    ledger: Ledger,
    *,
    database_url: str,
    redis_url: str,
    upstream_url: str,
    reuse_interval: int,
    windows: list[tuple[float, float]],
    records: list[FaultRecord],
    http: httpx2.AsyncClient,
) -> Results:
    out = Results()

    async def upstream_log() -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = (
            await http.get(f"{upstream_url}/_control/refresh_log", timeout=30)
        ).json()["refreshes"]
        return log

    marker = await asyncio.to_thread(newest_audit_row, database_url)
    deadline = time.monotonic() + RELAY_WAIT
    while not await asyncio.to_thread(relay_covers, database_url, marker):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    log_before = await upstream_log()
    db = await asyncio.to_thread(read_database, database_url)
    log_after = await upstream_log()
    stream = await asyncio.to_thread(read_stream, redis_url)
    later = await asyncio.to_thread(read_database, database_url)
    # Every row up to the marker must be in the stream by now; later ones may not be yet.
    published = [
        event_id
        for event_id, _, _, position in db.audit
        if marker is not None and position <= marker
    ]
    out.links = db.links
    check_refresh_tokens(ledger, db, reuse_interval, out)
    classify_revocations(ledger, db, out)
    ok = (
        sum(1 for entry in log_before if entry["outcome"] == "ok"),
        sum(1 for entry in log_after if entry["outcome"] == "ok"),
    )
    check_audit_rows(ledger, db, ok, out)
    check_stream(published, stream, {event_id for event_id, _, _, _ in later.audit}, out)
    out.upstream_log = log_after
    check_upstream(log_after, out)
    check_requests(ledger, windows, records, out)
    return out
