"""Properties of the admin listings' query parsers (``broker.admin.pagination``, the audit, users,
tokens and stats filters): any string is a valid value or a 400 ``invalid_request``, cursors
round-trip, and RFC 3339 times with any offset mean the instant they say."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from broker.admin.audit import filtered_events
from broker.admin.pagination import MAX_LIMIT, Cursor, page_limit, parse_instant
from broker.admin.stats import MAX_DAYS, _day_range
from broker.admin.tokens import _kinds
from broker.http.errors import InvalidRequest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import any_text, budget, decoded_text, nesting_depths, tricky_text

offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
# Any offset in whole seconds, as the database's time zones have (historical ones such as Paris's
# +00:09:21). Not microseconds: CPython 3.11's fromisoformat() drops those from an offset.
odd_offsets = st.integers(-(24 * 3600 - 1), 24 * 3600 - 1).map(
    lambda seconds: dt.timezone(dt.timedelta(seconds=seconds))
)
aware = st.datetimes(timezones=st.one_of(offsets, odd_offsets, st.just(dt.UTC)))
# The first and last instants Python holds, with offsets that move them out of range in UTC.
EDGES = [
    dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=23, minutes=59))),
    dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=1))),
    dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(-dt.timedelta(hours=1))),
]
EDGE_TEXTS = ["0001-01-01T00:00:00+23:59", "0001-01-01T00:00+00:01", "9999-12-31T23:59-01:00"]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
cursor_like = st.one_of(
    tricky_text,
    st.binary(max_size=80).map(b64),
    json_values.map(lambda value: b64(json.dumps(value).encode())),
    st.tuples(any_text | st.datetimes().map(dt.datetime.isoformat), json_values).map(
        lambda pair: b64(json.dumps(list(pair)).encode())
    ),
    nesting_depths.map(lambda depth: b64(b"[" * depth)),
)


@budget(200)
@given(cursor_like)
def test_any_string_is_a_cursor_or_invalid_request(value: str):
    try:
        cursor = Cursor.decode(value)
    except InvalidRequest:
        return
    assert cursor.at.tzinfo is not None
    cursor.at.astimezone(dt.UTC)  # an instant the database driver can convert
    assert isinstance(cursor.id, str)


def _in_utc_range(moment: dt.datetime) -> bool:
    try:
        moment.astimezone(dt.UTC)
    except OverflowError:
        return False
    return True


@budget(100)
@given(aware | st.sampled_from(EDGES), any_text)
def test_a_cursor_round_trips(at: dt.datetime, row_id: str):
    cursor = Cursor(at=at, id=row_id)

    if not _in_utc_range(at):  # never a row's: a listing's times are UTC-representable
        with pytest.raises(InvalidRequest):
            Cursor.decode(cursor.encode())
        return
    decoded = Cursor.decode(cursor.encode())

    assert decoded == cursor
    assert decoded.at.utcoffset() == at.utcoffset()


@budget(200)
@given(st.one_of(tricky_text, st.integers(-10, 2 * MAX_LIMIT).map(str)))
def test_a_limit_is_one_to_max_or_invalid_request(value: str):
    try:
        limit = page_limit(value)
    except InvalidRequest:
        return
    assert value.isascii() and value.isdigit()
    assert limit == int(value)
    assert 1 <= limit <= MAX_LIMIT


@st.composite
def rfc3339(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    """An RFC 3339 §5.6 date-time and the instant it names (fractions past microseconds are
    truncated, as Python keeps microseconds; leap seconds aside, which Python cannot hold)."""
    moment = draw(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)))
    digits = draw(st.text("0123456789", min_size=1, max_size=9) | st.just(""))
    offset_minutes = draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1) | st.just(0))
    if digits:
        moment = moment.replace(microsecond=int(digits[:6].ljust(6, "0")))
    else:
        moment = moment.replace(microsecond=0)
    if offset_minutes == 0 and draw(st.booleans()):
        zone = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    else:
        sign = "-" if offset_minutes < 0 else "+"
        hours, minutes = divmod(abs(offset_minutes), 60)
        zone = f"{sign}{hours:02d}:{minutes:02d}"
    separator = draw(st.sampled_from(["T", "t"]))
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"  # %Y writes 999, not 0999
    text = f"{day}{separator}{moment:%H:%M:%S}" + (f".{digits}" if digits else "")
    offset = dt.timezone(dt.timedelta(minutes=offset_minutes))
    return text + zone, moment.replace(tzinfo=offset)


@budget(200)
@given(rfc3339(), st.booleans())
def test_an_rfc3339_time_with_any_offset_is_that_instant(
    case: tuple[str, dt.datetime], plus_as_space: bool
):
    text, instant = case
    if plus_as_space:  # a '+' the client did not percent-encode arrives as a space
        text = text.replace("+", " ")

    parsed = parse_instant("after", text)

    assert parsed == instant
    assert parsed is not None and parsed.utcoffset() == instant.utcoffset()


@budget(200)
@given(tricky_text | st.sampled_from(EDGE_TEXTS))
def test_any_string_is_an_aware_time_or_invalid_request(value: str):
    try:
        parsed = parse_instant("after", value)
    except InvalidRequest:
        return
    assert parsed is not None and parsed.tzinfo is not None
    parsed.astimezone(dt.UTC)  # an instant the database driver can convert


FILTER_NAMES = ["actor", "action", "subject", "after", "before", "format", "unknown", "limit"]
queries = st.dictionaries(
    st.sampled_from(FILTER_NAMES) | decoded_text, tricky_text | rfc3339().map(lambda c: c[0])
)


@budget(200)
@given(queries)
def test_any_audit_filter_is_a_query_or_invalid_request(query: dict[str, str]):
    try:
        filtered_events(query)
    except InvalidRequest:
        return
    assert set(query) <= {"actor", "action", "subject", "after", "before", "format", "limit"}


@budget(200)
@given(
    st.dictionaries(
        st.sampled_from(["from", "to"]),
        tricky_text | st.dates().map(str) | st.dates(max_value=dt.date(1, 2, 1)).map(str),
    ),
    st.dates(min_value=dt.date(1, 2, 1)),
)
def test_any_stats_range_is_at_most_max_days_or_invalid_request(
    query: dict[str, str], today: dt.date
):
    try:
        first, last = _day_range(query, today)
    except InvalidRequest:
        return
    assert first <= last
    assert (last - first).days < MAX_DAYS


@budget(100)
@given(st.dictionaries(st.sampled_from(["kind", "client", "state"]), tricky_text))
def test_any_token_kind_filter_is_kinds_or_invalid_request(query: dict[str, Any]):
    try:
        kinds = _kinds(query)
    except InvalidRequest:
        return
    assert kinds and set(kinds) <= {"session", "upstream"}


# Regressions these properties found, one plain example each.


def test_a_deeply_nested_cursor_is_invalid_request():
    # Was a RecursionError out of json.loads: a 500.
    with pytest.raises(InvalidRequest, match="cursor"):
        Cursor.decode(b64(b"[" * 3000))


@pytest.mark.parametrize("value", ["\u00b2", "9" * 4301, "\u0661\u0662"])
def test_a_limit_in_other_digits_or_beyond_int_is_invalid_request(value: str):
    # Was a ValueError out of int() (a 500) for the first two, and a limit of 12 for the last.
    with pytest.raises(InvalidRequest, match="limit"):
        page_limit(value)


def test_lower_case_t_and_z_are_rfc3339():
    # Was refused: RFC 3339 §5.6 allows them.
    assert parse_instant("after", "2026-12-01t08:30:00z") == dt.datetime(
        2026, 12, 1, 8, 30, tzinfo=dt.UTC
    )


def test_a_stats_range_to_the_first_day_a_date_holds_starts_there():
    # Was an OverflowError computing the default 30-day window: a 500.
    first_day = dt.date(1, 1, 1)
    assert _day_range({"to": "0001-01-01"}, dt.date(2026, 1, 1)) == (first_day, first_day)


@pytest.mark.parametrize("value", EDGE_TEXTS)
def test_a_time_outside_years_1_to_9999_in_utc_is_invalid_request(value: str):
    # Was accepted, and the database driver's conversion to UTC raised OverflowError: a 500.
    with pytest.raises(InvalidRequest, match="year"):
        parse_instant("after", value)


def test_a_cursor_outside_years_1_to_9999_in_utc_is_invalid_request():
    with pytest.raises(InvalidRequest, match="cursor"):
        Cursor.decode(Cursor(at=EDGES[0], id="1").encode())
