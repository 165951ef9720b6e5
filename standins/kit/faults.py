"""Scripted failures of token requests, the provider-wide outage, and the log of refresh requests.

A :class:`FaultScript` holds faults that one grant type (``refresh_token`` or
``authorization_code``) consumes in order, one count per request, after client authentication:

* ``unavailable`` — the stand-in's 503 (``temporarily_unavailable``);
* ``retry_after`` — 429 with ``Retry-After: <seconds>``;
* ``invalid_grant`` — the presented code or refresh token is dropped and the stand-in answers its
  dialect's "dead grant" error (``invalid_grant``; GitHub: ``bad_refresh_token`` or
  ``bad_verification_code`` with HTTP 200);
* ``invalid_response`` — HTTP 200 with a JSON body that has no ``access_token``;
* ``hang`` — wait ``seconds``, then answer normally; if the client hangs up meanwhile, stop and
  leave everything untouched (what a timeout sees);
* ``slow`` — wait ``seconds``, then answer normally even to a client that has gone (the token
  rotates and the answer is lost).

``count`` -1 repeats a fault until the script is cleared. The waits do not block other requests.

An :class:`Outage` is the whole provider failing for a while rather than the next few token
requests: ``unavailable`` (every endpoint answers 503) or ``slow`` (every endpoint answers after
a delay). The token endpoint plays it through its fault scripts (ahead of any scripted fault,
without consuming one), so the refresh log still records every presentation;
:class:`OutageMiddleware` plays it on every other endpoint but the ``/_control/`` API.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

FAULT_MODES = frozenset(
    {"unavailable", "invalid_grant", "retry_after", "invalid_response", "hang", "slow"}
)
"""Modes a fault script accepts (``none`` clears the script)."""

OUTAGE_MODES = frozenset({"unavailable", "slow"})
"""Modes an outage takes (``none`` ends it)."""

_DISCONNECT_POLL_SECONDS = 0.05


class Abandoned(enum.Enum):
    """The client hung up while a ``hang`` fault waited: nothing was done, nobody listens."""

    CLIENT_LEFT = "client_left"


@dataclass
class Fault:
    """A scripted failure of the next ``count`` requests (-1: until cleared)."""

    mode: str
    count: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "count": self.count, "seconds": self.seconds}


@dataclass
class Outage:
    """The provider failing as a whole: ``unavailable`` or ``slow`` (``delay`` seconds per
    answer) until cleared, or until ``duration`` seconds after it started."""

    mode: str | None = None
    delay: float = 0.0
    until: float | None = None  # time.monotonic() at which it ends by itself

    def start(self, mode: str, delay: float, duration: float | None) -> None:
        self.mode, self.delay = mode, delay
        self.until = None if duration is None else time.monotonic() + duration

    def clear(self) -> None:
        self.mode, self.delay, self.until = None, 0.0, None

    def current(self) -> str | None:
        """The mode in force now (None: the provider answers normally)."""
        if self.mode is not None and self.until is not None and time.monotonic() >= self.until:
            self.clear()
        return self.mode

    def fault(self) -> Fault | None:
        """The outage as a token-request fault, while it lasts."""
        mode = self.current()
        return None if mode is None else Fault(mode=mode, count=-1, seconds=self.delay)

    def as_json(self) -> dict[str, Any]:
        mode = self.current()
        remaining = None if self.until is None else max(0.0, self.until - time.monotonic())
        return {"mode": mode or "none", "delay": self.delay, "remaining": remaining}


class OutageMiddleware:
    """Plays an :class:`Outage` on every request but the ``/_control/`` API and the paths
    ``scripted`` names (the token endpoint, whose fault scripts play it themselves)."""

    def __init__(self, app: ASGIApp, outage: Outage, scripted: Callable[[str], bool]) -> None:
        self.app = app
        self.outage = outage
        self.scripted = scripted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_control/") or self.scripted(path):
            await self.app(scope, receive, send)
            return
        mode = self.outage.current()
        if mode == "unavailable":
            response = JSONResponse(
                {"error": "temporarily_unavailable", "error_description": "simulated outage"},
                status_code=503,
                headers={"Cache-Control": "no-store"},
            )
            await response(scope, receive, send)
            return
        if mode == "slow":
            await asyncio.sleep(self.outage.delay)
        await self.app(scope, receive, send)


@dataclass
class FaultScript:
    """The faults one grant type consumes, first in first out, behind the provider's outage."""

    faults: list[Fault] = field(default_factory=list)
    outage: Outage | None = None

    def add(self, mode: str, count: int, seconds: float) -> None:
        self.faults.append(Fault(mode=mode, count=count, seconds=seconds))

    def clear(self) -> None:
        self.faults.clear()

    def take(self) -> Fault | None:
        """The outage in force, if any (nothing is consumed); else consume one count of the
        first fault, if any."""
        outage = self.outage.fault() if self.outage is not None else None
        if outage is not None:
            return outage
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                self.faults.pop(0)
        return fault

    def as_json(self) -> dict[str, Any]:
        return {"faults": [fault.as_json() for fault in self.faults]}


class FaultDialect(Protocol):
    """How a stand-in words the failures a fault asks for."""

    def unavailable(self) -> Response: ...

    def rate_limited(self, retry_after: str) -> Response: ...

    def invalid_grant(self) -> Response:
        """Drop the presented code or token and answer the "dead grant" error."""


def invalid_response() -> Response:
    """A 200 token response that fails any client's checks: no ``access_token``."""
    return JSONResponse({"token_type": "Bearer"}, headers={"Cache-Control": "no-store"})


async def wait_for_client(request: Request, seconds: float) -> bool:
    """Wait ``seconds`` without blocking other requests; False once the client has hung up."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, _DISCONNECT_POLL_SECONDS))
        if await request.is_disconnected():
            return False
    return True


async def play(
    fault: Fault, request: Request, dialect: FaultDialect
) -> Response | Abandoned | None:
    """Do what ``fault`` says: the response to send instead, ``Abandoned`` when the client left
    during a hang, or None to answer normally (after any wait)."""
    if fault.mode == "unavailable":
        return dialect.unavailable()
    if fault.mode == "retry_after":
        seconds = fault.seconds
        return dialect.rate_limited(f"{seconds:.0f}" if seconds.is_integer() else str(seconds))
    if fault.mode == "invalid_grant":
        return dialect.invalid_grant()
    if fault.mode == "invalid_response":
        return invalid_response()
    if fault.mode == "hang":
        return None if await wait_for_client(request, fault.seconds) else Abandoned.CLIENT_LEFT
    await asyncio.sleep(fault.seconds)  # slow: carries on whether or not the client is there
    return None


async def scripted(
    script: FaultScript,
    request: Request,
    dialect: FaultDialect,
    attempt: RefreshAttempt | None = None,
) -> Response | Abandoned | None:
    """Play the next fault of ``script``, if any, noting it on ``attempt`` (see :func:`play`)."""
    fault = script.take()
    if fault is None:
        return None
    if attempt is not None:
        attempt.fault = fault.mode  # known while a hang waits
    return await play(fault, request, dialect)


def answered(answer: Response | Abandoned, attempt: RefreshAttempt | None = None) -> Response:
    """What a token endpoint sends: the answer (logged on ``attempt``), or 499 when the client
    left during a hang (nothing was done and nobody is listening)."""
    if isinstance(answer, Abandoned):
        return Response(status_code=499)
    return attempt.record(answer) if attempt is not None else answer


def _body_of(response: Response) -> dict[str, Any]:
    """A token response's fields, JSON or form-encoded (GitHub without ``Accept: json``)."""
    raw = bytes(response.body)
    if "json" in (response.media_type or response.headers.get("content-type", "")):
        try:
            body = json.loads(raw)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


def outcome_of(response: Response) -> str:
    """What a refresh response amounted to, as the refresh log reports it."""
    status = response.status_code
    if status == 503:
        return "unavailable"
    if status == 429:
        return "retry_after"
    body = _body_of(response)
    error = body.get("error")
    if error in ("invalid_grant", "bad_refresh_token"):
        return "invalid_grant"
    if status == 200 and not error:
        return "ok" if body.get("access_token") else "invalid_response"
    return "unknown"


@dataclass
class RefreshAttempt:
    """One refresh_token grant request, logged when it arrives."""

    refresh_token: str | None
    at: float
    fault: str | None = None
    status: int | None = None
    outcome: str = "unknown"

    def record(self, response: Response) -> Response:
        """Note what ``response`` answers and return it."""
        self.status = response.status_code
        self.outcome = outcome_of(response)
        return response

    def as_json(self) -> dict[str, Any]:
        return {
            "refresh_token": self.refresh_token,
            "outcome": self.outcome,
            "at": self.at,
            "fault": self.fault,
            "status": self.status,
        }


@dataclass
class RefreshLog:
    """Every refresh_token grant request since the last reset, oldest first."""

    attempts: list[RefreshAttempt] = field(default_factory=list)

    def arrive(self, refresh_token: str | None) -> RefreshAttempt:
        attempt = RefreshAttempt(refresh_token=refresh_token, at=time.time())
        self.attempts.append(attempt)
        return attempt

    def clear(self) -> None:
        self.attempts.clear()

    def as_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for attempt in self.attempts:
            if attempt.refresh_token is not None:
                counts[attempt.refresh_token] = counts.get(attempt.refresh_token, 0) + 1
        return {"refreshes": [attempt.as_json() for attempt in self.attempts], "counts": counts}
