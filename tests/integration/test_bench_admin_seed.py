"""The admin benchmark's seed (``bench.admin_seed``) at a small scale, on a database of its own: the
counts it promises, the references the schema would check if the seed did not skip foreign-key
triggers, the facts the admin listings rely on, and a rollup on which the worker's job and its
set-based stand-in for large backlogs (``roll_up_backlog``) agree. Not a timing test."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from shared.crypto.opaque import token_hash
from shared.db.migrate import upgrade_to_head
from shared.jobs.audit_rollup import ROLLUP_CURSOR, roll_up_backlog, rollup_batch
from shared.process_resources import ProcessResources
from shared.settings import make_settings

from bench.admin_jobs import roll_up
from bench.admin_seed import SEEDED_TABLES, SeedReport, seed_admin_data, seed_admin_session
from bench.admin_seed_sql import (
    ADMIN_USER,
    AUDIT_MIX,
    CLIENTS,
    PROVIDERS,
    SeedScale,
    seeded_user_id,
)
from bench.database import libpq_url
from bench.seeded_tokens import current_token, live_sessions
from tests.support.databases import ServiceUnavailable, fresh_database, postgres_server_url

pytestmark = pytest.mark.integration

SCALE = SeedScale(users=500, sessions=750, audit_rows=5_000, audit_chunk=1_500)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[str, SeedReport]]:
    try:
        with postgres_server_url() as server, fresh_database(server) as url:
            upgrade_to_head(url)
            yield url, seed_admin_data(url, SCALE, now=NOW)
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as connection:
        return connection.execute(query, params).fetchall()


def _one(url: str, query: str, params: Any = None) -> Any:
    return _rows(url, query, params)[0][0]


def test_counts(seeded):
    url, report = seeded
    counts = {name: _one(url, f"SELECT count(*) FROM {name}") for name in SEEDED_TABLES}
    counts["auth_sessions"] -= _one(url, "SELECT count(*) FROM auth_sessions WHERE provider='dev'")
    assert report.counts == counts | {"auth_sessions": report.counts["auth_sessions"]}
    assert counts["users"] == SCALE.users
    assert counts["auth_sessions"] == SCALE.sessions
    assert counts["audit_actions"] == SCALE.audit_rows
    assert 1.2 * SCALE.users <= counts["oauth2_profiles"] <= 1.4 * SCALE.users
    assert counts["oauth2_tokens"] == counts["oauth2_profiles"]
    assert SCALE.sessions < counts["refresh_tokens"] <= 3 * SCALE.sessions
    providers = {row[0] for row in _rows(url, "SELECT DISTINCT provider FROM oauth2_profiles")}
    assert providers == {name for name, _share in PROVIDERS}
    assert report.admin_id == seeded_user_id(ADMIN_USER)
    assert set(report.seconds) >= {"users", "audit_actions"}


def test_foreign_keys_hold(seeded):
    """Every single-column foreign key of the schema, checked by a query (the seed skips the
    row-by-row triggers)."""
    url, _report = seeded
    keys = _rows(
        url,
        """
        SELECT c.conname, child.relname, ca.attname, parent.relname, pa.attname
        FROM pg_constraint AS c
        JOIN pg_class AS child ON child.oid = c.conrelid
        JOIN pg_class AS parent ON parent.oid = c.confrelid
        JOIN pg_attribute AS ca ON ca.attrelid = c.conrelid AND ca.attnum = c.conkey[1]
        JOIN pg_attribute AS pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1]
        WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
        """,
    )
    assert len(keys) >= 5
    dangling = {
        name: _one(
            url,
            f"SELECT count(*) FROM {child} AS c WHERE c.{column} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {parent} AS p WHERE p.{key} = c.{column})",
        )
        for name, child, column, parent, key in keys
    }
    assert set(dangling.values()) == {0}, dangling
    # refresh_tokens.session_id has no foreign key on purpose (see the model): checked here.
    assert (
        _one(
            url,
            "SELECT count(*) FROM refresh_tokens AS r WHERE NOT EXISTS "
            "(SELECT 1 FROM auth_sessions AS s WHERE s.id = r.session_id)",
        )
        == 0
    )


def test_users(seeded):
    url, _report = seeded
    emails = [row[0] for row in _rows(url, "SELECT email FROM users")]
    for email in emails:
        match = re.fullmatch(r"user(\d+)@example(\d+)\.com", email)
        assert match and int(match[1]) % 50 == int(match[2]), email
    disabled = _one(url, "SELECT count(*) FROM users WHERE status = 'disabled'")
    assert 0 < disabled <= 0.06 * SCALE.users
    admin = _rows(url, "SELECT status FROM users WHERE id = %s", (seeded_user_id(ADMIN_USER),))
    assert admin == [("active",)]
    assert (
        _one(
            url,
            "SELECT count(*) FROM users WHERE last_login_at < created_at "
            "OR created_at < %(now)s - interval '401 days' OR created_at > %(now)s "
            "OR last_login_at < %(now)s - interval '61 days'",
            {"now": NOW},
        )
        == 0
    )


def test_links_and_upstream_tokens(seeded):
    url, _report = seeded
    assert (
        _one(
            url,
            "SELECT count(*) FROM oauth2_tokens AS t "
            "JOIN oauth2_profiles AS p ON p.id = t.profile_id "
            "WHERE t.user_id <> p.user_id OR t.provider <> p.provider",
        )
        == 0
    )
    assert (
        _one(
            url,
            "SELECT count(*) FROM users AS u WHERE NOT EXISTS "
            "(SELECT 1 FROM oauth2_profiles AS p WHERE p.user_id = u.id)",
        )
        == 0
    )
    states = dict(_rows(url, "SELECT state, count(*) FROM oauth2_tokens GROUP BY state"))
    assert set(states) <= {"ok", "refresh_failing", "needs_reauth", "revoked"}
    assert states["ok"] > 0.8 * sum(states.values())
    failing_syncs = _one(
        url, "SELECT count(*) FROM oauth2_profiles WHERE last_synced_at < sync_attempted_at"
    )
    assert 0 < failing_syncs < 0.06 * SCALE.users
    assert (
        _one(
            url,
            "SELECT count(*) FROM oauth2_profiles WHERE sync_attempted_at < last_synced_at "
            "OR last_synced_at < created_at OR sync_attempted_at > %(now)s",
            {"now": NOW},
        )
        == 0
    )
    # Ciphertexts are there (the admin API only says whether a refresh token is held).
    assert _one(url, "SELECT count(*) FROM oauth2_tokens WHERE access_token_enc IS NULL") == 0


def test_sessions_and_refresh_tokens(seeded):
    url, _report = seeded
    current = _rows(
        url,
        "SELECT count(r.*) FILTER (WHERE r.used_at IS NULL) FROM auth_sessions AS s "
        "JOIN refresh_tokens AS r ON r.session_id = s.id GROUP BY s.id",
    )
    assert {row[0] for row in current} == {1}, "each session has exactly one current token"
    assert (
        _one(
            url,
            "SELECT count(*) FROM refresh_tokens WHERE used_at < created_at "
            "OR created_at > %(now)s OR expires_at <> created_at + interval '30 days' "
            # Rotated tokens past their expiry: housekeeping would have purged them.
            "OR (used_at IS NOT NULL AND expires_at <= %(now)s)",
            {"now": NOW},
        )
        == 0
    )
    assert (
        _one(
            url,
            "SELECT count(*) FROM auth_sessions AS s "
            "JOIN oauth2_profiles AS p ON p.id = s.profile_id "
            "WHERE p.user_id <> s.user_id OR p.provider <> s.provider",
        )
        == 0
    )
    assert (
        _one(
            url,
            "SELECT count(*) FROM auth_sessions AS s JOIN users AS u ON u.id = s.user_id "
            "WHERE u.status = 'disabled' AND s.revoked_at IS NULL",
        )
        == 0
    )
    clients = {row[0] for row in _rows(url, "SELECT DISTINCT client_id FROM auth_sessions")}
    assert clients == {name for name, _share in CLIENTS}
    revoked = _one(url, "SELECT count(*) FROM auth_sessions WHERE revoked_at IS NOT NULL")
    assert 0 < revoked < 0.2 * SCALE.sessions


def test_each_sessions_current_token_is_the_one_the_bench_derives(seeded):
    """``bench.seeded_tokens``: the bench can present every seeded session's current token, and
    only it (the rotated ones are random)."""
    url, report = seeded
    rows = _rows(
        url,
        "SELECT s.id, r.token_hash, r.used_at IS NULL FROM auth_sessions AS s "
        "JOIN refresh_tokens AS r ON r.session_id = s.id WHERE s.provider <> 'dev'",
    )
    derived = {token_hash(current_token(report.token_seed, row[0])): row[0] for row in rows}
    assert len(derived) == SCALE.sessions
    matched = [(row[0], row[2]) for row in rows if derived.get(bytes(row[1])) == row[0]]
    assert len(matched) == SCALE.sessions and all(current for _id, current in matched)


def test_live_sessions_are_those_a_refresh_would_rotate(seeded):
    url, report = seeded
    alive_until = NOW + dt.timedelta(hours=2)
    live = live_sessions(
        url, report.token_seed, "web", alive_until=alive_until, limit=SCALE.sessions
    )
    assert 0 < len(live) == len(set(live))
    refused = _one(
        url,
        "SELECT count(*) FROM auth_sessions AS s JOIN users AS u ON u.id = s.user_id "
        "JOIN refresh_tokens AS r ON r.session_id = s.id AND r.used_at IS NULL "
        "LEFT JOIN oauth2_tokens AS t ON t.profile_id = s.profile_id "
        "WHERE s.id = ANY(%(live)s) AND (s.client_id <> 'web' OR s.revoked_at IS NOT NULL "
        "OR u.status <> 'active' OR r.expires_at <= %(until)s "
        "OR t.state IN ('revoked', 'needs_reauth'))",
        {"live": live, "until": alive_until},
    )
    assert refused == 0
    assert len(live_sessions(url, report.token_seed, "web", alive_until=alive_until, limit=5)) == 5
    # A session whose current token is no longer the seeded one (rotated since) is not live here.
    assert (
        live_sessions(url, "other" + report.token_seed, "web", alive_until=alive_until, limit=5)
        == []
    )


def test_audit_rows(seeded):
    url, _report = seeded
    ids = _rows(url, "SELECT min(id), max(id), count(DISTINCT id) FROM audit_actions")[0]
    assert ids == (1, SCALE.audit_rows, SCALE.audit_rows)
    assert (
        _one(
            url,
            "SELECT count(*) FROM (SELECT occurred_at < lag(occurred_at) OVER (ORDER BY id) "
            "AS back FROM audit_actions) AS ordered WHERE back",
        )
        == 0
    )
    assert (
        _one(
            url,
            "SELECT count(*) FROM audit_actions WHERE occurred_at > %(now)s "
            "OR occurred_at < %(now)s - interval '60 days' OR txid IS NULL",
            {"now": NOW},
        )
        == 0
    )
    actions = dict(_rows(url, "SELECT action, count(*) FROM audit_actions GROUP BY action"))
    mix = dict(AUDIT_MIX)
    assert set(actions) <= set(mix)
    assert {action for action, share in mix.items() if share >= 0.01} <= set(actions)
    assert 0.7 < actions["refresh_token.rotated"] / SCALE.audit_rows < 0.8
    # Rotations name a seeded session, its user and its client, as the hot path writes them.
    assert (
        _one(
            url,
            "SELECT count(*) FROM audit_actions AS a LEFT JOIN auth_sessions AS s "
            "ON s.id = (a.data ->> 'sid')::uuid WHERE a.action = 'refresh_token.rotated' AND "
            "(s.id IS NULL OR a.subject <> s.user_id::text OR a.actor <> 'client:' || s.client_id "
            "OR a.client_id <> s.client_id)",
        )
        == 0
    )
    # Sign-ins: the actor is provider:subject of one of the user's links.
    assert (
        _one(
            url,
            "SELECT count(*) FROM audit_actions AS a WHERE a.action = 'user.signed_in' "
            "AND NOT EXISTS (SELECT 1 FROM oauth2_profiles AS p WHERE p.user_id::text = a.subject "
            "AND a.actor = p.provider || ':' || p.subject AND a.data ->> 'provider' = p.provider)",
        )
        == 0
    )
    assert _rows(
        url, "SELECT DISTINCT actor FROM audit_actions WHERE action = 'user.disabled'"
    ) in ([], [(f"user:{seeded_user_id(ADMIN_USER)}",)])
    assert (
        _one(
            url,
            "SELECT count(*) FROM audit_actions AS a WHERE NOT EXISTS "
            "(SELECT 1 FROM users AS u WHERE u.id::text = a.subject)",
        )
        == 0
    )
    # The sequence is past the explicit ids: the broker's own rows come after them.
    assert _one(url, "SELECT nextval(pg_get_serial_sequence('audit_actions', 'id'))") > ids[1]


def test_admin_session_has_a_current_refresh_token(seeded):
    url, report = seeded
    token = seed_admin_session(url, report.admin_id, now=NOW)
    rows = _rows(
        url,
        "SELECT s.user_id, s.client_id, s.scope, s.revoked_at, r.used_at "
        "FROM refresh_tokens AS r "
        "JOIN auth_sessions AS s ON s.id = r.session_id WHERE r.token_hash = %s",
        (token_hash(token),),
    )
    # The admin API needs the admin scope (docs/security.md "Admin power needs the admin scope").
    assert rows == [(report.admin_id, "console", "openid email profile admin", None, None)]


def _rollup_state(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    counts = _rows(
        url, "SELECT day, action, provider, count FROM audit_daily_counts ORDER BY 1, 2, 3"
    )
    seen = _rows(url, "SELECT id, last_seen_at FROM users ORDER BY id")
    published = _one(
        url, "SELECT published FROM audit_relay_cursors WHERE stream = %s", (ROLLUP_CURSOR,)
    )
    return counts, seen, published


def _reset_rollup(url: str) -> None:
    with psycopg.connect(libpq_url(url)) as connection:
        connection.execute("DELETE FROM audit_daily_counts")
        connection.execute("UPDATE users SET last_seen_at = NULL")
        connection.execute(
            "UPDATE audit_relay_cursors SET last_txid = 0, last_id = 0, published = 0 "
            "WHERE stream = %s",
            (ROLLUP_CURSOR,),
        )


async def _one_job_batch(url: str, limit: int) -> int | None:
    async with ProcessResources.opened(make_settings(database_url=url), pool_size=1) as resources:
        return await rollup_batch(resources.job_deps(), limit)


async def _backlog(url: str) -> int | None:
    async with ProcessResources.opened(make_settings(database_url=url), pool_size=1) as resources:
        return await roll_up_backlog(resources.job_deps())


def test_the_rollup_job_and_its_backlog_stand_in_agree(seeded):
    url, _report = seeded
    run = roll_up(url, SCALE.audit_rows, time_limit=60)
    assert (run.job_rows, run.sql_rows, run.counts_total) == (SCALE.audit_rows, 0, SCALE.audit_rows)
    by_job = _rollup_state(url)
    assert by_job[2] == SCALE.audit_rows
    providers = {row[2] for row in by_job[0]}
    assert providers <= {name for name, _share in PROVIDERS} | {""}
    # Rotations take the provider of the session their sid names.
    assert all(row[2] for row in by_job[0] if row[1] == "refresh_token.rotated")
    # Sign-ins and rotations moved their users' last_seen_at.
    assert any(seen for _user, seen in by_job[1])

    # Caught up: nothing left for the stand-in, and the state is unchanged.
    assert asyncio.run(_backlog(url)) == 0
    assert _rollup_state(url) == by_job

    # All by the stand-in, from the start.
    _reset_rollup(url)
    assert asyncio.run(_backlog(url)) == SCALE.audit_rows
    assert _rollup_state(url) == by_job

    # Part by the job, the rest by the stand-in from the job's cursor: what bench.admin does
    # when the job's time budget runs out.
    _reset_rollup(url)
    assert asyncio.run(_one_job_batch(url, 1_200)) == 1_200
    assert asyncio.run(_backlog(url)) == SCALE.audit_rows - 1_200
    assert _rollup_state(url) == by_job

    # And the other way round: the job finds nothing after the stand-in.
    assert asyncio.run(_one_job_batch(url, 1_200)) == 0
    assert _rollup_state(url) == by_job


def test_the_audit_rows_sit_in_their_weeks_with_every_index_built(seeded):
    """The seed keeps the broker's layout: no row in the default partition, and the indexes
    dropped for the load are built again on every partition (a partitioned index rebuilt
    ``ON ONLY`` the parent would stay invalid, its partitions without it)."""
    url, _report = seeded
    partitions = dict(
        _rows(url, "SELECT tableoid::regclass::text, count(*) FROM audit_actions GROUP BY 1")
    )
    assert "audit_actions_default" not in partitions
    assert len(partitions) >= SCALE.audit_days // 7
    invalid = _rows(
        url,
        "SELECT indexrelid::regclass::text FROM pg_index JOIN pg_inherits AS i "
        "ON i.inhrelid = pg_index.indrelid OR pg_index.indrelid = i.inhparent "
        "WHERE i.inhparent = 'audit_actions'::regclass AND NOT indisvalid",
    )
    assert invalid == []
    per_partition = _rows(
        url,
        "SELECT c.relname, count(x.indexrelid) FROM pg_inherits AS i "
        "JOIN pg_class AS c ON c.oid = i.inhrelid LEFT JOIN pg_index AS x ON x.indrelid = c.oid "
        "WHERE i.inhparent = 'audit_actions'::regclass GROUP BY 1",
    )
    assert {count for _name, count in per_partition} == {6}  # the key and five indexes
