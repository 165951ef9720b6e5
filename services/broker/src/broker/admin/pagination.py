"""Keyset pagination cursors for the admin listings: opaque to clients, checked on the way in.

A cursor is the sort key of the last row of a page — ``(timestamp, id)`` — as base64url JSON,
with the name of the order it belongs to when a listing has more than one. The next page is the
rows strictly after it in the listing's order, so a page never repeats or skips rows that were
there when the first page was read, however deep the client pages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from broker.http.errors import InvalidRequest
from broker.http.forms import decimal

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Cursor:
    at: dt.datetime
    id: str
    # The listing's order, where it has more than one ("" for its default order).
    order: str = ""

    def encode(self) -> str:
        fields = [self.at.isoformat(), self.id, *([self.order] if self.order else [])]
        raw = json.dumps(fields, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, value: str, *, order: str = "") -> Cursor:
        """The cursor in ``value``, which must belong to ``order``: a cursor of another order
        would start the page at a point that means something else there."""
        try:
            padded = value + "=" * (-len(value) % 4)
            at, row_id, *tagged = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            moment = dt.datetime.fromisoformat(at)
        except (ValueError, TypeError, binascii.Error, UnicodeEncodeError, RecursionError):
            raise InvalidRequest("cursor is not one this listing returned") from None
        if moment.tzinfo is None or not isinstance(row_id, str) or not _in_utc_range(moment):
            raise InvalidRequest("cursor is not one this listing returned")
        if tagged != ([order] if order else []):
            raise InvalidRequest("cursor belongs to another order: follow it with its own filters")
        return cls(at=moment, id=row_id, order=order)


def _in_utc_range(moment: dt.datetime) -> bool:
    """Whether the instant exists in UTC: 0001-01-01T00:00+01:00 is in year 0 there, which
    Python cannot hold (the database driver's conversion raised OverflowError: a 500)."""
    try:
        moment.astimezone(dt.UTC)
    except OverflowError:
        return False
    return True


def page_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    limit = decimal(value)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def parse_instant(name: str, value: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp with its offset (``Z`` or ``+hh:mm``).

    RFC 3339 §5.6 allows ``t`` and ``z`` in lower case; a ``+`` the client did not
    percent-encode arrives as a space.
    """
    if value is None:
        return None
    text = value.replace("t", "T").replace("z", "Z").replace("Z", "+00:00").replace(" ", "+")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name} needs a UTC offset, e.g. 2026-12-01T00:00:00Z")
    if not _in_utc_range(moment):
        raise InvalidRequest(f"{name} is before year 1 or after year 9999 in UTC")
    return moment


def refuse_unknown(query: Mapping[str, str], allowed: Collection[str]) -> None:
    """Every admin request names only the parameters it knows: a misspelt filter is a 400, not
    a listing that silently ignores it."""
    unknown = set(query) - set(allowed)
    if unknown:
        raise InvalidRequest(f"unknown parameter: {sorted(unknown)[0]}")


def refuse_nul(query: Mapping[str, str]) -> None:
    """No listing parameter holds NUL: no id, time or cursor has one, and PostgreSQL text cannot
    hold it (the driver raised DataError comparing a column with it: a 500)."""
    for name, value in query.items():
        if "\x00" in value:
            raise InvalidRequest(f"{name} must not contain NUL")
