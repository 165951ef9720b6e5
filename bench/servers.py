"""The servers a bench loads: the broker with the YAML config it is given, and the baseline app.

Each runs under uvicorn (one worker) on a free port, as a subprocess of :func:`bench.processes.
server`: started when ready, stopped when the bench's exit stack closes.
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
from joserfc.jwk import ECKey
from shared.crypto.keyring import Keyring

from bench.baseline_app import ISSUER_ENV, JWKS_FILE_ENV, SIGNING_JWK_ENV
from bench.processes import VENV_BIN, BenchError, Server, free_port, server, server_env


@dataclass(frozen=True)
class Broker:
    """A running broker: its process, its issuer and the ``BROKER_*`` variables it got."""

    server: Server
    issuer: str
    env: dict[str, str]

    def access_token(self, refresh_token: str, client_id: str) -> str:
        """One refresh grant at ``/token``: a live access token of the token's user."""
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
        token: str = response.json()["access_token"]
        return token


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


def start_baseline(
    stack: contextlib.ExitStack, workdir: Path, issuer: str, jwks_body: bytes
) -> str:
    """``bench.baseline_app`` under uvicorn (one worker, no access log); returns its base URL."""
    jwks_path = workdir / "jwks.json"
    jwks_path.write_bytes(jwks_body)
    signing_key = ECKey.generate_key(
        "P-256", parameters={"kid": "bench-baseline", "alg": "ES256", "use": "sig"}
    )
    env = server_env(
        {
            JWKS_FILE_ENV: str(jwks_path),
            SIGNING_JWK_ENV: json.dumps(signing_key.as_dict(private=True)),
            ISSUER_ENV: issuer,
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
    stack.enter_context(
        server(
            "baseline",
            command,
            env=env,
            ready_url=f"{base_url}/jwks",
            log_path=workdir / "baseline.log",
        )
    )
    return base_url
