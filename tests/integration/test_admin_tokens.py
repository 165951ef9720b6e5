"""``/admin/oauth2/tokens``: sessions and upstream links with their state, never a secret;
revoking either, audited as the admin."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx2
import pytest
from shared.clock import rfc3339
from shared.db.tables import LINKS, REFRESH_TOKENS
from sqlalchemy import select, update

from tests.support.accounts import Admin, audit_rows, corp_profile, sign_in
from tests.support.flows import login, refresh

pytestmark = pytest.mark.integration


async def _tokens(broker: httpx2.AsyncClient, headers: dict[str, str], **query: Any) -> Any:
    response = await broker.get("/admin/oauth2/tokens", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _user_with_two_sessions(
    broker: httpx2.AsyncClient, idp: httpx2.AsyncClient
) -> tuple[str, list[dict[str, Any]]]:
    subject, headers = await sign_in(broker, idp)
    user_id = (await corp_profile(broker, headers))["user"]["id"]
    await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    second = await login(broker)
    return user_id, [{"headers": headers}, second]


async def test_lists_a_users_sessions_and_upstream_link_without_secrets(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    _runtime, broker, headers, _admin_id = admin
    user_id, (_first, second) = await _user_with_two_sessions(broker, idp)
    response = await broker.get("/admin/oauth2/tokens", params={"user": user_id}, headers=headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["tokens"]
    kinds = sorted(token["kind"] for token in listed)
    assert kinds == ["session", "session", "upstream"]
    for token in listed:
        assert token["user_id"] == user_id and token["provider"] == "corp"
        assert token["state"] == "active"
    sessions = [token for token in listed if token["kind"] == "session"]
    assert {session["client_id"] for session in sessions} == {"web"}
    assert all(session["expires_at"] > session["created_at"] for session in sessions)
    (link,) = [token for token in listed if token["kind"] == "upstream"]
    assert link["has_refresh_token"] is True
    # Newest first: the second sign-in's session comes before the first's.
    created = [token["created_at"] for token in listed]
    assert created == sorted(created, reverse=True)
    # No token value, hash or ciphertext anywhere in the answer.
    for secret in (second["access_token"], second["refresh_token"], second["id_token"]):
        assert secret not in response.text
    assert "enc" not in response.text and "hash" not in response.text

    only_upstream = await _tokens(broker, headers, user=user_id, kind="upstream")
    assert [token["kind"] for token in only_upstream["tokens"]] == ["upstream"]
    by_client = await _tokens(broker, headers, user=user_id, client="web")
    assert [token["kind"] for token in by_client["tokens"]] == ["session", "session"]
    assert (await _tokens(broker, headers, user=user_id, provider="dev"))["tokens"] == []


async def test_pages_walk_every_token_once(admin: Admin, idp: httpx2.AsyncClient) -> None:
    _runtime, broker, headers, _admin_id = admin
    user_id, _sessions = await _user_with_two_sessions(broker, idp)
    seen: list[str] = []
    cursor = None
    while True:
        query = {"user": user_id, "limit": "1", **({"cursor": cursor} if cursor else {})}
        page = await _tokens(broker, headers, **query)
        seen += [token["id"] for token in page["tokens"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3 and len(set(seen)) == 3


async def test_revoking_a_session_ends_its_refresh_token_and_is_audited(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, admin_id = admin
    user_id, (_first, second) = await _user_with_two_sessions(broker, idp)
    sessions = (await _tokens(broker, headers, user=user_id, kind="session"))["tokens"]
    newest = sessions[0]["id"]

    revoked = await broker.delete(f"/admin/oauth2/tokens/{newest}", headers=headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {
        "id": newest,
        "kind": "session",
        "changed": True,
        "revoked_sessions": [newest],
    }
    refused = await refresh(broker, second["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    second_headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await broker.get("/userinfo", headers=second_headers)).status_code == 401
    (event,) = await audit_rows(runtime, user_id, "session.revoked")
    assert event.actor == f"user:{admin_id}"
    assert event.data == {"sid": newest, "reason": "admin_revoked"}

    states = {
        token["id"]: token["state"]
        for token in (await _tokens(broker, headers, user=user_id, kind="session"))["tokens"]
    }
    assert states[newest] == "revoked"
    assert list(states.values()).count("active") == 1
    filtered = await _tokens(broker, headers, user=user_id, state="revoked")
    assert [token["id"] for token in filtered["tokens"]] == [newest]

    again = await broker.delete(f"/admin/oauth2/tokens/{newest}", headers=headers)
    assert again.json()["changed"] is False
    assert len(await audit_rows(runtime, user_id, "session.revoked")) == 1


async def test_revoking_an_upstream_link_wipes_its_tokens_and_ends_its_sessions(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, admin_id = admin
    user_id, (_first, second) = await _user_with_two_sessions(broker, idp)
    (link,) = (await _tokens(broker, headers, user=user_id, kind="upstream"))["tokens"]

    revoked = await broker.delete(f"/admin/oauth2/tokens/{link['id']}", headers=headers)
    assert revoked.status_code == 200, revoked.text
    body = revoked.json()
    assert body["kind"] == "upstream" and body["changed"] is True
    assert len(body["revoked_sessions"]) == 2
    assert (await refresh(broker, second["refresh_token"])).json()["error"] == "invalid_grant"
    async with runtime.engine.connect() as connection:
        row = (
            await connection.execute(select(LINKS).where(LINKS.c.id == uuid.UUID(link["id"])))
        ).one()
    assert row.state == "revoked"
    assert (row.access_token_enc, row.refresh_token_enc, row.id_token_enc) == (None, None, None)
    (event,) = await audit_rows(runtime, user_id, "upstream_token.revoked")
    assert event.actor == f"user:{admin_id}"
    assert event.data["provider"] == "corp" and event.data["sessions_revoked"] == 2
    listed = await _tokens(broker, headers, user=user_id, kind="upstream", state="revoked")
    assert [token["id"] for token in listed["tokens"]] == [link["id"]]

    again = await broker.delete(f"/admin/oauth2/tokens/{link['id']}", headers=headers)
    assert again.json()["changed"] is False
    assert len(await audit_rows(runtime, user_id, "upstream_token.revoked")) == 1


async def test_expiring_and_expired_states_follow_the_current_refresh_token(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, _admin_id = admin
    user_id, _sessions = await _user_with_two_sessions(broker, idp)
    older, newer = reversed(
        [t["id"] for t in (await _tokens(broker, headers, user=user_id, kind="session"))["tokens"]]
    )
    now = runtime.clock.now()
    async with runtime.engine.begin() as connection:
        for session_id, expires_at in (
            (older, now - dt.timedelta(hours=1)),
            (newer, now + dt.timedelta(hours=2)),
        ):
            await connection.execute(
                update(REFRESH_TOKENS)
                .where(REFRESH_TOKENS.c.session_id == uuid.UUID(session_id))
                .values(expires_at=expires_at)
            )
        await connection.execute(
            update(LINKS)
            .where(LINKS.c.user_id == uuid.UUID(user_id))
            .values(refresh_expires_at=now + dt.timedelta(hours=3))
        )
    for state, expected in (
        ("expired", [older]),
        ("expiring", [newer]),
        ("active", []),
    ):
        listed = await _tokens(broker, headers, user=user_id, kind="session", state=state)
        assert [token["id"] for token in listed["tokens"]] == expected, state
    (link,) = (await _tokens(broker, headers, user=user_id, state="expiring", kind="upstream"))[
        "tokens"
    ]
    assert link["state"] == "expiring"
    assert (await _tokens(broker, headers, user=user_id, kind="upstream", state="active"))[
        "tokens"
    ] == []


async def _walk(broker: httpx2.AsyncClient, headers: dict[str, str], **query: Any) -> list[Any]:
    """Every page of a listing, one row a page, through its cursors."""
    rows: list[Any] = []
    cursor = None
    while True:
        page = await _tokens(
            broker, headers, limit="1", **query, **({"cursor": cursor} if cursor else {})
        )
        rows += page["tokens"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


async def test_expiring_and_expired_are_listed_by_when_they_end_nearest_to_now_first(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, _admin_id = admin
    user_id, (_first, second) = await _user_with_two_sessions(broker, idp)
    # The newer session rotates once: its first token is now a rotated one, kept for reuse
    # detection, and it is moved to end sooner than anything else. It must not count.
    rotated = await refresh(broker, second["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    newer, older = [
        t["id"] for t in (await _tokens(broker, headers, user=user_id, kind="session"))["tokens"]
    ]
    (link,) = (await _tokens(broker, headers, user=user_id, kind="upstream"))["tokens"]
    now = runtime.clock.now()

    async def end(older_at: dt.timedelta, link_at: dt.timedelta, newer_at: dt.timedelta) -> None:
        async with runtime.engine.begin() as connection:
            for session_id, at in ((older, older_at), (newer, newer_at)):
                await connection.execute(
                    update(REFRESH_TOKENS)
                    .where(
                        REFRESH_TOKENS.c.session_id == uuid.UUID(session_id),
                        REFRESH_TOKENS.c.used_at.is_(None),
                    )
                    .values(expires_at=now + at)
                )
            await connection.execute(
                update(REFRESH_TOKENS)
                .where(
                    REFRESH_TOKENS.c.session_id == uuid.UUID(newer),
                    REFRESH_TOKENS.c.used_at.is_not(None),
                )
                .values(expires_at=now + min(older_at, link_at, newer_at) - dt.timedelta(hours=1))
            )
            await connection.execute(
                update(LINKS)
                .where(LINKS.c.id == uuid.UUID(link["id"]))
                .values(refresh_expires_at=now + link_at)
            )

    hour = dt.timedelta(hours=1)
    await end(older_at=2 * hour, link_at=3 * hour, newer_at=5 * hour)
    expiring = await _tokens(broker, headers, user=user_id, state="expiring")
    assert [t["id"] for t in expiring["tokens"]] == [older, link["id"], newer]
    assert [t["state"] for t in expiring["tokens"]] == ["expiring"] * 3
    # The session's end is its current token's, never the rotated one's.
    assert expiring["tokens"][2]["expires_at"] == rfc3339(now + 5 * hour)
    paged = await _walk(broker, headers, user=user_id, state="expiring")
    assert [t["id"] for t in paged] == [older, link["id"], newer]
    sessions = await _walk(broker, headers, user=user_id, kind="session", state="expiring")
    assert [t["id"] for t in sessions] == [older, newer]

    await end(older_at=-5 * hour, link_at=-3 * hour, newer_at=-1 * hour)
    expired = await _walk(broker, headers, user=user_id, state="expired")
    assert [t["id"] for t in expired] == [newer, link["id"], older]
    assert [t["state"] for t in expired] == ["expired"] * 3
    assert (await _tokens(broker, headers, user=user_id, state="expiring"))["tokens"] == []
    # Without a state the listing is still newest first.
    everything = await _tokens(broker, headers, user=user_id)
    created = [t["created_at"] for t in everything["tokens"]]
    assert len(created) == 3 and created == sorted(created, reverse=True)
    # A cursor belongs to its order: taken to another, it would start somewhere meaningless.
    newest_first = (await _tokens(broker, headers, user=user_id, limit="1"))["next_cursor"]
    latest_ended = (await _tokens(broker, headers, user=user_id, state="expired", limit="1"))[
        "next_cursor"
    ]
    assert newest_first and latest_ended
    for query in (
        {"state": "expired", "cursor": newest_first},
        {"state": "expiring", "cursor": latest_ended},
        {"cursor": latest_ended},
        {"state": "active", "cursor": latest_ended},
    ):
        response = await broker.get(
            "/admin/oauth2/tokens", params={"user": user_id, **query}, headers=headers
        )
        assert response.status_code == 400, (query, response.text)
        assert response.json()["error"] == "invalid_request"
    # Within one order a cursor goes with any of its filters: revoked is newest first too.
    await _tokens(broker, headers, user=user_id, state="revoked", cursor=newest_first)


@pytest.mark.parametrize(
    "query",
    [
        {"kind": "cookie"},
        {"state": "dormant"},
        {"user": "alice@example.com"},
        {"cursor": "bm90LWEtY3Vyc29y"},
        {"client": "web", "kind": "upstream"},
        {"limit": "0"},
        {"token": "x"},
    ],
)
async def test_bad_token_listing_parameters_get_invalid_request(
    admin: Admin, query: dict[str, str]
) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get("/admin/oauth2/tokens", params=query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_revoking_an_unknown_id_is_not_found(admin: Admin) -> None:
    _runtime, broker, headers, _admin_id = admin
    for token_id in (str(uuid.uuid4()), "not-an-id"):
        response = await broker.delete(f"/admin/oauth2/tokens/{token_id}", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"] == "invalid_request"
