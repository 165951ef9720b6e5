"""COMMITs per refresh rotation: the bench database's ``xact_commit`` and the rotations recorded."""

from __future__ import annotations

import time

import psycopg

from bench.database import libpq_url


def xact_commits(server_url: str, database: str, *, settle: float = 1.0) -> int:
    """``pg_stat_database.xact_commit`` of ``database``, once it stops moving.

    Backends publish their counters lazily (at most once a second, later when idle), so the value
    is read until two readings ``settle`` seconds apart agree. Read from the server's admin
    database so these reads do not count themselves.
    """
    with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:

        def read() -> int:
            connection.execute("SELECT pg_stat_clear_snapshot()")
            row = connection.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone()
            return int(row[0]) if row else 0

        previous = read()
        for _ in range(30):
            time.sleep(settle)
            current = read()
            if current == previous:
                return current
            previous = current
        return previous


def rotated_tokens(database_url: str) -> int:
    """Refresh tokens the broker marked used: the rotations it actually committed."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL"
        ).fetchone()
        return int(row[0]) if row else 0
