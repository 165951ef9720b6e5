"""The control API every stand-in shares (standins/kit/control.py) answers the same on each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx2
import pytest

pytestmark = pytest.mark.integration

# Each stand-in's fixture, and the key its users are changed by.
STAND_INS = {"upstream_idp": "sub", "github_upstream": "id", "microsoft_upstream": "oid"}


@pytest.fixture(params=list(STAND_INS))
def stand_in(request: pytest.FixtureRequest) -> str:
    """The name of the stand-in's fixture in tests/conftest.py."""
    name: str = request.param
    return name


@pytest.fixture
def key_name(stand_in: str) -> str:
    return STAND_INS[stand_in]


@pytest.fixture
async def control(
    request: pytest.FixtureRequest, stand_in: str
) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=request.getfixturevalue(stand_in)) as client:
        assert (await client.post("/_control/reset")).status_code == 200
        yield client


@pytest.mark.parametrize("script", ["refresh_faults", "code_faults"])
async def test_fault_scripts_are_checked_kept_in_order_and_cleared(
    control: httpx2.AsyncClient, script: str
) -> None:
    path = f"/_control/{script}"
    for body in (
        {"mode": "explode"},
        {"mode": "hang", "count": 0},
        {"mode": "slow", "seconds": -1},
    ):
        assert (await control.post(path, json=body)).status_code == 400, body
    await control.post(path, json={"mode": "retry_after", "seconds": 2})
    both = await control.post(path, json={"mode": "invalid_response", "count": -1})
    assert both.json() == {
        "faults": [
            {"mode": "retry_after", "count": 1, "seconds": 2.0},
            {"mode": "invalid_response", "count": -1, "seconds": 1.0},
        ]
    }
    assert (await control.post(path, json={"mode": "none"})).json() == {"faults": []}
    await control.post(path, json={"mode": "unavailable"})
    await control.post("/_control/reset")
    after_reset = await control.post(path, json={"mode": "hang"})
    assert after_reset.json() == {"faults": [{"mode": "hang", "count": 1, "seconds": 1.0}]}


async def test_a_profile_change_accumulates_and_never_changes_the_key(
    control: httpx2.AsyncClient, key_name: str
) -> None:
    first = await control.post("/_control/users/42", json={"name": "New Name"})
    assert first.json() == {key_name: "42", "changes": {"name": "New Name"}}
    second = await control.post("/_control/users/42", json={key_name: "42", "email": None})
    assert second.json()["changes"] == {"name": "New Name", "email": None}
    assert (await control.post("/_control/users/42", json={key_name: "43"})).status_code == 400
    assert (await control.post("/_control/users/42", json=["name"])).status_code == 400
    assert (await control.get("/_control/refresh_log")).json() == {"refreshes": [], "counts": {}}


# A provider endpoint the outage middleware plays on, and the token endpoint (its fault
# scripts play it, so each refresh presentation is still logged).
OUTAGE_PATHS = {
    "upstream_idp": ("/.well-known/openid-configuration", "/token"),
    "github_upstream": ("/api/v3/meta", "/login/oauth/access_token"),
    "microsoft_upstream": (
        "/common/v2.0/.well-known/openid-configuration",
        "/common/oauth2/v2.0/token",
    ),
}


async def test_an_outage_fails_every_endpoint_but_control_logs_refreshes_and_ends(
    control: httpx2.AsyncClient, stand_in: str
) -> None:
    page, token = OUTAGE_PATHS[stand_in]
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": "rt-during-outage",
        "client_id": "broker",
        "client_secret": "broker-secret",
    }
    for body in (
        {"mode": "explode"},
        {"mode": "slow", "delay": -1},
        {"mode": "slow", "duration": "x"},
    ):
        assert (await control.post("/_control/outage", json=body)).status_code == 400, body
    started = await control.post("/_control/outage", json={"mode": "unavailable"})
    assert started.json() == {"mode": "unavailable", "delay": 2.0, "remaining": None}
    assert (await control.get(page)).status_code == 503
    assert (await control.post(token, data=refresh)).status_code == 503
    log = (await control.get("/_control/refresh_log")).json()["refreshes"]
    assert [(entry["refresh_token"], entry["fault"], entry["outcome"]) for entry in log] == [
        ("rt-during-outage", "unavailable", "unavailable")
    ]
    slow = await control.post("/_control/outage", json={"mode": "slow", "delay": 0.3})
    assert slow.json()["mode"] == "slow"
    began = time.monotonic()
    assert (await control.get(page)).status_code == 200
    assert time.monotonic() - began >= 0.3
    await control.post("/_control/outage", json={"mode": "unavailable", "duration": 0.2})
    assert (await control.get(page)).status_code == 503
    await asyncio.sleep(0.3)
    assert (await control.get(page)).status_code == 200  # it ended by itself
    await control.post("/_control/outage", json={"mode": "unavailable"})
    await control.post("/_control/reset")
    assert (await control.get(page)).status_code == 200
    ended = await control.post("/_control/outage", json={"mode": "none"})
    assert ended.json() == {"mode": "none", "delay": 0.0, "remaining": None}
