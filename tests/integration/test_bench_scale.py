"""``python -m bench.scale`` end to end at tiny sizes: every size seeded, loaded and timed, each row
and column of its report filled with sane figures, the goals checked, and the databases gone.
Not a timing test: no figure is held to a speed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import postgres_server_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SIZES = {3_000: "3k", 4_000: "4k"}  # with their labels in the report
AUDIT_ROWS = 1_000
REPETITIONS = 2
DEEP_PAGE = 3

if shutil.which("wrk") is None and not os.environ.get("CI"):
    pytest.skip(
        "wrk is missing (apt-get install wrk); CI installs it and runs this test",
        allow_module_level=True,
    )


def test_scale_bench_reports_every_size_and_cleans_up(tmp_path: Path) -> None:
    figures = tmp_path / "scale.json"
    with postgres_server_url() as server_url:
        env = {name: value for name, value in os.environ.items() if not name.startswith("BROKER")}
        env.update(BROKER_BENCH_DATABASE_URL=server_url)
        command = [sys.executable, "-m", "bench.scale", "--sizes", ",".join(map(str, SIZES))]
        command += ["--audit-rows", str(AUDIT_ROWS), "--duration", "1", "--warmup", "1"]
        command += ["--repeats", "1", "--connections", "8", "--repetitions", str(REPETITIONS)]
        command += ["--deep-pages", str(DEEP_PAGE), "--json", str(figures)]
        completed = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        out = completed.stdout
        assert completed.returncode == 0, out + completed.stderr
        used = re.findall(r"^database (bench_\w+): migrating$", out, re.M)
        assert len(used) == len(SIZES), out
        assert not _existing(server_url, used)

    assert "WARNING" not in out and "ERROR" not in out, out
    assert out.count("broker logged no errors") == len(SIZES), out
    # The summary: one row per size, every column filled.
    for label in SIZES.values():
        row = re.search(rf"^\s+{label}\s+\S+\s+1k\s+\d+ \|(.*)$", out, re.M)
        assert row, out
        cells = row.group(1).replace("|", " ").split()
        assert len(cells) == 9 and "nan" not in cells, row.group(0)
    goals = (
        r"^refresh p50 at 4k / at 3k sessions\s+[\d.]+\s+target <= 1.2\s",
        r"^admin listings p95 at 1k audit rows\s+[\d.]+ ms\s+target < 200 ms",
    )
    assert all(re.search(goal, out, re.M) for goal in goals), out

    report = json.loads(figures.read_text(encoding="utf-8"))
    assert [(size["sessions"], size["audit_rows"]) for size in report["sizes"]] == [
        (sessions, AUDIT_ROWS) for sessions in SIZES
    ]
    for size in report["sizes"]:
        rows = size["rows"]
        # Housekeeping purged the sessions past their retention, not most.
        assert 0.8 * size["sessions"] < rows["auth_sessions"] < size["sessions"]
        assert rows["audit_actions"] == AUDIT_ROWS
        # The history: rotated tokens besides each session's current one.
        assert rows["refresh_tokens"] > 2 * rows["auth_sessions"]
        refresh, introspection = size["refresh"], size["introspection"]
        for load in (refresh, introspection):
            assert load["runs"] == 1
            assert load["requests_per_sec"] > 0
            assert 0 < load["p50_ms"] <= load["p99_ms"]
        assert introspection["errors"] == 0
        assert refresh["errors"] == 0
        assert size["refresh_live_sessions"] > 0
        assert size["broker_cpu_us_per_refresh"] > 0
        assert size["broker_rss_mb"] > 0
        # Every rotation updated its token; housekeeping ran before.
        assert size["refresh_token_updates"] > 0
        assert 0 <= size["hot_refresh_token_updates"] <= size["refresh_token_updates"]
        assert size["housekeeping_seconds"] > 0
        admin = {probe["request"]: probe for probe in size["admin"]}
        for path in ("users", "tokens", "audit"):
            assert f"/admin/oauth2/{path}" in admin
            assert f"/admin/oauth2/{path}?cursor=<page {DEEP_PAGE}>" in admin
        assert "/admin/oauth2/stats" in admin
        assert not any(label.startswith("/admin/oauth2/audit?format=") for label in admin)
        for label, probe in admin.items():
            assert probe["error"] == "" and probe["n"] == REPETITIONS, label
            assert 0 < probe["p50_ms"] <= probe["p95_ms"], label
        assert admin["/admin/oauth2/users"]["rows"] == 50
    assert [goal["verdict"] in ("ok", "not met") for goal in report["goals"]] == [True, True]


def _existing(server_url: str, names: list[str]) -> list[str]:
    admin = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)
        ).fetchall()
    return [row[0] for row in rows]
