"""The soak's report: tables of the requests by class, the faults and their recovery, the
invariants and the figures that are reported rather than required, as Markdown (printed, and
written to a file with ``--report``)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.soak.checks import Results, in_windows
from bench.soak.faults import Event, FaultRecord
from bench.soak.ledger import CLASSES, Exchange, Ledger


@dataclass
class RunInfo:
    schedule: str
    started: float  # time.time() when the load began
    ended: float
    rate: float
    settings: dict[str, str]
    grace: float


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def request_rows(ledger: Ledger, windows: list[tuple[float, float]]) -> list[list[object]]:
    rows: list[list[object]] = []
    classes = [kind for kind in CLASSES if any(e.kind == kind for e in ledger.exchanges)]
    for kind in [*classes, "all"]:
        exchanges = [e for e in ledger.exchanges if kind in ("all", e.kind)]
        during = [e for e in exchanges if in_windows(e, windows)]
        outside = [e for e in exchanges if not in_windows(e, windows)]

        def count(group: list[Exchange], low: int, high: int) -> int:
            return sum(1 for e in group if e.status is not None and low <= e.status < high)

        latencies = sorted(e.seconds for e in outside if e.status is not None)
        rows.append(
            [
                kind,
                len(exchanges),
                sum(1 for e in exchanges if e.answered),
                count(exchanges, 200, 400),
                count(exchanges, 400, 500),
                count(during, 500, 600),
                count(outside, 500, 600),
                sum(1 for e in during if not e.answered),
                sum(1 for e in outside if not e.answered),
                _ms(_percentile(latencies, 0.50)),
                _ms(_percentile(latencies, 0.99)),
            ]
        )
    return rows


def render(
    info: RunInfo,
    ledger: Ledger,
    records: list[FaultRecord],
    events: list[Event],
    results: Results,
    errors: dict[str, list[str]],
) -> str:
    windows = [record.window(info.grace, info.ended) for record in records]
    t0 = info.started
    lines = [
        f"Schedule `{info.schedule}`: {info.ended - t0:.0f} s of load at {info.rate:g} "
        f"operations/s; two brokers behind a round-robin proxy, two sync-workers, one "
        f"PostgreSQL, one Redis, the OIDC stand-in upstream. A fault window runs from the "
        f"injection until recovery + {info.grace:g} s.",
        "",
        "### Requests by class",
        "",
        *_table(
            [
                "class",
                "sent",
                "answered",
                "2xx/3xx",
                "4xx",
                "5xx in faults",
                "5xx outside",
                "no answer in faults",
                "no answer outside",
                "p50 ms outside",
                "p99 ms outside",
            ],
            request_rows(ledger, windows),
        ),
        "",
    ]
    logins = Counter(record.step for record in ledger.logins if not record.ok)
    ok_logins = sum(1 for record in ledger.logins if record.ok)
    failed = ", ".join(f"{step} {n}" for step, n in sorted(logins.items())) or "none"
    lines += [
        f"Sign-ins: {len(ledger.logins)} tried, {ok_logins} completed; failed at: {failed}. "
        f"Operations not started: {ledger.shed} (too many in flight), {ledger.idle} (no idle "
        f"session).",
        "",
        "### Faults",
        "",
    ]
    fault_rows: list[list[object]] = []
    for record, (start, end) in zip(records, windows, strict=True):
        inside = [e for e in ledger.exchanges if e.started < end and e.ended > start]
        fault_rows.append(
            [
                record.name,
                f"{record.injected - t0:.1f}",
                "-" if record.lifted is None else f"{record.lifted - t0:.1f}",
                "NOT RECOVERED"
                if record.recovery_seconds is None
                else f"{record.recovery_seconds:.1f}",
                sum(1 for e in inside if e.status is not None and e.status >= 500),
                sum(1 for e in inside if not e.answered),
                "; ".join(record.notes),
            ]
        )
    lines += _table(
        [
            "fault",
            "at (s)",
            "lifted (s)",
            "recovered after (s)",
            "5xx",
            "no answer",
            "how recovery is judged",
        ],
        fault_rows,
    )
    lines += ["", "### Invariants (must hold)", ""]
    lines += _table(
        ["check", "measured", "must be", "holds", "detail"],
        [
            [check.name, check.measured, 0, "yes" if check.holds else "**NO**", check.detail]
            for check in results.checks
            if check.required
        ],
    )
    lines += ["", "### Reported (not lossless today)", ""]
    lines += _table(
        ["figure", "measured", "what the client sees"],
        [
            [check.name, check.measured, check.detail]
            for check in results.checks
            if not check.required
        ],
    )
    revocations = ", ".join(f"{cause}: {n}" for cause, n in results.revocations.most_common())
    repeats = ", ".join(f"after {what}: {n}" for what, n in results.upstream_repeats.most_common())
    actions = ", ".join(f"{action} {n}" for action, n in sorted(results.audit_actions.items()))
    links = ", ".join(f"{state} {n}" for state, n in sorted(results.links.items()))
    lines += [
        "",
        f"Sessions revoked, by cause: {revocations or 'none'}.",
        "",
        f"Upstream: {results.upstream_presentations} refresh-token presentations; tokens "
        f"presented again after an answer that rotated nothing: {repeats or 'none'}. "
        f"Links at the end: {links or 'none'}.",
        "",
        f"Audit rows: {sum(results.audit_actions.values())} ({actions}); "
        f"{results.stream_entries} entries in `broker:audit`.",
    ]
    if events:
        unplanned = [event for event in events if event.what.startswith("UNPLANNED")]
        lines += ["", f"Unplanned process exits: {len(unplanned)}."]
        lines += [f"- t+{event.at - t0:.1f} s: {event.what}" for event in unplanned]
    lines += ["", "Error lines in the logs (all faults included):"]
    for name, found in errors.items():
        lines.append(f"- {name}: {len(found)}")
        lines += [f"  - `{line[:300]}`" for line in found[:3]]
    settings = ", ".join(f"{name}={value}" for name, value in sorted(info.settings.items()))
    lines += ["", f"Settings: {settings}."]
    return "\n".join(lines)
