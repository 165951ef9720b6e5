"""What operators rely on, over real HTTP against a ``broker serve`` process: the probes, the
Prometheus metrics, and one structured access line per request carrying its request id.

The readiness test runs the broker against PostgreSQL through a TCP proxy that the test stops
and starts again (the database becoming unreachable and coming back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
import pytest
from broker.app import create_app
from joserfc import jwt
from joserfc.jwk import KeySet
from shared.crypto.keyring import Keyring
from shared.db.migrate import SchemaRevisions, head_revision, upgrade_to_head_async
from shared.runtime import build_runtime
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.databases import fresh_database, postgres_server_url
from tests.support.flows import authorize, exchange, refresh
from tests.support.processes import (
    RunningProcess,
    broker_process,
    broker_serve_command,
    free_port,
)
from tests.support.tcp_proxy import CuttingProxy, cutting_proxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REDIRECT_URI = "http://127.0.0.1:3000/callback"


def _write_config(path: Path) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            providers:
              - id: dev
                type: dev
            clients:
              - id: web
                redirect_uris: [{REDIRECT_URI}]
            """
        )
    )


@contextlib.asynccontextmanager
async def _broker_process(
    tmp_path: Path, database_url: str, keyring: Keyring
) -> AsyncIterator[tuple[str, RunningProcess]]:
    """``broker serve`` on a free port; entered in a thread, so this loop keeps serving (the
    proxy of the readiness test runs on it while the broker connects)."""
    config = tmp_path / "broker.yaml"
    _write_config(config)
    manager = broker_process(
        config,
        database_url=database_url,
        keyring=keyring,
        ready_path="/healthz",
        cwd=str(ROOT),
        BROKER_DB_POOL_SIZE="3",
        BROKER_LOG_FORMAT="json",
    )
    broker = await asyncio.to_thread(manager.__enter__)
    try:
        yield broker.issuer, broker.process
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def _ready(http: httpx2.AsyncClient, issuer: str) -> httpx2.Response:
    return await http.get(f"{issuer}/readyz", timeout=5.0)


async def _until_ready(http: httpx2.AsyncClient, issuer: str, seconds: float) -> httpx2.Response:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await _ready(http, issuer)
        if response.status_code == 200 or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.2)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[CuttingProxy]:
    url = make_url(database_url)
    async with cutting_proxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


async def test_readiness_fails_while_the_database_is_unreachable_and_recovers(
    tmp_path, database_url, keyring, proxy
):
    through_proxy = (
        make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)
    )
    async with (
        _broker_process(tmp_path, through_proxy, keyring) as (issuer, _process),
        httpx2.AsyncClient() as http,
    ):
        ready = await _until_ready(http, issuer, 10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"keys": True, "database": True, "schema": "current", "shutting_down": False},
        }

        await proxy.stop()
        away = await _ready(http, issuer)
        assert away.status_code == 503
        assert away.json()["status"] == "not_ready"
        assert away.json()["checks"]["database"] is False
        assert (await http.get(f"{issuer}/healthz")).status_code == 200  # alive all the same

        await proxy.start()
        back = await _until_ready(http, issuer, 10)
        assert back.status_code == 200, back.text


def _access_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for raw in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(raw)
            if isinstance(entry, dict) and entry.get("event") == "http.request":
                lines.append(entry)
    return lines


def _samples(exposition: str, name: str) -> dict[str, float]:
    """``{'{labels}': value}`` of one metric in the Prometheus text format."""
    found = {}
    for line in exposition.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            found[series[len(name) :]] = float(value)
    return found


def _one(samples: dict[str, float], **labels: str) -> float:
    matching = [
        value
        for series, value in samples.items()
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items())
    ]
    assert len(matching) == 1, (labels, samples)
    return matching[0]


async def test_metrics_count_logins_grants_and_reuse_and_each_request_logs_one_line(
    tmp_path, database_url, keyring
):
    async with (
        _broker_process(tmp_path, database_url, keyring) as (issuer, process),
        httpx2.AsyncClient(base_url=issuer) as broker,
    ):
        result = await authorize(broker, provider="dev")
        tokens = (await exchange(broker, result)).json()
        jwks = KeySet.import_key_set((await broker.get("/.well-known/jwks.json")).json())
        subject = jwt.decode(tokens["access_token"], jwks).claims["sub"]
        rotated = await refresh(broker, tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        onward = await refresh(broker, rotated.json()["refresh_token"])
        assert onward.status_code == 200, onward.text
        replay = await refresh(  # its successor was used: a replay
            broker, tokens["refresh_token"], headers={"X-Request-ID": "lb-7f3a.42"}
        )
        assert replay.json()["error"] == "invalid_grant"
        assert replay.headers["x-request-id"] == "lb-7f3a.42"
        # A credential is never taken as a request id (it would be logged).
        jwt_like = await broker.get(
            "/userinfo", headers={"X-Request-ID": tokens["access_token"][:60]}
        )
        assert jwt_like.headers["x-request-id"] != tokens["access_token"][:60]
        assert (await broker.get("/no/such/page")).status_code == 404

        scrape = await broker.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        body = scrape.text

    logins = _samples(body, "broker_logins_total")
    assert _one(logins, provider="dev", client="web", outcome="success") == 1
    grants = _samples(body, "broker_token_grants_total")
    assert _one(grants, grant_type="authorization_code", client="web", provider="dev") == 1
    assert _one(grants, grant_type="refresh_token", outcome="success", provider="dev") == 2
    assert _one(grants, grant_type="refresh_token", outcome="invalid_grant") == 1
    reuse = _samples(body, "broker_refresh_token_reuse_detected_total")
    assert _one(reuse, client="web") == 1
    requests = _samples(body, "broker_http_requests_total")
    assert _one(requests, method="POST", route="/token", status="200") == 3
    assert _one(requests, method="POST", route="/token", status="400") == 1
    assert _one(requests, route="unmatched", status="404") == 1  # raw paths never become labels
    assert not any("/no/such/page" in series for series in requests)
    latency = _samples(body, "broker_http_request_duration_seconds_count")
    assert _one(latency, method="POST", route="/token") == 4
    pools = _samples(body, "broker_db_pool_connections")
    assert _one(pools, pool="hot_path", state="idle") >= 1
    assert _one(pools, pool="orm", state="in_use") >= 0
    assert _one(_samples(body, "broker_db_pool_max_connections"), pool="hot_path") == 3
    # One refresh at a time: no neighbour to share a statement with, so each went alone.
    assert _samples(body, "broker_refresh_rotation_groups_total") == {"": 0.0}
    rotations = _samples(body, "broker_refresh_rotations_total")
    assert (_one(rotations, path="alone"), _one(rotations, path="group")) == (3, 0)

    lines = _access_lines(process.read_log())
    token_lines = [line for line in lines if line["route"] == "/token"]
    assert len(token_lines) == 4
    for line in token_lines:
        assert line["method"] == "POST"
        assert line["client_id"] == "web"
        assert line["level"] == "info"
        assert isinstance(line["duration_ms"], float)
        assert line["request_id"]
    assert [line["status"] for line in token_lines] == [200, 200, 200, 400]
    assert {line["user_id"] for line in token_lines[:3]} == {subject}
    assert token_lines[3]["request_id"] == "lb-7f3a.42"
    assert len({line["request_id"] for line in lines}) == len(lines)  # one id per request
    assert not any(line["route"] in ("/metrics", "/healthz", "/readyz") for line in lines)
    log = process.read_log()
    for secret in (
        tokens["access_token"],
        tokens["refresh_token"],
        rotated.json()["refresh_token"],
        onward.json()["refresh_token"],
    ):
        assert secret not in log


@pytest.fixture
def schema_database() -> Iterator[str]:
    with postgres_server_url() as server, fresh_database(server) as url:
        yield url


async def test_readiness_waits_for_this_releases_migrations_but_not_for_a_newer_release(
    schema_database, upstream_idp, keyring
):
    await upgrade_to_head_async(schema_database)
    runtime = build_runtime(broker_settings(schema_database, upstream_idp, keyring))
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as broker:
            assert (await broker.get("/readyz")).status_code == 200
            revisions = SchemaRevisions.load()
            previous = next(rev for rev in sorted(revisions.known) if rev != head_revision())
            for version, status, schema in (
                (previous, 503, "behind"),  # this release's migrations have not run yet
                ("9999_from_a_newer_release", 200, "ahead"),  # a newer release migrated first
                (head_revision(), 200, "current"),
            ):
                async with runtime.engine.begin() as connection:
                    await connection.execute(
                        text("UPDATE alembic_version SET version_num = :v"), {"v": version}
                    )
                answer = await broker.get("/readyz")
                assert answer.status_code == status, (version, answer.text)
                assert answer.json()["checks"]["schema"] == schema
    finally:
        await runtime.stop()


async def test_sigterm_drains_a_request_in_flight_then_the_process_exits(
    tmp_path, database_url, keyring
):
    async with (
        _broker_process(tmp_path, database_url, keyring) as (issuer, process),
        httpx2.AsyncClient(base_url=issuer) as broker,
    ):
        tokens = (await exchange(broker, await authorize(broker, provider="dev"))).json()
        body = urlencode(
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "web",
            }
        ).encode()
        port = urlsplit(issuer).port or 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        await asyncio.sleep(0.3)  # the broker has the headers: the request is in flight

        process.process.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            probe.close()
            return False

        # No new connections once shutdown began (how soon depends on the machine's load).
        await eventually(refused, within=10, interval=0.05)
        writer.write(body[10:])
        await writer.drain()
        # The head, then the body it announces: one read may return the head alone.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, _, fields = head.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", head[:300]
        length = re.search(rb"(?im)^content-length:\s*(\d+)\r$", fields)
        assert length is not None, head[:300]
        answer = await asyncio.wait_for(reader.readexactly(int(length[1])), 10)
        writer.close()
        assert json.loads(answer)["refresh_token"]
        # uvicorn shuts down cleanly, then exits by re-raising the signal (status 143 in a pod).
        assert await asyncio.to_thread(process.process.wait, 15) == -signal.SIGTERM
        assert "Application shutdown complete" in process.read_log()


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("BROKER_DB_POOL_SIZE", "many", "BROKER_DB_POOL_SIZE"),
        ("BROKER_CONFIG", "/nonexistent/broker.yaml", "BROKER_CONFIG"),
        ("BROKER_ISSUER", "https://login.example.com", "BROKER_ENCRYPTION_KEYS"),
    ],
)
def test_a_configuration_error_stops_startup_with_one_line_naming_the_setting(
    tmp_path, variable, value, named
):
    env = {key: item for key, item in os.environ.items() if not key.startswith("BROKER_")} | {
        "BROKER_VAR_DIR": str(tmp_path),
        variable: value,
    }
    command = broker_serve_command(free_port())
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("broker: configuration error: ")
    assert named in lines[0]
    assert "Traceback" not in done.stderr
