"""Parameters that made the broker answer 500, found by fuzzing it against its OpenAPI document
(tests/e2e/test_api_fuzzing.py): each now gets the documented 4xx.

PostgreSQL, where most of them failed: its text cannot hold a NUL, and the driver refuses to
send one, so a NUL reaching a query was a server error instead of a bad value.
"""

from __future__ import annotations

import base64
import json

import httpx2
import pytest

from tests.support.accounts import Admin, corp_profile, sign_in

pytestmark = pytest.mark.integration

NUL = "a\x00b"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/admin/oauth2/users", {"provider": NUL}),
        ("/admin/oauth2/users", {"email": NUL}),
        ("/admin/oauth2/tokens", {"provider": NUL}),
        ("/admin/oauth2/tokens", {"client": NUL}),
        ("/admin/oauth2/audit", {"actor": NUL}),
        ("/admin/oauth2/audit", {"action": NUL}),
        ("/admin/oauth2/audit", {"subject": NUL}),
        # The export checks its filters before its download starts (no broken stream).
        ("/admin/oauth2/audit", {"subject": NUL, "format": "csv"}),
    ],
)
async def test_a_nul_in_an_admin_filter_is_a_bad_value_not_a_server_error(
    admin: Admin, path: str, query: dict[str, str]
) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get(path, params=query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"{next(iter(query))} must not contain NUL",
    }


async def test_a_provider_id_with_a_nul_is_never_linked(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    _runtime, broker, admin_headers, _admin_id = admin
    _subject, headers = await sign_in(broker, idp)
    user_id = (await corp_profile(broker, headers))["user"]["id"]
    unlink = await broker.delete("/auth/oauth2/links/a%00b", headers=headers)
    own_sync = await broker.post(
        "/auth/oauth2/profile/sync", params={"provider": NUL}, headers=headers
    )
    admin_sync = await broker.post(
        f"/admin/oauth2/users/{user_id}/sync", params={"provider": NUL}, headers=admin_headers
    )
    for response in (unlink, own_sync, admin_sync):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "invalid_request"
    # The link is there all along.
    assert [p["provider"] for p in (await corp_profile(broker, headers))["profiles"]] == ["corp"]


def _cursor(at: str, row_id: str) -> str:
    raw = json.dumps([at, row_id]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


BEFORE_YEAR_1 = "0001-01-01T00:00:00+01:00"  # 0000-12-31T23:00:00Z
AFTER_9999 = "9999-12-31T23:59:59-01:00"  # 10000-01-01T00:59:59Z
SOME_ID = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/admin/oauth2/users", {"last_login_after": BEFORE_YEAR_1}),
        ("/admin/oauth2/users", {"last_login_before": AFTER_9999}),
        ("/admin/oauth2/audit", {"after": BEFORE_YEAR_1}),
        ("/admin/oauth2/audit", {"before": AFTER_9999, "format": "jsonl"}),
        ("/admin/oauth2/users", {"cursor": _cursor(BEFORE_YEAR_1, SOME_ID)}),
        ("/admin/oauth2/tokens", {"cursor": _cursor(AFTER_9999, SOME_ID)}),
    ],
)
async def test_an_instant_outside_years_1_to_9999_in_utc_is_a_bad_value(
    admin: Admin, path: str, query: dict[str, str]
) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get(path, params=query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_stats_ending_on_the_first_days_there_are_start_on_day_one(admin: Admin) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get("/admin/oauth2/stats", params={"to": "0001-01-05"}, headers=headers)
    assert response.status_code == 200, response.text
    assert (response.json()["from"], response.json()["to"]) == ("0001-01-01", "0001-01-05")


@pytest.mark.parametrize("row_id", [str(2**63), "9" * 40])
async def test_an_audit_cursor_past_any_row_id_is_not_one_the_listing_returned(
    admin: Admin, row_id: str
) -> None:
    _runtime, broker, headers, _admin_id = admin
    cursor = _cursor("2026-12-01T00:00:00+00:00", row_id)
    response = await broker.get("/admin/oauth2/audit", params={"cursor": cursor}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "cursor is not one this listing returned",
    }
