"""Seeding the admin benchmark's database: the seed's SQL run and timed, the indexes rebuilt after
the load, and a live session of the admin."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from shared.crypto.opaque import new_opaque_token, token_hash
from shared.db.audit_partitions import Week, create_partition_sql

from bench.admin_seed_sql import REFRESH_TTL, SESSION_PLAN, SeedScale, SeedSql
from bench.database import libpq_url
from bench.seeded_tokens import new_token_seed

# The admin's session is of the console client, the one configured for the admin scope.
ADMIN_CLIENT = "console"
ADMIN_SCOPE = "openid email profile admin"
SEEDED_TABLES = (
    "users",
    "oauth2_profiles",
    "oauth2_tokens",
    "auth_sessions",
    "refresh_tokens",
    "audit_actions",
)
AUDIT_WRITERS = 2  # connections inserting audit chunks at once
INDEX_BUILD_MEMORY = "256MB"  # per connection building an index (two at once)


@dataclass(frozen=True)
class SeedReport:
    """The seeded admin, the seconds of each step, the rows of each table, and the seed of the
    sessions' current refresh tokens (``bench.seeded_tokens``)."""

    admin_id: uuid.UUID
    seconds: dict[str, float]
    counts: dict[str, int]
    token_seed: str

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def seed_admin_data(
    database_url: str,
    scale: SeedScale | None = None,
    *,
    now: dt.datetime | None = None,
    vacuum: bool = True,
    token_seed: str | None = None,
) -> SeedReport:
    """Seed the tables the admin API reads (into a freshly migrated database); time each step.

    Foreign-key triggers are skipped where the role may (``session_replication_role``): every
    reference is made consistent by construction, and a row-by-row check would double the time.
    """
    scale = scale or SeedScale()
    now = now or dt.datetime.now(dt.UTC)
    plan = SeedSql(scale, now, token_seed or new_token_seed())
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
                _audit_partitions(connection, now - dt.timedelta(days=scale.audit_days), now)
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
        counts = table_rows(connection, SEEDED_TABLES)
    return SeedReport(
        admin_id=plan.admin_id, seconds=seconds, counts=counts, token_seed=plan.token_seed
    )


def _seed_connection(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection for seeding: no synchronous commit, no FK triggers if allowed."""
    connection = psycopg.connect(url, autocommit=True)
    connection.execute("SET synchronous_commit = off")
    # The indexes rebuilt after the load sort in memory up to this (millions of rows).
    connection.execute(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
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
    # A partitioned table's index is defined ON ONLY the parent; built without ONLY, it is
    # built on every partition too (dropping it dropped theirs).
    definitions = [definition.replace(" ON ONLY ", " ON ", 1) for _name, definition in rows]
    try:
        yield
    finally:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=AUDIT_WRITERS) as pool:
            list(pool.map(lambda definition: _run_alone(url, definition), definitions))
        seconds[f"{len(rows)} secondary indexes"] = time.perf_counter() - started


def _audit_partitions(
    connection: psycopg.Connection[Any], start: dt.datetime, end: dt.datetime
) -> None:
    """The weekly partitions of ``audit_actions`` from ``start`` to ``end`` (as the worker's
    job keeps them), so the seeded rows land in their weeks rather than the default partition."""
    existing = {
        row[0]
        for row in connection.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'audit_actions'::regclass"
        )
    }
    week = Week.of(start)
    while week.start <= end:
        if week.name not in existing:
            with connection.transaction():
                for statement in create_partition_sql(week):
                    connection.execute(statement)
        week = week.later(1)


def _run_alone(url: str, statement: str) -> None:
    with _seed_connection(url) as connection, connection.transaction():
        connection.execute(statement)


def table_rows(connection: psycopg.Connection[Any], tables: Sequence[str]) -> dict[str, int]:
    """The rows of each table (exact counts)."""
    return {name: int(_scalar(connection, f"SELECT count(*) FROM {name}")) for name in tables}


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
