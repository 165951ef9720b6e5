"""The admin seed's SQL: one set-based ``INSERT ... SELECT ... FROM generate_series`` per table.

Random-looking values come from hashes of the row numbers (``hashint8extended``), so a row of one
table can name its related rows in another without a join and a run seeds the same data every
time (apart from random ids and token bytes). The mixes below are what the broker writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from shared.jobs.upstream_refresh import WORKER_ACTOR
from shared.models.audit_action import ROTATED

from bench.seeded_tokens import current_token_hash_sql

PROVIDERS: tuple[tuple[str, float], ...] = (("google", 0.5), ("github", 0.3), ("corp", 0.2))
NEXT_PROVIDER = {"google": "github", "github": "corp", "corp": "google"}
CLIENTS: tuple[tuple[str, float], ...] = (("web", 0.6), ("cli", 0.15), ("mobile", 0.25))
SECOND_LINK_SHARE = 0.3  # users with a second provider linked: ~130,000 profiles
DISABLED_SHARE = 0.02
FAILING_SYNC_SHARE = 0.02  # links whose last profile sync attempt failed
LOGGED_OUT_SHARE = 0.08  # sessions revoked by a logout (those of disabled users are too)
ADMIN_USER = 1  # seeded user 1 is the broker's admin
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
SESSION_PLAN = "bench_seed_sessions"


@dataclass(frozen=True)
class SeedScale:
    users: int = 100_000
    sessions: int = 150_000
    audit_rows: int = 1_000_000
    audit_days: int = 60
    audit_chunk: int = 125_000
    # Refresh tokens per session, 1 to this many: the current one and the rotated ones before it.
    tokens_per_session: int = 3


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

    def __init__(self, scale: SeedScale, now: dt.datetime, token_seed: str) -> None:
        self.scale = scale
        self.now = f"TIMESTAMPTZ '{now.astimezone(dt.UTC).isoformat()}'"
        self.admin_id = seeded_user_id(ADMIN_USER)
        self.token_seed = token_seed  # derives each session's current token (bench.seeded_tokens)

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
       1 + floor({self.scale.tokens_per_session} * {_draw("x.s", 16)})::int AS tokens
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
        used (rotated), the last is the session's current token, the one a bench can present
        (``bench.seeded_tokens``). Rotated tokens past their expiry are left out: housekeeping
        purges them (``shared.jobs.housekeeping``)."""
        current = current_token_hash_sql(self.token_seed, "t.id")
        return f"""
INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at, used_at)
SELECT t.id, CASE WHEN j = t.tokens THEN {current} ELSE sha256(uuid_send(gen_random_uuid())) END,
       t.created + (j - 1) * t.step,
       t.created + (j - 1) * t.step + interval '{REFRESH_TTL.days} days',
       CASE WHEN j < t.tokens THEN t.created + j * t.step END
FROM (SELECT id, created, tokens, ({self.now} - created) * h_step / tokens AS step
      FROM {SESSION_PLAN}) AS t
CROSS JOIN LATERAL generate_series(1, t.tokens) AS j
WHERE j = t.tokens OR t.created + (j - 1) * t.step + interval '{REFRESH_TTL.days} days' > {self.now}
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
