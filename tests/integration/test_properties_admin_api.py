"""Properties of the admin API's input, through the real app and PostgreSQL: any query string to
``/admin/oauth2/{users,tokens,audit,stats}`` is a page (never longer than its limit) or a ``400
invalid_request``, and any id in a path a 404 or the answer, never a 500 (docs/admin.md "The
admin API")."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from shared.crypto.keyring import Keyring

from tests.conftest import broker_settings
from tests.support.accounts import Admin, corp_profile, sign_in
from tests.support.properties import budget, decoded_text, tricky_text
from tests.support.provider_broker import running_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def admin_broker(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> AsyncIterator[Admin]:
    """One broker and one signed-in admin for every example of this module (the examples only
    read). Abuse limits are off: a property sends many bad requests on purpose."""
    subject = f"admin-{uuid.uuid4().hex[:10]}"
    settings = broker_settings(
        database_url, upstream_idp, keyring, admins=[f"corp:{subject}"], login_start_limit=0
    )
    async with (
        running_broker(settings) as (runtime, broker),
        httpx2.AsyncClient(base_url=upstream_idp) as idp,
    ):
        _subject, headers = await sign_in(broker, idp, sub=subject, admin_scope=True)
        admin_id = (await corp_profile(broker, headers))["user"]["id"]
        yield runtime, broker, headers, admin_id


LISTINGS = {
    "/admin/oauth2/users": (
        "users",
        ["user", "provider", "email", "status", "last_login_after", "last_login_before"],
    ),
    "/admin/oauth2/tokens": ("tokens", ["kind", "user", "provider", "client", "state"]),
    "/admin/oauth2/audit": ("events", ["actor", "action", "subject", "after", "before", "format"]),
    "/admin/oauth2/stats": (None, ["from", "to"]),
}


def cursor(pair: tuple[str, str]) -> str:
    """A cursor as the listings write them (``broker.admin.pagination.Cursor``), of any pair."""
    raw = json.dumps(list(pair), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)
# A value each listing takes, by name: the context a hostile value is tried in.
VALID = {
    "user": st.uuids().map(str),
    "provider": st.sampled_from(["corp", "dev"]),
    "email": st.sampled_from(["corp.example", "a"]),
    "status": st.sampled_from(["active", "disabled"]),
    "kind": st.sampled_from(["session", "upstream"]),
    "client": st.sampled_from(["web", "console"]),
    "state": st.sampled_from(["active", "expiring", "revoked", "needs_reauth"]),
    "actor": st.sampled_from(["client:web", "system"]),
    "action": st.sampled_from(["user.created", "refresh_token.rotated"]),
    "subject": st.uuids().map(str),
    "format": st.sampled_from(["json", "csv", "jsonl"]),
    "from": st.dates(dt.date(2026, 1, 1), dt.date(2026, 6, 1)).map(str),
    "to": st.dates(dt.date(2026, 6, 2), dt.date(2026, 12, 1)).map(str),
    "limit": st.integers(1, 500).map(str),
    "cursor": st.tuples(times.map(dt.datetime.isoformat), st.sampled_from(["1", "0" * 32])).map(
        cursor
    ),
}
for _name in ("last_login_after", "last_login_before", "after", "before"):
    VALID[_name] = times.map(lambda moment: moment.isoformat().replace("+00:00", "Z"))
EDGE_DAYS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-01:00"]
ODD_IDS = ["\u00b2", "9" * 20, "9" * 4301, "\u0661"]
# Values no listing should choke on: what decoding leaves in a query, NUL (which PostgreSQL
# text cannot hold), times and cursors at the edges of what Python holds, odd digits.
hostile = st.one_of(
    tricky_text,
    st.tuples(st.sampled_from(list(VALID)).flatmap(VALID.__getitem__), st.just("\x00")).map(
        "".join
    ),
    st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01"]),
    st.tuples(st.sampled_from(EDGE_DAYS), st.sampled_from(["1", str(uuid.UUID(int=1))])).map(
        cursor
    ),
    st.tuples(st.just("2026-12-01T00:00:00+00:00"), st.sampled_from(ODD_IDS)).map(cursor),
)


@st.composite
def listing_queries(draw: st.DrawFn) -> tuple[str, str | None, list[tuple[str, str]]]:
    """A listing, a few valid parameters of it, and one hostile value (under one of its names,
    rarely any name at all)."""
    path = draw(st.sampled_from(sorted(LISTINGS)))
    key, filters = LISTINGS[path]
    names = [*filters, "limit", "cursor"] if key is not None else filters
    valid = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    pairs = [(name, draw(VALID[name])) for name in valid]
    target = draw(st.sampled_from(names) | decoded_text)
    pairs.append((target, draw(hostile)))
    return path, key, pairs


@budget(100, shrink=False)
@given(listing_queries())
async def test_any_listing_query_is_a_bounded_page_or_invalid_request(
    admin_broker: Admin, case: tuple[str, str | None, list[tuple[str, str]]]
):
    _runtime, broker, headers, _admin_id = admin_broker
    path, key, pairs = case

    response = await broker.get(path, params=pairs, headers=headers)

    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    if response.status_code == 400:
        assert response.json()["error"] == "invalid_request"
        return
    if not response.headers["content-type"].startswith("application/json"):
        assert dict(pairs).get("format") in ("csv", "jsonl")  # an audit export
        return
    body: dict[str, Any] = response.json()
    if key is not None:
        limit = int(dict(pairs).get("limit", "50"))
        assert len(body[key]) <= limit


ADMIN_PATHS = [
    "POST /admin/oauth2/users/{}/sync",
    "POST /admin/oauth2/users/{}/disable",
    "POST /admin/oauth2/users/{}/enable",
    "DELETE /admin/oauth2/tokens/{}",
]


@budget(25, shrink=False)
@given(
    (st.uuids().map(str) | st.uuids().map(lambda value: value.hex.upper()) | hostile).filter(
        lambda segment: segment not in ("", ".", "..")  # another path, not another id
    )
)
@example(segment="\x00")
@example(segment="\u0660" * 32)  # Arabic-Indic zeros: uuid.UUID reads them as 0
async def test_any_id_in_an_admin_path_is_404_or_its_answer(admin_broker: Admin, segment: str):
    _runtime, broker, headers, _admin_id = admin_broker
    for endpoint in ADMIN_PATHS:  # each in turn
        method, template = endpoint.split()
        path = template.format(quote(segment, safe=""))

        response = await broker.request(method, path, headers=headers)

        assert response.status_code in (404, 405), (path, response.status_code, response.text)


# Regressions this property found, one plain example each.


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/admin/oauth2/audit", "actor"),
        ("/admin/oauth2/audit", "subject"),
        ("/admin/oauth2/users", "email"),
        ("/admin/oauth2/users", "provider"),
        ("/admin/oauth2/tokens", "client"),
        ("/admin/oauth2/tokens", "provider"),
    ],
)
async def test_a_nul_in_a_text_filter_is_invalid_request(admin_broker: Admin, path: str, name: str):
    # Was a DataError from the driver ("PostgreSQL text fields cannot contain NUL"): a 500.
    _runtime, broker, headers, _admin_id = admin_broker

    response = await broker.get(path, params={name: "corp\x00"}, headers=headers)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"{name} must not contain NUL",
    }


async def test_an_audit_cursor_whose_id_is_not_ascii_digits_is_invalid_request(admin_broker: Admin):
    # Was a ValueError from int("²") after str.isdigit() said yes: a 500.
    _runtime, broker, headers, _admin_id = admin_broker
    query = {"cursor": cursor(("2026-12-01T00:00:00+00:00", "\u00b2"))}

    response = await broker.get("/admin/oauth2/audit", params=query, headers=headers)

    assert response.status_code == 400
    assert response.json()["error_description"] == "cursor is not one this listing returned"


async def test_a_time_filter_out_of_range_in_utc_is_invalid_request(admin_broker: Admin):
    # Was accepted, then the driver's conversion to UTC overflowed: a 500.
    _runtime, broker, headers, _admin_id = admin_broker
    query = {"last_login_after": "9999-12-31T23:59:59-23:59"}

    response = await broker.get("/admin/oauth2/users", params=query, headers=headers)

    assert response.status_code == 400


async def test_a_profile_sync_of_a_provider_with_nul_is_404(admin_broker: Admin):
    # Was a DataError looking the link up: a 500. No provider id has NUL.
    _runtime, broker, headers, _admin_id = admin_broker

    response = await broker.post(
        "/auth/oauth2/profile/sync", params={"provider": "corp\x00"}, headers=headers
    )

    assert response.status_code == 404
