"""The admin API requests the bench times: which ones, and each timed to its last byte over one
keep-alive connection (a warm-up, then sequential repetitions)."""

from __future__ import annotations

import datetime as dt
import math
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx2
from shared.models.audit_action import ROTATED

from bench.admin_seed_sql import seeded_user_id


@dataclass(frozen=True)
class Probe:
    """One request to time: its label in the table, its path and query, how many times."""

    label: str
    path: str
    repetitions: int


@dataclass
class ProbeResult:
    """A probe's times in ms, the rows and bytes of its answer, or why it failed."""

    probe: Probe
    times_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    size: int = 0
    error: str = ""

    def _ranked(self, share: float) -> float:
        """Nearest-rank percentile."""
        if not self.times_ms:
            return math.nan
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self._ranked(0.5)

    @property
    def p95(self) -> float:
        return self._ranked(0.95)

    @property
    def max(self) -> float:
        return max(self.times_ms) if self.times_ms else math.nan


def count_rows(response: httpx2.Response) -> int | None:
    """Rows in a listing's answer: lines of an export, else the length of the body's first list
    (the page), else the items of every list in it (the statistics)."""
    content_type = response.headers.get("content-type", "")
    if "csv" in content_type:
        return max(0, len(response.text.splitlines()) - 1)
    if "ndjson" in content_type or "jsonl" in content_type or "json-seq" in content_type:
        return sum(1 for line in response.text.splitlines() if line.strip())
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        for key in ("users", "tokens", "events", "actions", "items", "data"):
            if isinstance(body.get(key), list):
                return len(body[key])
        lists = [value for value in body.values() if isinstance(value, list)]
        if lists:
            return len(lists[0])
        return _items(body)
    return None


def _items(value: Any) -> int:
    if isinstance(value, list):
        return len(value) + sum(_items(item) for item in value if isinstance(item, dict))
    if isinstance(value, dict):
        return sum(_items(item) for item in value.values())
    return 0


def _fail(result: ProbeResult, response: httpx2.Response) -> ProbeResult:
    result.error = f"HTTP {response.status_code}"
    print(
        f"  ERROR {result.probe.label}: HTTP {response.status_code}: "
        f"{response.text[:300].strip()!r}"
    )
    return result


def time_probe(client: httpx2.Client, probe: Probe) -> ProbeResult:
    """A warm-up, then ``probe.repetitions`` sequential requests, each to its last byte."""
    result = ProbeResult(probe)
    try:
        warm = client.get(probe.path)
    except httpx2.HTTPError as exc:
        result.error = type(exc).__name__
        print(f"  ERROR {probe.label}: {exc!r}")
        return result
    if warm.status_code != 200:
        return _fail(result, warm)
    result.rows, result.size = count_rows(warm), len(warm.content)
    for _ in range(probe.repetitions):
        started = time.perf_counter()
        response = client.get(probe.path)
        _ = response.content
        result.times_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            return _fail(result, response)
    return result


def next_cursor(client: httpx2.Client, path: str, pages: int) -> tuple[str | None, str]:
    """The ``next_cursor`` after following ``pages`` pages from ``path``; else None and why
    (an empty why: the listing has no more pages, a small seed)."""
    cursor: str | None = None
    for page in range(pages):
        url = path if cursor is None else _with(path, cursor=cursor)
        response = client.get(url)
        if response.status_code != 200:
            return None, f"page {page + 1}: HTTP {response.status_code}: {response.text[:200]}"
        cursor = response.json().get("next_cursor")
        if not cursor:
            return None, ""
    return cursor, ""


def _with(path: str, **params: str) -> str:
    base, _, query = path.partition("?")
    pairs = urllib.parse.parse_qsl(query) + list(params.items())
    return f"{base}?{urllib.parse.urlencode(pairs)}" if pairs else base


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_probes(
    client: httpx2.Client,
    admin_id: uuid.UUID,
    now: dt.datetime,
    *,
    repetitions: int,
    export_repetitions: int,
    deep_pages: int,
    exports: bool = True,
) -> list[Probe]:
    """Every timed request; the paged ones start from cursors fetched here (page 2 and page
    ``deep_pages`` of each listing); ``exports=False`` leaves out the audit exports."""
    n = repetitions
    user = seeded_user_id(2)
    users, tokens = "/admin/oauth2/users", "/admin/oauth2/tokens"
    stats, audit = "/admin/oauth2/stats", "/admin/oauth2/audit"
    week_ago = _rfc3339(now - dt.timedelta(days=7))
    day = (now - dt.timedelta(days=30)).date()
    window = {"after": f"{day}T00:00:00Z", "before": f"{day + dt.timedelta(days=1)}T00:00:00Z"}
    probes = [
        Probe(users, users, n),
        Probe(f"{users}?email=example7", _with(users, email="example7"), n),
        Probe(f"{users}?provider=github", _with(users, provider="github"), n),
        Probe(f"{users}?status=disabled", _with(users, status="disabled"), n),
        Probe(f"{users}?last_login_after=<7 days ago>", _with(users, last_login_after=week_ago), n),
        *_deeper_pages(client, users, (2, deep_pages), n),
        Probe(tokens, tokens, n),
        Probe(f"{tokens}?user=<user 2>", _with(tokens, user=str(user)), n),
        Probe(
            f"{tokens}?kind=session&state=active", _with(tokens, kind="session", state="active"), n
        ),
        Probe(f"{tokens}?state=expiring", _with(tokens, state="expiring"), n),
        Probe(f"{tokens}?state=expired", _with(tokens, state="expired"), n),
        Probe(
            f"{tokens}?kind=upstream&state=refresh_failing",
            _with(tokens, kind="upstream", state="refresh_failing"),
            n,
        ),
        Probe(f"{tokens}?provider=corp", _with(tokens, provider="corp"), n),
        Probe(f"{tokens}?client=cli", _with(tokens, client="cli"), n),
        *_deeper_pages(client, tokens, (deep_pages,), n),
        *_deeper_pages(client, _with(tokens, state="expiring"), (deep_pages,), n),
        *_deeper_pages(client, _with(tokens, state="expired"), (deep_pages,), n),
        Probe(stats, stats, n),
        Probe(
            f"{stats}?from=<60 days ago>&to=<today>",
            _with(
                stats,
                **{"from": str((now - dt.timedelta(days=60)).date()), "to": str(now.date())},
            ),
            n,
        ),
        Probe(audit, audit, n),
        Probe(f"{audit}?action=user.disabled", _with(audit, action="user.disabled"), n),
        Probe(f"{audit}?action={ROTATED}", _with(audit, action=ROTATED), n),
        Probe(f"{audit}?actor=user:<admin>", _with(audit, actor=f"user:{admin_id}"), n),
        Probe(f"{audit}?actor=client:mobile", _with(audit, actor="client:mobile"), n),
        Probe(f"{audit}?subject=<user 2>", _with(audit, subject=str(user)), n),
        Probe(f"{audit}?after&before=<one day, 30 days ago>", _with(audit, **window), n),
        *_deeper_pages(client, audit, (2, deep_pages), n),
    ]
    if exports:
        for export in ("jsonl", "csv"):
            probes.append(
                Probe(
                    f"{audit}?format={export}&<one day>",
                    _with(audit, format=export, **window),
                    export_repetitions,
                )
            )
    return probes


def _deeper_pages(
    client: httpx2.Client, path: str, pages: tuple[int, ...], repetitions: int
) -> list[Probe]:
    """A probe of page N of the listing at ``path`` for each N in ``pages`` (from 2 on), each
    with the cursor its previous page returned."""
    probes = []
    for page in sorted({page for page in pages if page >= 2}):
        cursor, why = next_cursor(client, path, page - 1)
        if cursor is None and not why:
            print(f"  {path}: fewer than {page} pages, page {page} not timed")
        elif cursor is None:
            print(f"  ERROR {path} page {page}: {why}")
        else:
            label = f"{path}{'&' if '?' in path else '?'}cursor=<page {page}>"
            probes.append(Probe(label, _with(path, cursor=cursor), repetitions))
    return probes
