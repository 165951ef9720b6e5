"""Request bodies over the cap, sent over real HTTP to a real ``broker serve`` process.

Every endpoint that takes a body answers a 50 MB one with 413 and the JSON error, whether the
body declares its length or comes chunked; the process's memory does not grow with them; the
413 is counted and logged like any answer. In-process: the cap is the setting.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
from shared.crypto.keyring import Keyring

from tests.conftest import ROOT, broker_settings
from tests.support.processes import RunningProcess, dev_broker_process
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration

CAP = 64 * 1024  # the default BROKER_MAX_BODY_BYTES
FIFTY_MB = 50_000_000
CHUNK = b"a" * 1_000_000
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
BODY_ENDPOINTS = [
    ("POST", "/token", FORM),
    ("POST", "/authorize", FORM),
    ("POST", "/userinfo", FORM),
    ("POST", "/auth/oauth2/dev/dev-login", FORM),
    ("PUT", "/auth/oauth2/profile", JSON),
    ("POST", "/auth/oauth2/refresh", JSON),
    ("POST", "/admin/oauth2/users/00000000-0000-4000-8000-000000000000/disable", JSON),
]


class Broker:
    def __init__(self, url: str, process: RunningProcess) -> None:
        self.url = url
        self.pid = process.process.pid
        self.read_log = process.read_log


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, keyring: Keyring
) -> Iterator[Broker]:
    """One ``broker serve`` process (uvicorn) with the default body cap."""
    directory = tmp_path_factory.mktemp("body-limits")
    with dev_broker_process(
        directory, database_url=database_url, keyring=keyring, cwd=str(ROOT)
    ) as (url, process):
        yield Broker(url, process)


@pytest.fixture
async def http(served: Broker) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=served.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def fifty_mb() -> bytes:
    return CHUNK * (FIFTY_MB // len(CHUNK))


async def chunked() -> AsyncIterator[bytes]:
    """50 MB without a Content-Length: httpx sends it with Transfer-Encoding: chunked."""
    for _ in range(FIFTY_MB // len(CHUNK)):
        yield CHUNK


async def upload(
    http: httpx2.AsyncClient, endpoint: tuple[str, str, str], body: bytes | None
) -> httpx2.Response:
    """``body`` with its Content-Length, or (None) the chunked stream."""
    method, path, content_type = endpoint
    return await http.request(
        method,
        path,
        content=body if body is not None else chunked(),
        headers={"content-type": content_type},
    )


def assert_too_large(response: httpx2.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"the request body is larger than {CAP} bytes",
    }
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=[path for _, path, _ in BODY_ENDPOINTS])
async def test_a_50_mb_body_with_its_content_length_gets_413(http, fifty_mb, endpoint):
    assert_too_large(await upload(http, endpoint, fifty_mb))


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=[path for _, path, _ in BODY_ENDPOINTS])
async def test_a_50_mb_chunked_body_gets_413(http, endpoint):
    assert_too_large(await upload(http, endpoint, None))


async def test_the_connection_stays_usable_after_a_413(http, fifty_mb):
    assert_too_large(await upload(http, BODY_ENDPOINTS[0], fifty_mb))
    assert (await http.get("/healthz")).status_code == 200


async def test_the_413_is_counted_and_logged_like_any_answer(served, http):
    method, path, content_type = BODY_ENDPOINTS[0]
    response = await http.request(
        method,
        path,
        content=chunked(),
        headers={"content-type": content_type, "x-request-id": "body-limit-check.1"},
    )
    assert_too_large(response)
    assert response.headers["x-request-id"] == "body-limit-check.1"
    scrape = (await http.get("/metrics")).text
    assert any(
        line.startswith("broker_http_requests_total") and 'status="413"' in line
        for line in scrape.splitlines()
    )
    lines = [json.loads(line) for line in served.read_log().splitlines() if line.startswith("{")]
    (access,) = [line for line in lines if line.get("request_id") == "body-limit-check.1"]
    assert access["event"] == "http.request"
    assert access["status"] == 413


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak since the last reset), in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0])
    return values


def reset_peak(pid: int) -> None:
    """Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM to the current resident size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def test_fifty_mb_uploads_do_not_grow_the_process_memory(served, http, fifty_mb):
    token, refresh = BODY_ENDPOINTS[0], BODY_ENDPOINTS[5]
    for body in (fifty_mb, None):  # warm up: first-request allocations are not what we measure
        assert_too_large(await upload(http, token, body))
    reset_peak(served.pid)
    before = memory_kib(served.pid)
    for endpoint in (token, refresh, token):
        assert_too_large(await upload(http, endpoint, fifty_mb))
        assert_too_large(await upload(http, endpoint, None))
    after = memory_kib(served.pid)
    # Reading even one of those bodies would hold 50 MB at once: the peak (VmHWM) would show it.
    limit = 10 * 1024
    assert after["VmRSS"] - before["VmRSS"] < limit, (before, after)
    assert after["VmHWM"] - before["VmHWM"] < limit, (before, after)


async def test_the_cap_is_the_max_body_bytes_setting(database_url, upstream_idp, keyring):
    settings = broker_settings(database_url, upstream_idp, keyring, max_body_bytes=2048)
    async with running_broker(settings) as (_runtime, broker):
        form = {"content-type": FORM}
        over = await broker.post("/token", content=b"a" * 2049, headers=form)
        assert over.status_code == 413
        assert over.json()["error_description"] == "the request body is larger than 2048 bytes"
        grant = b"client_id=web&grant_type=refresh_token&refresh_token="
        at_cap = await broker.post("/token", content=grant.ljust(2048, b"a"), headers=form)
        assert at_cap.status_code == 400  # read, parsed and run: an unknown refresh token
        assert at_cap.json()["error"] == "invalid_grant"


async def test_bodies_up_to_the_cap_are_read_by_the_endpoints_themselves(broker):
    """One cap, the setting: no endpoint refuses a body under it for its size (the form and
    JSON parsers used to stop at 16 KiB after reading it all)."""
    pad = {f"pad{n}": "a" * 2000 for n in range(20)}  # 40 KB, each parameter under 2048
    grant = {"client_id": "web", "grant_type": "refresh_token", "refresh_token": "x"}
    form = await broker.post("/token", data={**grant, **pad})
    assert len(form.request.content) > 32 * 1024
    assert form.status_code == 400
    assert form.json()["error"] == "invalid_grant"
    document = {"client_id": "web", "refresh_token": "x", "pad": "a" * 40_000}
    refreshed = await broker.post("/auth/oauth2/refresh", json=document)
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
