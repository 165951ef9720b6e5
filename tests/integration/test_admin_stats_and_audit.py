"""``/admin/oauth2/stats`` (from the audit rollup) and ``/admin/oauth2/audit`` (filters, pages,
CSV and JSON-lines export)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from typing import Any

import httpx2
import pytest
from shared.jobs.audit_rollup import AuditRollupPayload, roll_up_audit_events
from shared.jobs.stats_snapshot import (
    StatsSnapshotPayload,
    current_state,
    read_snapshot,
    snapshot_stats,
)
from shared.runtime import Runtime

from tests.support.accounts import Admin, corp_profile, sign_in
from tests.support.flows import login, refresh
from tests.support.job_deps import job_deps
from tests.support.jwts import session_of

pytestmark = pytest.mark.integration


async def _get(broker: httpx2.AsyncClient, headers: dict[str, str], path: str, **query: Any) -> Any:
    response = await broker.get(path, params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _roll_up(runtime: Runtime) -> None:
    """What the worker does every ``audit_rollup_interval``: count, then snapshot."""
    async with job_deps(runtime.settings) as deps:
        assert (await roll_up_audit_events(AuditRollupPayload(), deps))["outcome"] == "ok"
        assert (await snapshot_stats(StatsSnapshotPayload(), deps))["outcome"] == "ok"


async def test_stats_count_sign_ins_new_users_and_refreshes_by_provider(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, _admin_id = admin
    await _roll_up(runtime)
    before = await _get(broker, headers, "/admin/oauth2/stats")

    subject, _headers = await sign_in(broker, idp)  # a new user: created + signed in
    await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    second = await login(broker)  # the same user again
    rotated = await refresh(broker, second["refresh_token"])
    assert rotated.status_code == 200
    # A retry (the response was lost): the same successor, neither a rotation nor a failure.
    retried = await refresh(broker, second["refresh_token"])
    assert retried.json()["refresh_token"] == rotated.json()["refresh_token"]
    onward = await refresh(broker, rotated.json()["refresh_token"])
    assert onward.status_code == 200
    reused = await refresh(broker, second["refresh_token"])  # reuse: refused, session revoked
    assert reused.json()["error"] == "invalid_grant"
    await _roll_up(runtime)
    after = await _get(broker, headers, "/admin/oauth2/stats")

    today = runtime.clock.now().astimezone(dt.UTC).date()
    assert after["to"] == today.isoformat()
    assert after["from"] == (today - dt.timedelta(days=29)).isoformat()

    def delta(*path: str) -> int:
        old: Any = before
        new: Any = after
        for key in path:
            old = old.get(key, 0) if isinstance(old, dict) else 0
            new = new[key]
        return int(new) - int(old)

    corp = after["by_provider"]["corp"]
    assert delta("by_provider", "corp", "sign_ins") == 2
    assert delta("by_provider", "corp", "new_users") == 1
    assert delta("by_provider", "corp", "refresh_succeeded") == 2
    assert delta("by_provider", "corp", "refresh_retried") == 1
    assert delta("by_provider", "corp", "refresh_failed") == 1
    assert delta("totals", "refresh_retried") == 1
    assert delta("totals", "sign_ins") == 2
    assert corp["active_sessions"] == after["active_sessions"] - sum(
        counts["active_sessions"] for name, counts in after["by_provider"].items() if name != "corp"
    )
    # Two sessions were created and one revoked by the reuse: one more live session.
    assert delta("active_sessions") == 1
    assert delta("active_users", "1d") == 1
    assert (
        after["active_users"]["1d"] <= after["active_users"]["7d"] <= after["active_users"]["30d"]
    )
    (today_corp,) = [
        item
        for item in after["sign_ins"]
        if item["day"] == today.isoformat() and item["provider"] == "corp"
    ]
    previous = [
        item["count"]
        for item in before["sign_ins"]
        if item["day"] == today.isoformat() and item["provider"] == "corp"
    ]
    assert today_corp["count"] - sum(previous) == 2
    assert after["rollup"]["events_pending"] == 0
    assert after["rollup"]["events_counted"] > before["rollup"]["events_counted"]

    # Until the worker's next run, new events are pending, not counted, and the current state
    # is the snapshot's.
    await sign_in(broker, idp)
    pending = await _get(broker, headers, "/admin/oauth2/stats")
    assert pending["rollup"]["events_pending"] >= 3
    assert pending["totals"]["sign_ins"] == after["totals"]["sign_ins"]
    assert pending["active_sessions"] == after["active_sessions"]
    assert pending["state_as_of"] == after["state_as_of"]

    # A range in the past has none of today's events.
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    past = await _get(broker, headers, "/admin/oauth2/stats", to=yesterday)
    assert all(item["day"] <= yesterday for item in past["sign_ins"])


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2026-02-30"},
        {"to": "yesterday"},
        {"from": "2026-12-01T00:00:00Z"},
        {"from": "2026-12-02", "to": "2026-12-01"},
        {"from": "2024-01-01", "to": "2026-01-01"},
        {"days": "7"},
    ],
)
async def test_bad_stats_parameters_get_invalid_request(
    admin: Admin, query: dict[str, str]
) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get("/admin/oauth2/stats", params=query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def _user_with_events(
    broker: httpx2.AsyncClient, idp: httpx2.AsyncClient
) -> tuple[str, str, dict[str, Any]]:
    subject, user_headers = await sign_in(broker, idp)
    user_id = (await corp_profile(broker, user_headers))["user"]["id"]
    await idp.post("/_control/user", json={"sub": subject, "email": f"{subject}@corp.example"})
    tokens = await login(broker)
    assert (await refresh(broker, tokens["refresh_token"])).status_code == 200
    return subject, user_id, tokens


async def test_audit_filters_and_pages_newest_first(admin: Admin, idp: httpx2.AsyncClient) -> None:
    _runtime, broker, headers, admin_id = admin
    subject, user_id, tokens = await _user_with_events(broker, idp)
    disabled = await broker.post(f"/admin/oauth2/users/{user_id}/disable", headers=headers)
    assert disabled.status_code == 200

    events = (await _get(broker, headers, "/admin/oauth2/audit", subject=user_id))["events"]
    actions = [event["action"] for event in events]
    # Newest first: the disable and its session revocations come before the sign-ins.
    assert actions[0] in ("user.disabled", "session.revoked")
    assert actions.count("user.signed_in") == 2
    assert actions.count("refresh_token.rotated") == 1
    order = [(event["occurred_at"], event["id"]) for event in events]
    assert order == sorted(order, reverse=True)
    for secret in (tokens["refresh_token"], tokens["access_token"]):
        assert all(secret not in json.dumps(event) for event in events)

    by_admin = await _get(broker, headers, "/admin/oauth2/audit", actor=f"user:{admin_id}")
    assert {event["action"] for event in by_admin["events"]} >= {"user.disabled"}
    assert all(event["actor"] == f"user:{admin_id}" for event in by_admin["events"])
    (signed_in,) = (
        await _get(
            broker, headers, "/admin/oauth2/audit", actor=f"corp:{subject}", action="user.created"
        )
    )["events"]
    assert signed_in["subject"] == user_id and signed_in["data"] == {"provider": "corp"}
    rotations = await _get(
        broker, headers, "/admin/oauth2/audit", action="refresh_token.rotated", subject=user_id
    )
    assert [event["actor"] for event in rotations["events"]] == ["client:web"]

    # Pages of one: every event of the user once, in order.
    seen: list[int] = []
    cursor = None
    while True:
        query = {"subject": user_id, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await _get(broker, headers, "/admin/oauth2/audit", **query)
        seen += [event["id"] for event in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [event["id"] for event in events]

    # A time window: nothing before the user existed, everything from then on.
    first = min(event["occurred_at"] for event in events)
    assert (await _get(broker, headers, "/admin/oauth2/audit", subject=user_id, before=first))[
        "events"
    ] == []
    assert len(
        (await _get(broker, headers, "/admin/oauth2/audit", subject=user_id, after=first))["events"]
    ) == len(events)


async def test_audit_exports_csv_and_json_lines(admin: Admin, idp: httpx2.AsyncClient) -> None:
    _runtime, broker, headers, _admin_id = admin
    _subject, user_id, _tokens = await _user_with_events(broker, idp)
    listed = (await _get(broker, headers, "/admin/oauth2/audit", subject=user_id))["events"]

    lines = await broker.get(
        "/admin/oauth2/audit", params={"subject": user_id, "format": "jsonl"}, headers=headers
    )
    assert lines.status_code == 200
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="audit.jsonl"' in lines.headers["content-disposition"]
    assert [json.loads(line) for line in lines.text.splitlines()] == listed

    table = await broker.get(
        "/admin/oauth2/audit", params={"subject": user_id, "format": "csv"}, headers=headers
    )
    assert table.status_code == 200
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [int(row["id"]) for row in rows] == [event["id"] for event in listed]
    assert [row["action"] for row in rows] == [event["action"] for event in listed]
    assert json.loads(rows[0]["data"]) == listed[0]["data"]


@pytest.mark.parametrize(
    "query",
    [
        {"after": "last week"},
        {"before": "2026-01-01T00:00:00"},
        {"after": "2026-02-01T00:00:00Z", "before": "2026-01-01T00:00:00Z"},
        {"action": ""},
        {"actor": "x" * 400},
        {"cursor": "bm90LWEtY3Vyc29y"},
        {"format": "xml"},
        {"format": "csv", "limit": "10"},
        {"sid": str(uuid.uuid4())},
    ],
)
async def test_bad_audit_parameters_get_invalid_request(
    admin: Admin, query: dict[str, str]
) -> None:
    _runtime, broker, headers, _admin_id = admin
    response = await broker.get("/admin/oauth2/audit", params=query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_the_snapshot_is_the_current_state_as_of_its_last_run(
    admin: Admin, idp: httpx2.AsyncClient
) -> None:
    runtime, broker, headers, _admin_id = admin
    _subject, user_headers = await sign_in(broker, idp)
    await _roll_up(runtime)
    async with runtime.engine.connect() as connection:
        taken, at = await read_snapshot(connection)
        assert taken == await current_state(connection, runtime.clock.now())
    assert at is not None
    before = await _get(broker, headers, "/admin/oauth2/stats")
    assert before["active_sessions"] == taken[("active_sessions", "")]

    sid = session_of(user_headers["Authorization"].removeprefix("Bearer "))
    assert (await broker.delete(f"/admin/oauth2/tokens/{sid}", headers=headers)).status_code == 200
    unchanged = await _get(broker, headers, "/admin/oauth2/stats")
    assert unchanged["active_sessions"] == before["active_sessions"]  # until the next run
    await _roll_up(runtime)
    after = await _get(broker, headers, "/admin/oauth2/stats")
    assert after["active_sessions"] == before["active_sessions"] - 1
    assert after["state_as_of"] > before["state_as_of"]
    assert (
        after["by_provider"]["corp"]["active_sessions"]
        == before["by_provider"]["corp"]["active_sessions"] - 1
    )
