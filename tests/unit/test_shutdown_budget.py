"""A broker pod's shutdown fits its grace period: the preStop sleep, then uvicorn draining the
requests in flight, end before Kubernetes would SIGKILL the process (and lose their answers)."""

from __future__ import annotations

from pathlib import Path

import yaml
from broker.cli.main import GRACEFUL_SHUTDOWN_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "broker-deployment.yaml"


def test_the_grace_period_covers_the_prestop_sleep_and_the_drain_with_a_margin():
    pod = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    (broker,) = [c for c in pod["containers"] if c["name"] == "broker"]
    sleep, seconds = broker["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    # A margin for the process to exit once drained (lifespan shutdown, closing the pools).
    assert int(seconds) + GRACEFUL_SHUTDOWN_SECONDS + 5 <= pod["terminationGracePeriodSeconds"]
