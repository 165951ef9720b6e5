"""The sync-worker processes of ``bench.worker``: their configuration, a start that waits for
``/readyz``, what their ``/metrics`` and ``/proc`` say, and the arq keys of their queue dropped
afterwards."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis
import yaml
from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from shared.crypto.keyring import Keyring

from bench.processes import VENV_BIN, Server, free_port, http_get, server, server_env
from bench.upstream_links import PROVIDER

_METRIC = re.compile(r"^(sync_worker_upstream_refresh\w*)\{([^}]*)\}\s+(\S+)$", re.MULTILINE)
_WARNING_LINE = re.compile(r'"level":\s*"(warning|error|critical)"|Traceback \(most recent')


def worker_env(
    workdir: Path,
    *,
    database_url: str,
    redis_url: str,
    keyring: Keyring,
    issuer: str,
    key_prefix: str,
) -> dict[str, str]:
    """The environment of every worker: one ``oidc`` provider (the stand-in), one client."""
    config = workdir / "worker.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "providers": [
                    {
                        "id": PROVIDER,
                        "type": "oidc",
                        "issuer": issuer,
                        "client_id": "broker",
                        "client_secret": "broker-secret",
                        "scopes": ["openid", "email", "profile", "offline_access"],
                        "refresh_concurrency": 16,
                    }
                ],
                "clients": [{"id": "bench", "redirect_uris": ["http://127.0.0.1:3000/cb"]}],
            }
        ),
        encoding="utf-8",
    )
    return server_env(
        {
            "BROKER_DATABASE_URL": database_url,
            "BROKER_REDIS_URL": redis_url,
            "BROKER_ENCRYPTION_KEYS": keyring.serialize(),
            "BROKER_CONFIG": str(config),
            "BROKER_UPSTREAM_REFRESH_SCAN_INTERVAL": "0.5",
            "BROKER_VAR_DIR": str(workdir / "var"),
            "BROKER_LOG_LEVEL": "WARNING",
            # Streams of this run's (deleted afterwards), not the broker's.
            "BROKER_AUDIT_STREAM": f"{key_prefix}audit",
            "BROKER_REVOCATION_STREAM": f"{key_prefix}revocations",
        }
    )


@dataclass(frozen=True)
class Worker:
    server: Server
    port: int

    def refresh_metrics(self) -> tuple[int, float, int]:
        """From its /metrics: ok refreshes, and the sum and count of upstream call seconds."""
        status, body = http_get(f"http://127.0.0.1:{self.port}/metrics", timeout=5.0)
        if status != 200:
            return 0, 0.0, 0
        ok, seconds, calls = 0, 0.0, 0
        for name, labels, value in _METRIC.findall(body.decode()):
            if name == "sync_worker_upstream_refreshes_total" and 'outcome="ok"' in labels:
                ok += int(float(value))
            elif name == "sync_worker_upstream_refresh_seconds_sum":
                seconds += float(value)
            elif name == "sync_worker_upstream_refresh_seconds_count":
                calls += int(float(value))
        return ok, seconds, calls

    def warnings(self) -> list[str]:
        """Warning, error and traceback lines it logged so far."""
        return [line for line in self.server.log().splitlines() if _WARNING_LINE.search(line)]


def start_worker(
    stack: contextlib.ExitStack,
    *,
    name: str,
    queue: str,
    max_jobs: int,
    env: dict[str, str],
    log_path: Path,
) -> Worker:
    """``python -m sync_worker.main`` on ``queue``, once its ``/readyz`` answers 200."""
    port = free_port()
    command = [
        *(str(VENV_BIN / "python"), "-m", "sync_worker.main", "--queue", queue),
        *("--max-jobs", str(max_jobs)),
        # Its health server: /readyz says when it runs, /metrics what it did.
        *("--http-host", "127.0.0.1", "--http-port", str(port)),
    ]
    ready_url = f"http://127.0.0.1:{port}/readyz"
    started = stack.enter_context(
        server(name, command, env=env, ready_url=ready_url, log_path=log_path)
    )
    return Worker(started, port)


def drop_queue(redis_url: str, queue: str, link_ids: Collection[str]) -> None:
    """Delete one run's arq keys: its queue, and the job records and results of its jobs."""
    client = redis.Redis.from_url(redis_url)
    try:
        members = cast(list[bytes], client.zrange(queue, 0, -1))
        prefixes = (job_key_prefix, retry_key_prefix, in_progress_key_prefix, result_key_prefix)
        keys: list[str | bytes] = [queue, queue + health_check_key_suffix]
        keys += [prefix + member.decode() for member in members for prefix in prefixes]
        # Refresh job ids are upstream-refresh:<link id>:<expiry>:<failures>.
        for key in client.scan_iter(match="arq:*:upstream-refresh:*", count=1000):
            if key.decode().split(":")[3] in link_ids:
                keys.append(key)
        # Periodic job ids name their queue.
        keys += list(client.scan_iter(match=f"arq:*:periodic:{queue}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def delete_keys(redis_url: str, keys: list[str]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*keys)
    finally:
        client.close()
