"""``python -m bench.admin`` end to end at a small scale: it exits 0, the rollup job and its
set-based stand-in share the backlog, every admin request answers, and the database is gone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import postgres_server_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AUDIT_ROWS = 30_000  # a few of the job's batches: half a second of it leaves the rest to SQL


def test_admin_bench_times_every_request_and_cleans_up() -> None:
    with postgres_server_url() as server_url:
        env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER")}
        env.update(BROKER_BENCH_DATABASE_URL=server_url)
        command = [sys.executable, "-m", "bench.admin", "--users", "500", "--sessions", "750"]
        command += ["--audit-rows", str(AUDIT_ROWS), "--repetitions", "1"]
        command += ["--rollup-seconds", "0.5"]
        before = _bench_databases(server_url)
        completed = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        out = completed.stdout
        assert completed.returncode == 0, out + completed.stderr
        assert f"audit_daily_counts sums to {AUDIT_ROWS:,}" in out, out
        job = re.search(r"worker's job .*: ([\d,]+) rows in", out)
        stand_in = re.search(r"([\d,]+) rows counted by the equivalent INSERT", out)
        assert job and stand_in, out
        rows = [int(match.group(1).replace(",", "")) for match in (job, stand_in)]
        assert sum(rows) == AUDIT_ROWS and min(rows) > 0, out
        assert "WARNING" not in out, out
        measured = re.search(
            r"^(\d+) requests measured, \d+ with p95 above \d+ ms, 0 failed$", out, re.M
        )
        assert measured and int(measured.group(1)) >= 20, out
        assert "broker logged no errors" in out, out
        assert _bench_databases(server_url) == before


def _bench_databases(server_url: str) -> set[str]:
    admin = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench%'"
        ).fetchall()
    return {row[0] for row in rows}
