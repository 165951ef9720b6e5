"""``make bench``, admin part: the admin API's latencies at 100,000 users and 1,000,000 audit rows.

Steps: a throw-away PostgreSQL database, migrated; seeded with set-based SQL (``INSERT ...
SELECT ... FROM generate_series``, one statement per table, the audit rows in chunks of 250,000)
with 100,000 ``users``, ~130,000 ``oauth2_profiles`` (``google``, ``github``, ``corp``) each with
its ``oauth2_tokens`` row, 150,000 ``auth_sessions`` with 1-3 ``refresh_tokens`` each, and
1,000,000 ``audit_actions`` over 60 days in the mix the broker writes (three quarters
``refresh_token.rotated``); then ``VACUUM (ANALYZE)``, as autovacuum would soon after. The daily
rollup is the worker's job body (``shared.jobs.audit_rollup.roll_up_audit_events``) run in this
process until it has counted every row. Then the broker (one uvicorn worker, no periodic jobs)
starts with seeded user 1 as its admin (``admins: [user:<id>]``), a refresh grant gives that
admin an access token, and each admin request is timed over one keep-alive HTTP connection: a
warm-up, then N sequential repetitions (p50, p95, max, rows returned). Requests whose p95 is
above 100 ms are replayed once in this process against an in-process broker on the same
database, which records the SQL they ran; the slow statements are shown with the first lines of
``EXPLAIN (ANALYZE, BUFFERS)``.

Random-looking values come from hashes of the row numbers (``hashint8extended``), so a row of one
table can name its related rows in another without a join and a run seeds the same data every
time (apart from random ids and token bytes). It prints numbers and exits 0 whatever they are; the
database and the broker are removed on the way out, also on Ctrl-C or an error.

Usage: ``python -m bench.admin [--quick] [--repetitions N] [--users N] [--sessions N]
[--audit-rows N]``; ``python -m bench.run`` runs it last (``--skip-admin``, ``--admin-only``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import math
import os
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import yaml
from shared.crypto.keyring import Keyring
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.migrate import upgrade_to_head
from shared.jobs.audit_rollup import AuditRollupPayload, roll_up_audit_events, roll_up_backlog
from shared.jobs.upstream_refresh import WORKER_ACTOR
from shared.models.audit_action import ROTATED

from bench.database import DEFAULT_SERVER_URL, SERVER_URL_ENV, bench_database, libpq_url
from bench.processes import (
    VENV_BIN,
    BenchError,
    Server,
    free_port,
    report_server_log,
    run_guarded,
    server,
    server_env,
)

PROVIDERS: tuple[tuple[str, float], ...] = (("google", 0.5), ("github", 0.3), ("corp", 0.2))
NEXT_PROVIDER = {"google": "github", "github": "corp", "corp": "google"}
CLIENTS: tuple[tuple[str, float], ...] = (("web", 0.6), ("cli", 0.15), ("mobile", 0.25))
SECOND_LINK_SHARE = 0.3  # users with a second provider linked: ~130,000 profiles
DISABLED_SHARE = 0.02
FAILING_SYNC_SHARE = 0.02  # links whose last profile sync attempt failed
LOGGED_OUT_SHARE = 0.08  # sessions revoked by a logout (those of disabled users are too)
ADMIN_USER = 1  # seeded user 1 is the broker's admin
# The admin's session is of the console client, the one configured for the admin scope.
ADMIN_CLIENT = "console"
ADMIN_SCOPE = "openid email profile admin"
SCOPE = "openid email profile"
REFRESH_TTL = dt.timedelta(days=30)
# What the broker writes, by share of all audit rows.
AUDIT_MIX: tuple[tuple[str, float], ...] = (
    (ROTATED, 0.75),
    ("token.issued", 0.08),
    ("user.signed_in", 0.08),
    ("user.created", 0.02),
    ("session.revoked", 0.025),
    ("profile.synced", 0.02),
    ("upstream_token.refresh_failing", 0.015),
    ("upstream_token.revoked", 0.005),
    ("link.created", 0.004),
    ("user.disabled", 0.001),
)
SEEDED_TABLES = (
    "users",
    "oauth2_profiles",
    "oauth2_tokens",
    "auth_sessions",
    "refresh_tokens",
    "audit_actions",
)
SESSION_PLAN = "bench_seed_sessions"
AUDIT_WRITERS = 2  # connections inserting audit chunks at once
TARGET_MS = 200.0  # the issue: every admin request answers within 200 ms
EXPLAIN_OVER_MS = 100.0  # requests whose p95 is above this get their SQL explained
SLOW_STATEMENT_MS = 20.0
PLAN_LINES = 12
ROLLUP_TIME_LIMIT = 45.0  # seconds of the job; the rest by SQL (--rollup-seconds)


# --------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class SeedScale:
    users: int = 100_000
    sessions: int = 150_000
    audit_rows: int = 1_000_000
    audit_days: int = 60
    audit_chunk: int = 125_000


def seeded_uuid(kind: str, key: object) -> uuid.UUID:
    """The id the seed gives row ``key`` of ``kind``: ``md5('<kind>:<key>')::uuid``."""
    return uuid.UUID(hashlib.md5(f"{kind}:{key}".encode(), usedforsecurity=False).hexdigest())


def seeded_user_id(n: int) -> uuid.UUID:
    return seeded_uuid("user", n)


def _uuid(kind: str, key: str) -> str:
    return f"md5('{kind}:' || {key})::uuid"


def _draw(key: str, seed: int) -> str:
    """SQL: a uniform draw in [0, 1) from an integer expression, the same for the same key."""
    return f"((hashint8extended(({key})::bigint, {seed}) & 1048575)::float8 / 1048576)"


def _draw_text(key: str, seed: int) -> str:
    return f"((hashtextextended(({key})::text, {seed}) & 1048575)::float8 / 1048576)"


def _pick(draw: str, choices: Sequence[tuple[str, float]]) -> str:
    """SQL: ``choices[i][0]`` with probability ``choices[i][1]`` (``draw`` in [0, 1))."""
    cases, total = [], 0.0
    for value, share in choices[:-1]:
        total += share
        cases.append(f"WHEN {draw} < {total:.6f} THEN '{value}'")
    return f"(CASE {' '.join(cases)} ELSE '{choices[-1][0]}' END)"


def _random_bytes(blocks: int) -> str:
    """SQL: ``16 * blocks`` bytes, random per row (ciphertexts the admin API never decrypts)."""
    return f"decode(repeat(md5(random()::text), {blocks}), 'hex')"


class SeedSql:
    """The seed's statements for one scale and one ``now``."""

    def __init__(self, scale: SeedScale, now: dt.datetime) -> None:
        self.scale = scale
        self.now = f"TIMESTAMPTZ '{now.astimezone(dt.UTC).isoformat()}'"
        self.admin_id = seeded_user_id(ADMIN_USER)

    # Per-user facts, computed from the user's number wherever a table needs them.

    def user_created(self, n: str) -> str:
        return f"({self.now} - interval '400 days' * {_draw(n, 20)})"

    def disabled(self, n: str) -> str:
        return f"(({n}) <> {ADMIN_USER} AND {_draw(n, 23)} < {DISABLED_SHARE})"

    @staticmethod
    def primary_provider(n: str) -> str:
        return _pick(_draw(n, 21), PROVIDERS)

    @staticmethod
    def second_provider(n: str) -> str:
        cases = " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in NEXT_PROVIDER.items())
        return f"(CASE {SeedSql.primary_provider(n)} {cases} END)"

    @staticmethod
    def subject(provider: str, n: str) -> str:
        return (
            f"(CASE {provider} WHEN 'google' THEN (100000000000 + {n})::text "
            f"WHEN 'github' THEN (5000000 + {n})::text "
            f"ELSE 'emp' || lpad(({n})::text, 6, '0') END)"
        )

    @staticmethod
    def profile_id(provider: str, n: str) -> str:
        return _uuid("profile", f"{provider} || ':' || ({n})")

    def session_user(self, s: str) -> str:
        # 7919 is prime: sessions 1..users go to distinct users, the rest to some of them again.
        return f"(1 + mod(({s})::bigint * 7919, {self.scale.users}))"

    @staticmethod
    def email(n: str) -> str:
        return f"('user' || ({n}) || '@example' || mod({n}, 50) || '.com')"

    # Statements.

    def users(self) -> str:
        return f"""
INSERT INTO users (id, display_name, email, email_verified, picture, preferred_username, status,
                   created_at, updated_at, last_login_at)
SELECT {_uuid("user", "u.n")}, 'User ' || u.n, {self.email("u.n")}, true, NULL, 'user' || u.n,
       CASE WHEN {self.disabled("u.n")} THEN 'disabled' ELSE 'active' END,
       u.created, greatest(u.created, u.login), greatest(u.created, u.login)
FROM (SELECT n, {self.user_created("n")} AS created,
             {self.now} - interval '60 days' * {_draw("n", 24)} AS login
      FROM generate_series(1, {self.scale.users}) AS n OFFSET 0) AS u
"""

    def profiles(self) -> str:
        return f"""
INSERT INTO oauth2_profiles (id, user_id, provider, provider_type, subject, issuer, email,
                             email_verified, name, given_name, family_name, preferred_username,
                             avatar_url, profile_data, created_at, updated_at, last_login_at,
                             last_synced_at, sync_attempted_at)
SELECT {self.profile_id("p.provider", "p.n")}, {_uuid("user", "p.n")}, p.provider,
       CASE p.provider WHEN 'corp' THEN 'oidc' ELSE p.provider END,
       {self.subject("p.provider", "p.n")},
       CASE p.provider WHEN 'google' THEN 'https://accounts.google.com'
                       WHEN 'corp' THEN 'https://sso.corp.example' END,
       {self.email("p.n")}, p.provider <> 'github' OR {_draw("p.n", 26)} < 0.8,
       'User ' || p.n, 'User', p.n::text, 'user' || p.n, NULL, '{{}}'::jsonb,
       p.created, p.created,
       greatest(p.created, {self.now} - interval '60 days' * {_draw("p.n", 24)}),
       p.synced,
       CASE WHEN {_draw_text("p.provider || p.n", 29)} < {FAILING_SYNC_SHARE}
            THEN p.synced + ({self.now} - p.synced) * {_draw_text("p.provider || p.n", 30)}
            ELSE p.synced END
FROM (SELECT n, provider, created,
             greatest(created, {self.now} - interval '1 day' * {_draw("n", 28)}) AS synced
      FROM (SELECT n, {self.primary_provider("n")} AS provider, {self.user_created("n")} AS created
            FROM generate_series(1, {self.scale.users}) AS n
            UNION ALL
            SELECT n, {self.second_provider("n")},
                   {self.user_created("n")}
                   + ({self.now} - {self.user_created("n")}) * {_draw("n", 25)}
            FROM generate_series(1, {self.scale.users}) AS n
            WHERE {_draw("n", 22)} < {SECOND_LINK_SHARE}) AS links
      OFFSET 0) AS p
"""

    def tokens(self) -> str:
        state = _pick(
            "p.h_state",
            (("ok", 0.90), ("refresh_failing", 0.04), ("needs_reauth", 0.03), ("revoked", 0.03)),
        )
        return f"""
INSERT INTO oauth2_tokens (id, profile_id, user_id, provider, access_token_enc, refresh_token_enc,
                           id_token_enc, token_type, scope, expires_at, refresh_expires_at, state,
                           failure_count, last_error, last_refreshed_at, next_attempt_at,
                           created_at, updated_at)
SELECT {_uuid("token", "t.profile_id::text")}, t.profile_id, t.user_id, t.provider,
       {_random_bytes(6)},
       CASE WHEN t.has_refresh THEN {_random_bytes(4)} END,
       CASE WHEN t.provider <> 'github' THEN {_random_bytes(50)} END,
       'Bearer',
       CASE t.provider WHEN 'github' THEN 'read:user user:email read:org'
                       ELSE 'openid email profile offline_access' END,
       CASE WHEN t.has_refresh OR t.provider <> 'github'
            THEN t.refreshed + interval '1 hour' END,
       CASE WHEN t.has_refresh
            THEN {self.now} + interval '1 day' * (190 * t.h_refresh - 10) END,
       t.state,
       CASE t.state WHEN 'refresh_failing' THEN 1 + floor(5 * t.h_count)::int
                    WHEN 'needs_reauth' THEN 1 ELSE 0 END,
       CASE t.state WHEN 'refresh_failing' THEN 'upstream answered 503'
                    WHEN 'needs_reauth' THEN 'invalid_grant' END,
       t.refreshed,
       CASE WHEN t.state = 'refresh_failing'
            THEN {self.now} + interval '30 minutes' * t.h_count END,
       t.created_at, t.refreshed
FROM (SELECT p.*, {state} AS state
      FROM (SELECT id AS profile_id, user_id, provider, created_at,
                   {_draw_text("id", 31)} AS h_state, {_draw_text("id", 32)} AS h_count,
                   {_draw_text("id", 33)} AS h_refresh,
                   provider <> 'github' OR {_draw_text("id", 34)} < 0.5 AS has_refresh,
                   greatest(created_at, {self.now} - interval '2 days' * {_draw_text("id", 35)})
                     AS refreshed
            FROM oauth2_profiles OFFSET 0) AS p
      OFFSET 0) AS t
"""

    def session_plan(self) -> str:
        """Every session's facts, once, in :data:`SESSION_PLAN` (an unlogged table dropped after
        the seed): the sessions, their refresh tokens and the audit rows naming them read it."""
        return f"""
CREATE UNLOGGED TABLE {SESSION_PLAN} AS
SELECT x.s, x.u, {_uuid("session", "x.s")} AS id, {_uuid("user", "x.u")} AS user_id,
       x.client_id, x.provider, {self.profile_id("x.provider", "x.u")} AS profile_id,
       x.provider || ':' || {self.subject("x.provider", "x.u")} AS identity,
       greatest({self.user_created("x.u")},
                {self.now} - interval '45 days' * {_draw("x.s", 12)}) AS created,
       {self.disabled("x.u")} AS disabled,
       {_draw("x.s", 13)} < {LOGGED_OUT_SHARE} AS logged_out,
       {_draw("x.s", 15)} AS h_revoke,
       {_draw("x.s", 14)} AS h_step,
       1 + floor(3 * {_draw("x.s", 16)})::int AS tokens
FROM (SELECT s, u, {_pick(_draw("s", 11), CLIENTS)} AS client_id,
             {self.primary_provider("u")} AS provider
      FROM (SELECT s, {self.session_user("s")} AS u
            FROM generate_series(1, {self.scale.sessions}) AS s) AS numbered
      OFFSET 0) AS x
"""

    def sessions(self) -> str:
        user_agent = (
            "CASE client_id WHEN 'web' THEN 'Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0' "
            "WHEN 'cli' THEN 'corp-cli/2.4.1' ELSE 'CorpApp/5.2 (iOS 18.1)' END"
        )
        return f"""
INSERT INTO auth_sessions (id, user_id, client_id, provider, profile_id, scope, auth_time,
                           created_at, revoked_at, revoked_reason, user_agent, ip)
SELECT id, user_id, client_id, provider, profile_id, '{SCOPE}', created, created,
       CASE WHEN disabled OR logged_out THEN created + ({self.now} - created) * h_revoke END,
       CASE WHEN disabled THEN 'user_disabled' WHEN logged_out THEN 'logout' END,
       {user_agent}, '192.0.2.' || (1 + mod(s, 254))
FROM {SESSION_PLAN}
"""

    def refresh_tokens(self) -> str:
        """Token j of k is created ``(j - 1) * step`` after its session; all but the last are
        used (rotated), the last is the session's current token."""
        return f"""
INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at, used_at)
SELECT t.id, sha256(uuid_send(gen_random_uuid())), t.created + (j - 1) * t.step,
       t.created + (j - 1) * t.step + interval '{REFRESH_TTL.days} days',
       CASE WHEN j < t.tokens THEN t.created + j * t.step END
FROM (SELECT id, created, tokens, ({self.now} - created) * h_step / tokens AS step
      FROM {SESSION_PLAN}) AS t
CROSS JOIN LATERAL generate_series(1, t.tokens) AS j
"""

    def audit(self, first: int, last: int) -> str:
        """Audit rows ``first..last`` (their ids), ``occurred_at`` rising with the id; each names
        a seeded session (``sid``), its user (subject) and client, or the user's first link."""
        scale = self.scale
        step_us = scale.audit_days * 86_400_000_000 // max(1, scale.audit_rows)
        start = f"({self.now} - interval '{scale.audit_days} days')"
        by_client = (ROTATED, "token.issued", "session.revoked")
        by_identity = ("user.signed_in", "user.created", "link.created")

        def among(actions: Sequence[str]) -> str:
            return "e.action IN (" + ", ".join(f"'{action}'" for action in actions) + ")"

        return f"""
INSERT INTO audit_actions (id, event_id, action, actor, subject, client_id, ip, data, occurred_at)
SELECT e.i, gen_random_uuid(), e.action,
       CASE WHEN e.action IN ('{ROTATED}', 'token.issued') THEN 'client:' || e.client_id
            WHEN {among(by_identity)} THEN e.identity
            WHEN e.action = 'session.revoked' THEN 'user:' || e.user_id
            WHEN e.action = 'user.disabled' OR (e.action = 'upstream_token.revoked' AND e.h < 0.3)
                 THEN 'user:{self.admin_id}'
            ELSE '{WORKER_ACTOR}' END,
       e.user_id::text,
       CASE WHEN {among(by_client + by_identity)} THEN e.client_id END,
       CASE WHEN {among(by_client + by_identity)} THEN '203.0.113.' || (1 + mod(e.i, 254)) END,
       CASE e.action
            WHEN '{ROTATED}' THEN jsonb_build_object('sid', e.id)
            WHEN 'token.issued'
                 THEN jsonb_build_object('sid', e.id, 'grant_type', 'authorization_code')
            WHEN 'session.revoked' THEN jsonb_build_object('sid', e.id, 'reason', 'logout')
            WHEN 'user.signed_in' THEN jsonb_build_object('provider', e.provider)
            WHEN 'user.created' THEN jsonb_build_object('provider', e.provider)
            WHEN 'link.created'
                 THEN jsonb_build_object('provider', e.provider, 'profile_id', e.profile_id)
            WHEN 'upstream_token.refresh_failing'
                 THEN jsonb_build_object('provider', e.provider, 'link', e.profile_id,
                                         'error', 'upstream answered 503')
            WHEN 'upstream_token.revoked'
                 THEN jsonb_build_object('provider', e.provider, 'link', e.profile_id,
                                         'reason', 'revoked_by_admin', 'sessions_revoked', 1)
            WHEN 'profile.synced'
                 THEN jsonb_build_object('provider', e.provider, 'link', e.profile_id,
                                         'changed', jsonb_build_array('name'),
                                         'email_verification_lost', false)
            ELSE '{{}}'::jsonb END,
       {start} + interval '{step_us} microseconds' * (e.i - 1 + 0.99 * e.h_time)
FROM (SELECT x.i, x.h, x.h_time, {_pick("x.r", AUDIT_MIX)} AS action, p.id, p.user_id,
             p.client_id, p.provider, p.profile_id, p.identity
      FROM (SELECT i, {_draw("i", 1)} AS r, {_draw("i", 4)} AS h, {_draw("i", 3)} AS h_time,
                   1 + floor({scale.sessions} * {_draw("i", 2)})::int AS s
            FROM generate_series({first}, {last}) AS i) AS x
      JOIN {SESSION_PLAN} AS p ON p.s = x.s
      OFFSET 0) AS e
"""

    def audit_chunks(self) -> list[tuple[int, int]]:
        total, chunk = self.scale.audit_rows, max(1, self.scale.audit_chunk)
        return [(first, min(total, first + chunk - 1)) for first in range(1, total + 1, chunk)]


@dataclass(frozen=True)
class SeedReport:
    admin_id: uuid.UUID
    seconds: dict[str, float]
    counts: dict[str, int]

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def seed_admin_data(
    database_url: str,
    scale: SeedScale | None = None,
    *,
    now: dt.datetime | None = None,
    vacuum: bool = True,
) -> SeedReport:
    """Seed the tables the admin API reads (into a freshly migrated database); time each step.

    Foreign-key triggers are skipped where the role may (``session_replication_role``): every
    reference is made consistent by construction, and a row-by-row check would double the time.
    """
    scale = scale or SeedScale()
    plan = SeedSql(scale, now or dt.datetime.now(dt.UTC))
    url = libpq_url(database_url)
    seconds: dict[str, float] = {}
    steps: list[tuple[str, list[str]]] = [
        ("users", [plan.users()]),
        ("oauth2_profiles", [plan.profiles()]),
        ("oauth2_tokens", [plan.tokens()]),
        ("auth_sessions", [plan.session_plan(), f"ANALYZE {SESSION_PLAN}", plan.sessions()]),
        ("refresh_tokens", [plan.refresh_tokens()]),
    ]
    with _seed_connection(url) as connection:
        with _secondary_indexes_dropped(connection, url, seconds):
            try:
                for name, statements in steps:
                    started = time.perf_counter()
                    for statement in statements:
                        with connection.transaction():
                            connection.execute(statement)
                    seconds[name] = time.perf_counter() - started
                started = time.perf_counter()
                chunks = [plan.audit(first, last) for first, last in plan.audit_chunks()]
                with ThreadPoolExecutor(max_workers=AUDIT_WRITERS) as pool:
                    list(pool.map(lambda statement: _run_alone(url, statement), chunks))
                seconds["audit_actions"] = time.perf_counter() - started
            finally:
                connection.execute(f"DROP TABLE IF EXISTS {SESSION_PLAN}")
        # Explicit ids: move the sequence past them for the rows the broker writes later.
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('audit_actions', 'id'), "
            "(SELECT coalesce(max(id), 0) + 1 FROM audit_actions), false)"
        )
        started = time.perf_counter()
        tables = ", ".join(SEEDED_TABLES)
        connection.execute(f"VACUUM (ANALYZE) {tables}" if vacuum else f"ANALYZE {tables}")
        seconds["vacuum (analyze)" if vacuum else "analyze"] = time.perf_counter() - started
        counts = {
            name: int(_scalar(connection, f"SELECT count(*) FROM {name}")) for name in SEEDED_TABLES
        }
    return SeedReport(admin_id=plan.admin_id, seconds=seconds, counts=counts)


def _seed_connection(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection for seeding: no synchronous commit, no FK triggers if allowed."""
    connection = psycopg.connect(url, autocommit=True)
    connection.execute("SET synchronous_commit = off")
    # Not a superuser: the foreign keys are checked, which is only slower.
    with contextlib.suppress(psycopg.Error):
        connection.execute("SET session_replication_role = replica")
    return connection


@contextlib.contextmanager
def _secondary_indexes_dropped(
    connection: psycopg.Connection[Any], url: str, seconds: dict[str, float]
) -> Iterator[None]:
    """Load without the seeded tables' secondary indexes, then build them again from their own
    definitions (``pg_get_indexdef``): one sort per index instead of a million random inserts.
    Indexes behind a constraint (primary keys, unique) stay and check the rows as they come."""
    rows = connection.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index AS i "
        "JOIN pg_class AS t ON t.oid = i.indrelid "
        "WHERE t.relname = ANY(%s) AND t.relnamespace = current_schema()::regnamespace "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)",
        (list(SEEDED_TABLES),),
    ).fetchall()
    for name, _definition in rows:
        connection.execute(f"DROP INDEX {name}")
    try:
        yield
    finally:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=AUDIT_WRITERS) as pool:
            list(pool.map(lambda row: _run_alone(url, row[1]), rows))
        seconds[f"{len(rows)} secondary indexes"] = time.perf_counter() - started


def _run_alone(url: str, statement: str) -> None:
    with _seed_connection(url) as connection, connection.transaction():
        connection.execute(statement)


def _scalar(connection: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = connection.execute(query, params).fetchone()
    return row[0] if row else None


def seed_admin_session(
    database_url: str, admin_id: uuid.UUID, *, now: dt.datetime | None = None
) -> str:
    """A live session of the admin (client ``console``, provider ``dev``); its refresh token."""
    now = now or dt.datetime.now(dt.UTC)
    token: str = new_opaque_token()
    session_id = uuid.uuid4()
    with psycopg.connect(libpq_url(database_url)) as connection:
        connection.execute(
            "INSERT INTO auth_sessions (id, user_id, client_id, provider, profile_id, scope, "
            "auth_time, created_at) VALUES (%s, %s, %s, 'dev', NULL, %s, %s, %s)",
            (session_id, admin_id, ADMIN_CLIENT, ADMIN_SCOPE, now, now),
        )
        connection.execute(
            "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at) "
            "VALUES (%s, %s, %s, %s)",
            (session_id, token_hash(token), now, now + REFRESH_TTL),
        )
    return token


def print_seed_report(report: SeedReport) -> None:
    for name, seconds in report.seconds.items():
        print(f"  {name:<34}{seconds:8.1f} s")
    print(f"  {'total':<34}{report.total_seconds:8.1f} s")
    print("  rows: " + ", ".join(f"{name} {count:,}" for name, count in report.counts.items()))


# --------------------------------------------------------------------------- rollup


@dataclass(frozen=True)
class RollupRun:
    job_rows: int  # counted by the worker's job
    job_seconds: float
    job_runs: int
    sql_rows: int  # counted by the set-based stand-in (the job failed or out of time)
    sql_seconds: float
    counts_total: int  # sum(count) in audit_daily_counts afterwards

    @property
    def rate(self) -> float:
        return self.job_rows / self.job_seconds if self.job_seconds else math.nan


async def _run_rollup_job(database_url: str, expected: int, time_limit: float) -> tuple[int, int]:
    """The job body, run back to back as the worker would with a backlog, until it has
    counted ``expected`` rows or ``time_limit`` seconds have passed; rows counted, runs."""
    counted = runs = 0
    deadline = time.monotonic() + time_limit
    async with _job_deps(database_url) as deps:
        while counted < expected and (remaining := deadline - time.monotonic()) > 0:
            # The worker's payload (its timer enqueues the defaults), cut to the time left.
            payload = AuditRollupPayload(
                max_seconds=min(AuditRollupPayload().max_seconds, max(0.1, remaining))
            )
            result = await roll_up_audit_events(payload, deps)
            runs += 1
            count = int(result.get("counted") or 0)
            if not count:
                # Nothing visible yet: a transaction older than the rows (anywhere on the
                # server) holds pg_snapshot_xmin back, or another rollup holds the cursor.
                await asyncio.sleep(0.1)
            counted += count
    return counted, runs


async def _run_stats_snapshot(database_url: str) -> float:
    """The worker's stats snapshot job once (it runs with the rollup); its seconds."""
    from shared.jobs.stats_snapshot import StatsSnapshotPayload, snapshot_stats

    async with _job_deps(database_url) as deps:
        started = time.perf_counter()
        await snapshot_stats(StatsSnapshotPayload(), deps)
        return time.perf_counter() - started


@contextlib.asynccontextmanager
async def _job_deps(database_url: str) -> AsyncIterator[Any]:
    """What a worker gives its job bodies, for the bench database (closed afterwards)."""
    from shared.process_resources import ProcessResources
    from shared.settings import make_settings

    settings = make_settings(database_url=database_url, periodic_jobs=False)
    async with ProcessResources.opened(settings, pool_size=2) as resources:
        yield resources.job_deps()


async def _run_backlog(database_url: str) -> int:
    """The rows the job has not counted, by its set-based stand-in
    (``shared.jobs.audit_rollup.roll_up_backlog``), from the job's cursor on."""
    async with _job_deps(database_url) as deps:
        rows: int | None = await roll_up_backlog(deps)
    if rows is None:
        raise BenchError("another rollup holds the audit rollup's cursor")
    return rows


def roll_up(
    database_url: str, expected: int, *, time_limit: float = ROLLUP_TIME_LIMIT
) -> RollupRun:
    """The worker's rollup job in this process for up to ``time_limit`` seconds; what it has not
    counted by then (the job out of time, or failed) is counted by its set-based stand-in."""
    job_rows = job_runs = 0
    job_seconds = 0.0
    started = time.perf_counter()
    try:
        job_rows, job_runs = asyncio.run(_run_rollup_job(database_url, expected, time_limit))
        job_seconds = time.perf_counter() - started
    except Exception as exc:
        # What it committed stands (each batch moved the cursor with it): the rest from there.
        print(f"  ERROR: the rollup job failed: {exc!r}; counting with SQL instead")
    sql_rows, sql_seconds = 0, 0.0
    if job_rows < expected:
        started = time.perf_counter()
        sql_rows = asyncio.run(_run_backlog(database_url))
        sql_seconds = time.perf_counter() - started
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        total = int(_scalar(connection, "SELECT coalesce(sum(count), 0) FROM audit_daily_counts"))
        connection.execute("VACUUM (ANALYZE) users, audit_daily_counts, audit_relay_cursors")
    return RollupRun(job_rows, job_seconds, job_runs, sql_rows, sql_seconds, total)


def print_rollup(run: RollupRun, time_limit: float) -> None:
    if run.job_runs:
        print(
            f"audit rollup, the worker's job (shared.jobs.audit_rollup, default payload): "
            f"{run.job_rows:,} rows in {run.job_seconds:.1f} s = {run.rate:,.0f} rows/s "
            f"({run.job_runs} job runs)"
        )
    if run.sql_rows:
        why = (
            f"the job's time budget of {time_limit:.0f} s ran out (--rollup-seconds)"
            if run.job_runs
            else "the job could not run"
        )
        print(
            f"  {run.sql_rows:,} rows counted by the equivalent INSERT ... SELECT ... GROUP BY "
            f"in {run.sql_seconds:.1f} s instead: {why}"
        )
    print(f"  audit_daily_counts sums to {run.counts_total:,}")


# --------------------------------------------------------------------------- the broker


def start_admin_broker(
    stack: contextlib.ExitStack, workdir: Path, database_url: str, admin_id: uuid.UUID
) -> tuple[Server, str, dict[str, str]]:
    """The broker (one uvicorn worker) with ``admin_id`` as admin and no periodic jobs (they
    would roll up, purge and refresh under the measurement); it, its issuer, its BROKER_* env."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config_path = workdir / "broker-admin.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "providers": [{"id": "dev", "type": "dev"}],
                "clients": [
                    *(
                        {"id": client, "redirect_uris": [f"http://127.0.0.1:3000/{client}/cb"]}
                        for client, _share in CLIENTS
                    ),
                    {
                        "id": ADMIN_CLIENT,
                        "redirect_uris": [f"http://127.0.0.1:3000/{ADMIN_CLIENT}/cb"],
                        "scopes": ADMIN_SCOPE.split(),
                    },
                ],
                "admins": [f"user:{admin_id}"],
            }
        ),
        encoding="utf-8",
    )
    broker_env = {
        "BROKER_ENCRYPTION_KEYS": Keyring.generate().serialize(),
        "BROKER_DATABASE_URL": database_url,
        "BROKER_ISSUER": issuer,
        "BROKER_CONFIG": str(config_path),
        "BROKER_LOG_LEVEL": "WARNING",
        "BROKER_VAR_DIR": str(workdir / "var"),
        "BROKER_PERIODIC_JOBS": "0",
    }
    command = [str(VENV_BIN / "broker"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    broker = stack.enter_context(
        server(
            "broker",
            command,
            env=server_env(broker_env),
            ready_url=f"{issuer}/readyz",
            log_path=workdir / "broker-admin.log",
        )
    )
    return broker, issuer, broker_env


def admin_access_token(issuer: str, refresh_token: str) -> str:
    """One refresh grant at ``/token``: a live access token of the admin."""
    response = httpx2.post(
        f"{issuer}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": ADMIN_CLIENT,
        },
        timeout=30,
    )
    if response.status_code != 200:
        raise BenchError(
            f"the admin's refresh grant answered {response.status_code}: {response.text}"
        )
    token: str = response.json()["access_token"]
    return token


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Probe:
    label: str
    path: str
    repetitions: int


@dataclass
class ProbeResult:
    probe: Probe
    times_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    size: int = 0
    error: str = ""

    def _ranked(self, share: float) -> float:
        """Nearest-rank percentile."""
        if not self.times_ms:
            return math.nan
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self._ranked(0.5)

    @property
    def p95(self) -> float:
        return self._ranked(0.95)

    @property
    def max(self) -> float:
        return max(self.times_ms) if self.times_ms else math.nan


def count_rows(response: httpx2.Response) -> int | None:
    """Rows in a listing's answer: lines of an export, else the length of the body's first list
    (the page), else the items of every list in it (the statistics)."""
    content_type = response.headers.get("content-type", "")
    if "csv" in content_type:
        return max(0, len(response.text.splitlines()) - 1)
    if "ndjson" in content_type or "jsonl" in content_type or "json-seq" in content_type:
        return sum(1 for line in response.text.splitlines() if line.strip())
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        for key in ("users", "tokens", "events", "actions", "items", "data"):
            if isinstance(body.get(key), list):
                return len(body[key])
        lists = [value for value in body.values() if isinstance(value, list)]
        if lists:
            return len(lists[0])
        return _items(body)
    return None


def _items(value: Any) -> int:
    if isinstance(value, list):
        return len(value) + sum(_items(item) for item in value if isinstance(item, dict))
    if isinstance(value, dict):
        return sum(_items(item) for item in value.values())
    return 0


def _fail(result: ProbeResult, response: httpx2.Response) -> ProbeResult:
    result.error = f"HTTP {response.status_code}"
    print(
        f"  ERROR {result.probe.label}: HTTP {response.status_code}: "
        f"{response.text[:300].strip()!r}"
    )
    return result


def time_probe(client: httpx2.Client, probe: Probe) -> ProbeResult:
    """A warm-up, then ``probe.repetitions`` sequential requests, each to its last byte."""
    result = ProbeResult(probe)
    try:
        warm = client.get(probe.path)
    except httpx2.HTTPError as exc:
        result.error = type(exc).__name__
        print(f"  ERROR {probe.label}: {exc!r}")
        return result
    if warm.status_code != 200:
        return _fail(result, warm)
    result.rows, result.size = count_rows(warm), len(warm.content)
    for _ in range(probe.repetitions):
        started = time.perf_counter()
        response = client.get(probe.path)
        _ = response.content
        result.times_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            return _fail(result, response)
    return result


def next_cursor(client: httpx2.Client, path: str, pages: int) -> tuple[str | None, str]:
    """The ``next_cursor`` after following ``pages`` pages from ``path``; else None, why."""
    cursor: str | None = None
    for page in range(pages):
        url = path if cursor is None else _with(path, cursor=cursor)
        response = client.get(url)
        if response.status_code != 200:
            return None, f"page {page + 1}: HTTP {response.status_code}: {response.text[:200]}"
        cursor = response.json().get("next_cursor")
        if not cursor:
            return None, f"page {page + 1} has no next_cursor"
    return cursor, ""


def _with(path: str, **params: str) -> str:
    base, _, query = path.partition("?")
    pairs = urllib.parse.parse_qsl(query) + list(params.items())
    return f"{base}?{urllib.parse.urlencode(pairs)}" if pairs else base


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AdminBenchOptions:
    scale: SeedScale = field(default_factory=SeedScale)
    repetitions: int = 20
    export_repetitions: int = 5
    deep_pages: int = 50
    rollup_seconds: float = ROLLUP_TIME_LIMIT

    @classmethod
    def quick(cls) -> AdminBenchOptions:
        return cls(repetitions=10, export_repetitions=3, rollup_seconds=30.0)


def build_probes(
    client: httpx2.Client, options: AdminBenchOptions, admin_id: uuid.UUID, now: dt.datetime
) -> list[Probe]:
    """Every timed request; the paged ones start from cursors fetched here."""
    n = options.repetitions
    user = seeded_user_id(2)
    users, tokens = "/admin/oauth2/users", "/admin/oauth2/tokens"
    stats, audit = "/admin/oauth2/stats", "/admin/oauth2/audit"
    week_ago = _rfc3339(now - dt.timedelta(days=7))
    day = (now - dt.timedelta(days=30)).date()
    window = {"after": f"{day}T00:00:00Z", "before": f"{day + dt.timedelta(days=1)}T00:00:00Z"}
    probes = [
        Probe(users, users, n),
        Probe(f"{users}?email=example7", _with(users, email="example7"), n),
        Probe(f"{users}?provider=github", _with(users, provider="github"), n),
        Probe(f"{users}?status=disabled", _with(users, status="disabled"), n),
        Probe(f"{users}?last_login_after=<7 days ago>", _with(users, last_login_after=week_ago), n),
    ]
    for pages, label in ((1, "page 2"), (options.deep_pages - 1, f"page {options.deep_pages}")):
        cursor, why = next_cursor(client, users, pages)
        if cursor is None:
            print(f"  ERROR {users} {label}: {why}")
        else:
            probes.append(Probe(f"{users}?cursor=<{label}>", _with(users, cursor=cursor), n))
    probes += [
        Probe(tokens, tokens, n),
        Probe(f"{tokens}?user=<user 2>", _with(tokens, user=str(user)), n),
        Probe(
            f"{tokens}?kind=session&state=active", _with(tokens, kind="session", state="active"), n
        ),
        Probe(f"{tokens}?state=expiring", _with(tokens, state="expiring"), n),
        Probe(f"{tokens}?state=expired", _with(tokens, state="expired"), n),
        Probe(
            f"{tokens}?kind=upstream&state=refresh_failing",
            _with(tokens, kind="upstream", state="refresh_failing"),
            n,
        ),
        Probe(f"{tokens}?provider=corp", _with(tokens, provider="corp"), n),
        Probe(f"{tokens}?client=cli", _with(tokens, client="cli"), n),
        Probe(stats, stats, n),
        Probe(
            f"{stats}?from=<60 days ago>&to=<today>",
            _with(
                stats,
                **{"from": str((now - dt.timedelta(days=60)).date()), "to": str(now.date())},
            ),
            n,
        ),
        Probe(audit, audit, n),
        Probe(f"{audit}?action=user.disabled", _with(audit, action="user.disabled"), n),
        Probe(f"{audit}?action={ROTATED}", _with(audit, action=ROTATED), n),
        Probe(f"{audit}?actor=user:<admin>", _with(audit, actor=f"user:{admin_id}"), n),
        Probe(f"{audit}?actor=client:mobile", _with(audit, actor="client:mobile"), n),
        Probe(f"{audit}?subject=<user 2>", _with(audit, subject=str(user)), n),
        Probe(f"{audit}?after&before=<one day, 30 days ago>", _with(audit, **window), n),
    ]
    cursor, why = next_cursor(client, audit, 1)
    if cursor is None:
        print(f"  ERROR {audit} page 2: {why}")
    else:
        probes.append(Probe(f"{audit}?cursor=<page 2>", _with(audit, cursor=cursor), n))
    exports = options.export_repetitions
    for export in ("jsonl", "csv"):
        probes.append(
            Probe(
                f"{audit}?format={export}&<one day>", _with(audit, format=export, **window), exports
            )
        )
    return probes


def print_table(results: Sequence[ProbeResult]) -> None:
    width = max(44, *(len(result.probe.label) for result in results)) + 2
    print()
    print(f"{'endpoint + query':<{width}}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'rows':>8}  n")
    for result in results:
        label = f"{result.probe.label:<{width}}"
        if result.error:
            print(f"{label}{'ERROR ' + result.error:>35}")
            continue
        rows = "-" if result.rows is None else str(result.rows)
        line = (
            f"{label}{result.p50:9.1f}{result.p95:9.1f}{result.max:9.1f}{rows:>8}"
            f"  {len(result.times_ms)}"
        )
        if result.size > 100_000:
            line += f"  ({result.size / 1e6:.1f} MB)"
        if result.p95 > TARGET_MS:
            line += f"  <-- p95 > {TARGET_MS:.0f} ms"
        print(line)
    over = [result for result in results if not result.error and result.p95 > TARGET_MS]
    failed = [result for result in results if result.error]
    print(
        f"\n{len(results) - len(failed)} requests measured, {len(over)} with p95 above "
        f"{TARGET_MS:.0f} ms, {len(failed)} failed"
    )
    for result in failed:
        print(f"ERROR: {result.probe.label} answered {result.error}")


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any
    ms: float


async def capture_statements(
    broker_env: Mapping[str, str], token: str, paths: Sequence[str]
) -> dict[str, list[Statement]]:
    """The SQL each path runs, from one request to an in-process broker on the same database
    (same settings and keys), after a warm-up request."""
    from broker.app import create_app
    from shared.runtime import build_runtime
    from shared.settings import load_settings
    from sqlalchemy import event

    settings = load_settings(dict(broker_env))
    runtime = build_runtime(settings)
    captured: list[Statement] = []

    def before(conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        started = conn.info["bench_started"].pop()
        if not many:
            captured.append(Statement(sql, parameters, (time.perf_counter() - started) * 1000))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", before)
    event.listen(runtime.engine.sync_engine, "after_cursor_execute", after)
    found: dict[str, list[Statement]] = {}
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(
            transport=transport,
            base_url=settings.issuer,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        ) as client:
            for path in paths:
                await client.get(path)
                captured.clear()
                await client.get(path)
                found[path] = list(captured)
    finally:
        await runtime.stop()
    return found


def explain(database_url: str, statement: Statement) -> tuple[list[str], float]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a captured SELECT (rolled back): its lines and its
    execution time in ms."""
    with psycopg.connect(libpq_url(database_url)) as connection:
        try:
            rows = connection.execute(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", statement.parameters or None
            ).fetchall()
        finally:
            connection.rollback()
    lines = [str(row[0]) for row in rows]
    executed = [line for line in lines if line.startswith("Execution Time:")]
    return lines, float(executed[0].split()[2]) if executed else math.nan


_PLAN_NOISE = ("Worker ", "Sort Method", "Memory Usage", "Batches:", "Planning", "Buffers: shared")


def _plan_summary(lines: Sequence[str]) -> list[str]:
    """The plan's first node lines (with their filters and row counts) and its timings."""
    nodes = [line for line in lines if not line.strip().startswith(_PLAN_NOISE)]
    nodes = [line for line in nodes if not line.startswith("Execution")]
    head = nodes[:PLAN_LINES]
    if len(nodes) > PLAN_LINES:
        head.append(f"  ... ({len(nodes) - PLAN_LINES} more plan lines)")
    buffers = next((line.strip() for line in lines if "Buffers: shared" in line), "")
    timings = [line for line in lines if line.startswith(("Planning Time", "Execution Time"))]
    return [*head, *([buffers] if buffers else []), *timings]


def _short_sql(sql: str, width: int = 300) -> str:
    """``SELECT … FROM …``: the column list elided, the rest cut to ``width`` characters."""
    flat = " ".join(sql.split())
    depth = 0
    for index, char in enumerate(flat):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and flat.startswith(" FROM ", index) and flat.startswith("SELECT "):
            flat = "SELECT … " + flat[index + 1 :]
            break
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_plans(
    database_url: str, broker_env: Mapping[str, str], token: str, slow: Sequence[ProbeResult]
) -> None:
    """Each slow request's statements (captured in-process), and the plans of those that took
    at least :data:`SLOW_STATEMENT_MS` in PostgreSQL."""
    print(f"\nSQL of the requests with p95 above {EXPLAIN_OVER_MS:.0f} ms (replayed in-process):")
    try:
        found = asyncio.run(capture_statements(broker_env, token, [r.probe.path for r in slow]))
    except Exception as exc:
        print(f"  ERROR: could not replay them in-process to capture their SQL: {exc!r}")
        for result in slow:
            print(f"  slow: {result.probe.label} (p95 {result.p95:.1f} ms)")
        return
    for result in slow:
        statements = found.get(result.probe.path, [])
        explained: list[tuple[Statement, list[str], float]] = []
        for statement in statements:
            if not statement.sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            try:
                plan, executed = explain(database_url, statement)
            except psycopg.Error as exc:
                plan, executed = [f"(EXPLAIN failed: {str(exc).strip()[:200]})"], math.nan
            explained.append((statement, plan, executed))
        in_driver = sum(statement.ms for statement in statements)
        in_postgres = sum(executed for _s, _p, executed in explained if not math.isnan(executed))
        print(
            f"\n* {result.probe.label}: p95 {result.p95:.1f} ms over HTTP; {len(statements)} "
            f"statements, {in_driver:.1f} ms in the database driver, {in_postgres:.1f} ms "
            "executing in PostgreSQL (EXPLAIN ANALYZE)"
        )
        heavy = [item for item in explained if not item[2] < SLOW_STATEMENT_MS]
        if not heavy:
            print(
                f"  no statement ran {SLOW_STATEMENT_MS:.0f} ms in PostgreSQL: the time goes to "
                "the broker process (decoding and encoding rows) and the transfer"
            )
        for statement, plan, executed in sorted(heavy, key=lambda item: -item[2]):
            print(f"  {executed:.1f} ms in PostgreSQL: {_short_sql(statement.sql)}")
            for line in _plan_summary(plan):
                print(f"    {line}")


# --------------------------------------------------------------------------- main


def run_admin_bench(server_url: str, options: AdminBenchOptions | None = None) -> int:
    """The whole admin part on a throw-away database of ``server_url``; prints, returns 0."""
    options = options or AdminBenchOptions()
    scale = options.scale
    began = time.monotonic()
    print(
        f"\nadmin API: {scale.users:,} users, {scale.sessions:,} sessions, "
        f"{scale.audit_rows:,} audit rows; {options.repetitions} repetitions per request"
    )
    with (
        tempfile.TemporaryDirectory(prefix="broker-bench-admin-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        database_url = stack.enter_context(bench_database(server_url))
        upgrade_to_head(database_url)
        print("seeding (set-based INSERT ... SELECT):")
        report = seed_admin_data(database_url, scale)
        print_seed_report(report)
        rollup = roll_up(
            database_url, report.counts["audit_actions"], time_limit=options.rollup_seconds
        )
        print_rollup(rollup, options.rollup_seconds)
        snapshot_seconds = asyncio.run(_run_stats_snapshot(database_url))
        print(
            f"stats snapshot, the worker's job (shared.jobs.stats_snapshot): "
            f"{snapshot_seconds * 1000:.0f} ms"
        )
        if rollup.counts_total != report.counts["audit_actions"]:
            print(
                f"  WARNING: the daily counts sum to {rollup.counts_total:,}, not "
                f"{report.counts['audit_actions']:,}"
            )

        broker, issuer, broker_env = start_admin_broker(
            stack, workdir, database_url, report.admin_id
        )
        log_start = len(broker.log())
        now = dt.datetime.now(dt.UTC)
        token = admin_access_token(issuer, seed_admin_session(database_url, report.admin_id))
        print(f"broker on {issuer} (pid {broker.process.pid}), admin user:{report.admin_id}")
        with httpx2.Client(
            base_url=issuer, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:
            probes = build_probes(client, options, report.admin_id, now)
            results = []
            for probe in probes:
                result = time_probe(client, probe)
                results.append(result)
        print_table(results)
        slow = [r for r in results if not r.error and r.p95 > EXPLAIN_OVER_MS]
        if slow:
            print_plans(database_url, broker_env, token, slow)
        else:
            print(f"no request had a p95 above {EXPLAIN_OVER_MS:.0f} ms")
        report_server_log(broker, log_start)
    print(f"admin part: {time.monotonic() - began:.0f} s in all")
    return 0


def parse_args(argv: list[str] | None) -> AdminBenchOptions:
    parser = argparse.ArgumentParser(
        prog="bench.admin", description="Seed 100,000 users and time the admin API (prints)."
    )
    parser.add_argument("--quick", action="store_true", help="10 repetitions per request")
    parser.add_argument("--repetitions", type=int, help="timed requests per query (default 20)")
    parser.add_argument("--users", type=int, default=SeedScale.users)
    parser.add_argument("--sessions", type=int, default=SeedScale.sessions)
    parser.add_argument("--audit-rows", type=int, default=SeedScale.audit_rows)
    parser.add_argument(
        "--rollup-seconds",
        type=float,
        help=f"seconds of the rollup job; SQL counts the rest (default {ROLLUP_TIME_LIMIT:g})",
    )
    args = parser.parse_args(argv)
    base = AdminBenchOptions.quick() if args.quick else AdminBenchOptions()
    return AdminBenchOptions(
        scale=SeedScale(
            users=max(2, args.users),
            sessions=max(1, args.sessions),
            audit_rows=max(1, args.audit_rows),
        ),
        repetitions=max(1, args.repetitions or base.repetitions),
        export_repetitions=base.export_repetitions,
        deep_pages=base.deep_pages,
        rollup_seconds=args.rollup_seconds or base.rollup_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    server_url = os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL)
    return run_guarded(lambda: run_admin_bench(server_url, options))


if __name__ == "__main__":
    sys.exit(main())
