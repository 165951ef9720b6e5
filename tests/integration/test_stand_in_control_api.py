"""The control API every stand-in shares (standins/kit/control.py) answers the same on each."""

from __future__ import annotations

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
