"""``docker compose up --scale sync-worker=3``: the workers share one network namespace, so
``make check-deploy`` refuses a compose file in which they would collide on a port."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))  # deploy/check.py runs with deploy/ on the path

from checks.compose import SCALED_SERVICES, scaling_problems  # noqa: E402


def _worker() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    service: dict[str, Any] = compose["services"]["sync-worker"]
    return service


def test_the_compose_workers_take_no_fixed_port_and_read_their_own_port_file() -> None:
    assert "sync-worker" in SCALED_SERVICES
    assert scaling_problems(_worker()) == []


def test_a_fixed_port_published_ports_or_a_port_nobody_reads_are_refused() -> None:
    fixed = {**_worker(), "command": ["--http-host", "0.0.0.0", "--http-port", "8001"]}
    default = {**_worker(), "command": []}
    published = {**_worker(), "ports": ["127.0.0.1:8001:8001"]}
    unread = {**_worker(), "command": ["--http-port", "0"]}

    assert any("fixed port 8001" in problem for problem in scaling_problems(fixed))
    assert any("default port 8001" in problem for problem in scaling_problems(default))
    assert any("publishes host ports" in problem for problem in scaling_problems(published))
    assert any("--http-port-file" in problem for problem in scaling_problems(unread))
