"""The servers a bench loads: the broker with the YAML config it is given, and the baseline app.

Each runs under uvicorn (one worker) on a free port, as a subprocess of :func:`bench.processes.
server`: started when ready, stopped when the bench's exit stack closes. The baseline app is given
the broker's JWKS bytes, its signing keys and one of its refresh responses to copy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml
from shared.crypto.keyring import Keyring

from bench.baseline_app import JWKS_FILE_ENV, SAMPLE_RESPONSE_ENV, SIGNING_JWKS_ENV
from bench.processes import VENV_BIN, BenchError, Server, free_port, server, server_env


@dataclass(frozen=True)
class Broker:
    """A running broker: its process, its issuer and the ``BROKER_*`` variables it got."""

    server: Server
    issuer: str
    env: dict[str, str]

    def access_token(self, refresh_token: str, client_id: str) -> str:
        """One refresh grant at ``/token``: a live access token of the token's user."""
        token: str = self.refresh(refresh_token, client_id)["access_token"]
        return token

    def refresh(self, refresh_token: str, client_id: str) -> dict[str, Any]:
        """One refresh grant at ``/token``: its JSON response (the tokens, ``scope``...)."""
        response = httpx2.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": client_id,
            },
            timeout=30,
        )
        if response.status_code != 200:
            raise BenchError(
                f"the refresh grant of {client_id} answered {response.status_code}: {response.text}"
            )
        body: dict[str, Any] = response.json()
        return body


def start_broker(
    stack: contextlib.ExitStack,
    workdir: Path,
    database_url: str,
    config: Mapping[str, Any],
    *,
    stem: str = "broker",
    env: Mapping[str, str] | None = None,
) -> Broker:
    """The broker on a free port with ``config`` as its YAML file, ready; ``stem`` names its
    config and log files in ``workdir``, ``env`` adds ``BROKER_*`` variables."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config_path = workdir / f"{stem}.yaml"
    config_path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    broker_env = {
        "BROKER_ENCRYPTION_KEYS": Keyring.generate().serialize(),
        "BROKER_DATABASE_URL": database_url,
        "BROKER_ISSUER": issuer,
        "BROKER_CONFIG": str(config_path),
        "BROKER_LOG_LEVEL": "WARNING",
        "BROKER_VAR_DIR": str(workdir / "var"),
        **(env or {}),
    }
    command = [str(VENV_BIN / "broker"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    running = stack.enter_context(
        server(
            "broker",
            command,
            env=server_env(broker_env),
            ready_url=f"{issuer}/readyz",
            log_path=workdir / f"{stem}.log",
        )
    )
    return Broker(running, issuer, broker_env)


@dataclass(frozen=True)
class Baseline:
    """The running baseline app and its base URL."""

    server: Server
    url: str


def start_baseline(
    stack: contextlib.ExitStack,
    workdir: Path,
    *,
    jwks_body: bytes,
    signing_jwks: Mapping[str, Any],
    sample_response: Mapping[str, Any],
) -> Baseline:
    """``bench.baseline_app`` under uvicorn (one worker, no access log), ready.

    ``jwks_body`` is what its ``/jwks`` serves; ``signing_jwks`` are the broker's private keys
    (``bench.broker_keys``) and ``sample_response`` one refresh response of the broker, which its
    ``/sign`` and ``/token`` copy.
    """
    jwks_path = workdir / "jwks.json"
    jwks_path.write_bytes(jwks_body)
    sample_path = workdir / "sample-refresh-response.json"
    sample_path.write_text(json.dumps(dict(sample_response)), encoding="utf-8")
    env = server_env(
        {
            JWKS_FILE_ENV: str(jwks_path),
            SIGNING_JWKS_ENV: json.dumps(dict(signing_jwks)),
            SAMPLE_RESPONSE_ENV: str(sample_path),
        }
    )
    port = free_port()
    command = [
        str(VENV_BIN / "python"),
        "-m",
        "uvicorn",
        "--factory",
        "bench.baseline_app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    base_url = f"http://127.0.0.1:{port}"
    running = stack.enter_context(
        server(
            "baseline",
            command,
            env=env,
            ready_url=f"{base_url}/jwks",
            log_path=workdir / "baseline.log",
        )
    )
    return Baseline(running, base_url)
