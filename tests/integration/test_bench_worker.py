"""``python -m bench.worker`` end to end on a few links: it exits 0, prints its table, every link
was refreshed exactly once, and it leaves neither its database nor its Redis keys behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from redis import Redis
from sqlalchemy.engine import make_url

from tests.support.databases import postgres_server_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_worker_bench_prints_its_table_and_cleans_up(redis_url: str) -> None:
    with postgres_server_url() as server_url:
        env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER")}
        env.update(BROKER_BENCH_DATABASE_URL=server_url, BROKER_BENCH_REDIS_URL=redis_url)
        completed = subprocess.run(
            [sys.executable, "-m", "bench.worker", "--worker-links", "20", "--audit-events", "200"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
        out = completed.stdout
        assert completed.returncode == 0, out + completed.stderr
        for line in ("worker refresh (1 proc)", "worker refresh (2 procs)", "scaling 2/1"):
            assert line in out, out
        assert out.count("20 of 20 links") == 2, out
        assert out.count("every link refreshed exactly once: yes") == 2, out
        assert "200 of 200 published" in out and "200 in the stream" in out, out

        database = re.search(r"^database (bench_\w+): migrating$", out, re.MULTILINE)
        prefix = re.search(r"Redis keys (bench:worker:\w+:)\*", out)
        assert database and prefix, out
        admin = make_url(server_url).set(drivername="postgresql")
        with psycopg.connect(admin.render_as_string(hide_password=False)) as connection:
            left = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database.group(1),)
            ).fetchall()
        assert left == []
        redis = Redis.from_url(redis_url)
        try:
            assert list(redis.scan_iter(match=f"{prefix.group(1)}*")) == []
        finally:
            redis.close()
