"""``/admin/oauth2/users``: who may call it, the listing's pages and filters, disable and enable."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest

from tests.support.accounts import Admin, audit_rows, corp_profile, sign_in
from tests.support.flows import login, refresh
from tests.support.jwts import session_of

pytestmark = pytest.mark.integration

ENDPOINTS = [
    ("GET", "/admin/oauth2/users"),
    ("POST", "/admin/oauth2/users/{user}/disable"),
    ("POST", "/admin/oauth2/users/{user}/enable"),
    ("POST", "/admin/oauth2/users/{user}/sync"),
    ("GET", "/admin/oauth2/tokens"),
    ("DELETE", "/admin/oauth2/tokens/{token}"),
    ("GET", "/admin/oauth2/stats"),
    ("GET", "/admin/oauth2/audit"),
    ("GET", "/admin/oauth2/providers"),
    ("GET", "/admin/oauth2/providers/corp"),
    ("PATCH", "/admin/oauth2/providers/corp"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_each_admin_endpoint_needs_a_token_and_the_admin_role(
    admin: Admin, idp: httpx2.AsyncClient, method: str, path: str
) -> None:
    _runtime, broker, _headers, _admin_id = admin
    _subject, user_headers = await sign_in(broker, idp)
    user_id = (await corp_profile(broker, user_headers))["user"]["id"]
    session_id = str(session_of(user_headers["Authorization"].removeprefix("Bearer ")))
    url = path.format(user=user_id, token=session_id)
    anonymous = await broker.request(method, url)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_token"
    refused = await broker.request(method, url, headers=user_headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
    # The non-admin changed nothing: the user is enabled and their session is live.
    profile = await corp_profile(broker, user_headers)
    assert profile["user"]["id"] == user_id
    assert (await broker.get("/userinfo", headers=user_headers)).status_code == 200


async def _listing(broker: httpx2.AsyncClient, headers: dict[str, str], **query: Any) -> Any:
    response = await broker.get("/admin/oauth2/users", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_listing_pages_newest_first_without_repeats_and_filters(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    _runtime, broker, headers, _admin_id = admin
    marker = uuid.uuid4().hex[:8]
    made = []
    for index in range(5):
        _subject, user_headers = await sign_in(
            broker, idp, email=f"{marker}-{index}@corp.example", email_verified=index % 2 == 0
        )
        made.append((await corp_profile(broker, user_headers))["user"]["id"])

    seen: list[str] = []
    page = await _listing(broker, headers, email=marker, limit="2")
    while True:
        assert len(page["users"]) <= 2
        seen += [user["id"] for user in page["users"]]
        if page["next_cursor"] is None:
            break
        page = await _listing(broker, headers, email=marker, limit="2", cursor=page["next_cursor"])
    assert seen == list(reversed(made))  # newest first, each exactly once
    one = await _listing(broker, headers, user=made[2])
    assert [user["id"] for user in one["users"]] == [made[2]]

    (first,) = (await _listing(broker, headers, email=f"{marker}-0@"))["users"]
    assert first["email"] == f"{marker}-0@corp.example"
    assert first["email_verified"] is True
    assert first["status"] == "active"
    assert first["active_sessions"] == 1
    assert first["last_login_at"].endswith("Z")
    (link,) = first["links"]
    assert link["provider"] == "corp" and link["email_verified"] is True
    assert (await _listing(broker, headers, email=marker.upper()))["users"]  # case-insensitive
    assert (await _listing(broker, headers, email=marker, provider="dev"))["users"] == []
    assert len((await _listing(broker, headers, email=marker, provider="corp"))["users"]) == 5
    future = "2999-01-01T00:00:00Z"
    assert (await _listing(broker, headers, email=marker, last_login_after=future))["users"] == []
    assert (
        len((await _listing(broker, headers, email=marker, last_login_before=future))["users"]) == 5
    )
    # Wildcards in the filter are literal.
    assert (await _listing(broker, headers, email="%"))["users"] == []


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"status": "deleted"},
        {"cursor": "not-a-cursor"},
        {"last_login_after": "yesterday"},
        {"last_login_after": "2026-01-01T00:00:00"},  # no offset
        {"email": ""},
        {"sort": "email"},
        {"user": "someone@corp.example"},
    ],
)
async def test_bad_listing_parameters_get_invalid_request(
    admin: Admin, query: dict[str, str]
) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get("/admin/oauth2/users", params=query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_disabling_revokes_sessions_refuses_refresh_and_is_audited_as_the_admin(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, admin_id = admin
    subject, user_headers = await sign_in(broker, idp)
    profile = await corp_profile(broker, user_headers)
    user_id = profile["user"]["id"]
    tokens = await _tokens_of_a_second_session(broker, idp, subject)

    disabled = await broker.post(f"/admin/oauth2/users/{user_id}/disable", headers=headers)
    assert disabled.status_code == 200, disabled.text
    body = disabled.json()
    assert body["status"] == "disabled" and body["changed"] is True
    assert len(body["revoked_sessions"]) == 2
    assert (await broker.get("/userinfo", headers=user_headers)).status_code == 401
    refused = await refresh(broker, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    (event,) = await audit_rows(runtime, user_id, "user.disabled")
    assert event.actor == f"user:{admin_id}"
    listed = await _listing(broker, headers, status="disabled", email=subject)
    assert [user["id"] for user in listed["users"]] == [user_id]
    assert listed["users"][0]["active_sessions"] == 0

    again = await broker.post(f"/admin/oauth2/users/{user_id}/disable", headers=headers)
    assert again.json()["changed"] is False
    assert len(await audit_rows(runtime, user_id, "user.disabled")) == 1

    enabled = await broker.post(f"/admin/oauth2/users/{user_id}/enable", headers=headers)
    assert enabled.json() == {
        "id": user_id,
        "status": "active",
        "changed": True,
        "revoked_sessions": [],
    }
    (event,) = await audit_rows(runtime, user_id, "user.enabled")
    assert event.actor == f"user:{admin_id}"
    _again, headers_after = await sign_in(broker, idp, sub=subject)  # signs in again
    assert (await broker.get("/userinfo", headers=headers_after)).status_code == 200


async def _tokens_of_a_second_session(
    broker: httpx2.AsyncClient, idp: httpx2.AsyncClient, subject: str
) -> Any:
    await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    return await login(broker)


async def test_unknown_users_and_self_disable(admin: Admin) -> None:
    _runtime, broker, headers, admin_id = admin
    for path in (f"/admin/oauth2/users/{uuid.uuid4()}/disable", "/admin/oauth2/users/x/enable"):
        response = await broker.post(path, headers=headers)
        assert response.status_code == 404
    own = await broker.post(f"/admin/oauth2/users/{admin_id}/disable", headers=headers)
    assert own.status_code == 400
    assert "own account" in own.json()["error_description"]
