"""Properties of the request-body parsers (``broker.http.forms``): whatever the bytes, a body is
its parameters or ``InvalidRequest``, never another exception and never more than the caps."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from broker.http.errors import InvalidRequest
from broker.http.forms import (
    MAX_PARAM_LENGTH,
    decimal,
    form_params,
    json_object,
    json_params,
    single_params,
)
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from tests.support.properties import any_text, budget, decoded_text, nesting_depths, tricky_text

FORM = "application/x-www-form-urlencoded"


def posted(body: bytes, content_type: str | None = FORM) -> Request:
    """A POST request whose body is ``body``, in memory (no server)."""
    headers = [(b"content-type", content_type.encode("latin-1"))] if content_type else []
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


pairs = st.lists(st.tuples(decoded_text, decoded_text), max_size=8)
# Bytes a hostile client sends: random, form-like, JSON-like, invalid UTF-8, NUL.
form_like = st.lists(
    st.tuples(st.sampled_from(["a", "code", "a%00", "%ff", "x+y", ""]), st.binary(max_size=20)),
    max_size=6,
).map(lambda items: b"&".join(name.encode() + b"=" + value for name, value in items))
hostile_bytes = st.one_of(
    st.binary(max_size=200),
    form_like,
    nesting_depths.map(lambda depth: b"[" * depth + b"]" * depth),
    nesting_depths.map(lambda depth: b'{"a":' * depth),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | any_text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
        max_leaves=10,
    ).map(lambda document: json.dumps(document).encode()),
)


@budget(100)
@given(pairs)
def test_single_params_are_each_name_once_within_the_length_cap(items: list[tuple[str, str]]):
    names = [name for name, _ in items]
    try:
        params = single_params(items)
    except InvalidRequest:
        repeated = len(set(names)) < len(names)
        assert repeated or any(len(value) > MAX_PARAM_LENGTH for _, value in items)
        return
    assert params == dict(items)
    assert len(params) == len(items)


@budget(100)
@given(hostile_bytes, st.sampled_from([FORM, f"{FORM}; charset=utf-8", "text/plain", None]))
async def test_any_body_is_form_parameters_or_invalid_request(body: bytes, content_type: str):
    try:
        params = await form_params(posted(body, content_type))
    except InvalidRequest:
        return
    assert content_type is not None and content_type.startswith(FORM)
    for name, value in params.items():
        assert len(value) <= MAX_PARAM_LENGTH
        # What a handler gets is text a UTF-8 consumer (the database, a log) accepts as it is.
        name.encode("utf-8")
        value.encode("utf-8")


@budget(100)
@given(st.dictionaries(decoded_text, decoded_text.filter(lambda v: len(v) <= MAX_PARAM_LENGTH)))
async def test_an_encoded_form_round_trips(fields: dict[str, str]):
    assert await form_params(posted(urlencode(fields).encode())) == fields


@budget(50)
@given(st.binary(min_size=1).filter(lambda raw: not _is_utf8(raw)))
async def test_form_values_that_are_not_utf8_once_decoded_are_refused(raw: bytes):
    escaped = "".join(f"%{byte:02X}" for byte in raw)
    with pytest.raises(InvalidRequest):
        await form_params(posted(f"code={escaped}".encode()))


@budget(100)
@given(hostile_bytes)
async def test_any_body_is_a_json_object_or_invalid_request(body: bytes):
    try:
        document = await json_object(posted(body, "application/json"))
    except InvalidRequest:
        return
    assert isinstance(document, dict)


@budget(100)
@given(hostile_bytes)
async def test_json_params_are_utf8_strings_or_invalid_request(body: bytes):
    try:
        params = await json_params(posted(body, "application/json"))
    except InvalidRequest:
        return
    for value in params.values():
        assert isinstance(value, str)
        value.encode("utf-8")


@budget(50)
@given(st.dictionaries(decoded_text, decoded_text))
async def test_a_json_object_of_strings_round_trips(fields: dict[str, str]):
    body = json.dumps(fields).encode()
    assert await json_params(posted(body, "application/json"), empty_ok=False) == fields


@budget(50)
@given(st.lists(decoded_text, min_size=1, max_size=4), decoded_text, decoded_text)
async def test_a_json_object_naming_a_field_twice_is_refused(
    names: list[str], first: str, second: str
):
    fields = [f"{json.dumps(name)}:{json.dumps(first)}" for name in names]
    fields.append(f"{json.dumps(names[0])}:{json.dumps(second)}")
    body = ("{" + ",".join(fields) + "}").encode()
    with pytest.raises(InvalidRequest):
        await json_object(posted(body, "application/json"))


@budget(50)
@given(
    st.dictionaries(decoded_text, decoded_text, min_size=1),
    st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]),
)
async def test_json_in_another_encoding_than_utf8_is_refused(fields: dict[str, str], codec: str):
    # RFC 8259 §8.1: JSON between systems is UTF-8 (json.loads would guess UTF-16 and -32).
    with pytest.raises(InvalidRequest):
        await json_object(posted(json.dumps(fields).encode(codec), "application/json"))


@budget(200)
@given(st.one_of(tricky_text, st.integers(min_value=0).map(str)))
def test_a_decimal_parameter_is_its_ascii_digits_or_none(value: str):
    number = decimal(value)
    if number is None:
        assert not (value.isascii() and value.isdigit()) or len(value) > 4300
    else:
        assert value.isascii() and value.isdigit()
        assert number == int(value) >= 0


# Regressions these properties found, one plain example each.


async def test_a_percent_escape_that_is_not_utf8_is_refused_not_replaced():
    # Was {"code": "\ufffd"}: the value silently became another one.
    with pytest.raises(InvalidRequest):
        await form_params(posted(b"grant_type=authorization_code&code=%FF"))


async def test_a_json_field_sent_twice_is_refused_not_the_last_one_kept():
    body = b'{"refresh_token": "seen-by-a-proxy", "refresh_token": "used-by-the-broker"}'
    with pytest.raises(InvalidRequest, match="refresh_token is repeated"):
        await json_params(posted(body, "application/json"))


async def test_json_encoded_as_utf16_is_refused():
    body = '{"refresh_token": "r"}'.encode("utf-16")
    with pytest.raises(InvalidRequest):
        await json_params(posted(body, "application/json"))


async def test_a_json_body_starting_with_a_utf8_bom_is_still_read():
    body = b'\xef\xbb\xbf{"refresh_token": "r"}'
    assert await json_params(posted(body, "application/json")) == {"refresh_token": "r"}


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
