"""The ``/_control/`` API every stand-in serves, for tests to script it and read what it saw.

* ``POST /_control/reset`` — the default user and behaviour back; every grant, script, log and
  profile change forgotten. Answers ``{"reset": true}``.
* ``POST /_control/user`` — the user the next authorizations are issued for (each stand-in
  validates its own shape); answers ``{"user": {...}}``.
* ``POST /_control/misbehave`` ``{"mode": ...}`` — arm a misbehaviour: one-shot modes apply to
  the next matching request, sticky ones until reset. Answers ``{"mode": ...}``.
* ``POST /_control/refresh_faults`` and ``POST /_control/code_faults`` ``{"mode", "count": 1,
  "seconds": 1.0}`` — append a fault to the script the ``refresh_token`` (or
  ``authorization_code``) grants consume (:mod:`standins.kit.faults`); ``{"mode": "none"}``
  clears it. Answers ``{"faults": [...]}``, the script left.
* ``POST /_control/outage`` ``{"mode": "unavailable" | "slow" | "none", "delay": 2.0,
  "duration": null}`` — the whole provider fails (:class:`standins.kit.faults.Outage`):
  every endpoint but this API answers 503 (``unavailable``) or only after ``delay`` seconds
  (``slow``), until ``none`` or a reset, or for ``duration`` seconds. The token endpoint plays
  it ahead of its fault scripts, so the refresh log records each presentation. Answers
  ``{"mode", "delay", "remaining"}``.
* ``GET /_control/refresh_log`` — ``{"refreshes": [{"refresh_token", "outcome", "at", "fault",
  "status"}, ...], "counts": {refresh_token: times presented}}``: every refresh_token grant
  request since the last reset, logged when it arrives. ``outcome``: ``ok``, ``unavailable``
  (503), ``retry_after`` (429), ``invalid_grant`` (the dialect's dead-grant error, scripted or
  not), ``invalid_response`` or ``unknown`` (still waiting, abandoned during a hang, another
  error); ``status`` is the HTTP status answered or null.
* ``POST /_control/users/{key}`` with a JSON object of claims — change that user's profile
  upstream: from then on what the stand-in says about the user (userinfo, API, new ID tokens)
  carries these claims merged over the ones it knew (the key, ``sub``/``id``/``oid``, never
  changes; a null removes the claim). Successive calls accumulate; answers ``{key_name: key,
  "changes": {...}}``.
* ``GET /_control/requests`` and ``GET /_control/authorize_requests`` — what the stand-in
  recorded, oldest first (each stand-in says which requests).

A stand-in adds its own routes next to these (:meth:`ControlAPI.routes`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from standins.kit.bodies import json_object, non_negative_number
from standins.kit.faults import FAULT_MODES, OUTAGE_MODES, FaultScript, Outage, RefreshLog


class Misbehaviours:
    """What the next matching request does wrong: a one-shot mode applies once (arming another
    replaces it), a sticky mode until reset."""

    def __init__(self, one_shot: frozenset[str], sticky: frozenset[str] = frozenset()) -> None:
        self.one_shot_modes = one_shot
        self.sticky_modes = sticky
        self._pending: str | None = None
        self._sticky: set[str] = set()

    @property
    def modes(self) -> frozenset[str]:
        return self.one_shot_modes | self.sticky_modes

    def arm(self, mode: str) -> None:
        if mode in self.sticky_modes:
            self._sticky.add(mode)
        else:
            self._pending = mode

    def take(self, *modes: str) -> str | None:
        """Consume the pending one-shot misbehaviour if it is one of ``modes``."""
        if self._pending in modes:
            mode, self._pending = self._pending, None
            return mode
        return None

    def is_on(self, mode: str) -> bool:
        """Whether the sticky ``mode`` is armed."""
        return mode in self._sticky

    def clear(self) -> None:
        self._pending = None
        self._sticky.clear()


class ProfileChanges:
    """Claims changed upstream since grants were issued, by user key (None: claim removed)."""

    def __init__(self, key_name: str) -> None:
        self.key_name = key_name
        self._changes: dict[str, dict[str, Any]] = {}

    def change(self, key: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Add ``changes`` for ``key``; all its changes so far."""
        self._changes.setdefault(key, {}).update(changes)
        return self._changes[key]

    def apply(self, key: str, claims: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``claims`` with the changes made upstream for ``key`` since."""
        profile = dict(claims)
        for name, value in self._changes.get(key, {}).items():
            if value is None:
                profile.pop(name, None)
            else:
                profile[name] = value
        return profile

    def clear(self) -> None:
        self._changes.clear()


@dataclass
class Controls:
    """The kit's half of a stand-in's state: what tests script and what the stand-in records."""

    misbehaviours: Misbehaviours
    profiles: ProfileChanges
    code_faults: FaultScript = field(default_factory=FaultScript)
    refresh_faults: FaultScript = field(default_factory=FaultScript)
    refresh_log: RefreshLog = field(default_factory=RefreshLog)
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorize_requests: list[dict[str, Any]] = field(default_factory=list)
    outage: Outage = field(default_factory=Outage)

    def __post_init__(self) -> None:
        # The token endpoint plays the outage through its scripts (see OutageMiddleware).
        self.code_faults.outage = self.outage
        self.refresh_faults.outage = self.outage

    def clear(self) -> None:
        self.outage.clear()
        self.misbehaviours.clear()
        self.profiles.clear()
        self.code_faults.clear()
        self.refresh_faults.clear()
        self.refresh_log.clear()
        self.requests.clear()
        self.authorize_requests.clear()


UserSetter = Callable[[dict[str, Any] | None], "dict[str, Any] | str"]
"""Takes a ``/_control/user`` body (None: not a JSON object); returns the user or a problem."""


def _error(message: str, status_code: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


class ControlAPI:
    """The shared ``/_control/`` routes of one stand-in (see the module docstring)."""

    def __init__(
        self, controls: Controls, *, reset: Callable[[], None], set_user: UserSetter
    ) -> None:
        self._controls = controls
        self._reset = reset
        self._set_user = set_user

    def routes(self, *extra: BaseRoute) -> list[BaseRoute]:
        return [
            Route("/_control/reset", self.reset, methods=["POST"]),
            Route("/_control/user", self.user, methods=["POST"]),
            Route("/_control/misbehave", self.misbehave, methods=["POST"]),
            Route("/_control/refresh_faults", self.refresh_faults, methods=["POST"]),
            Route("/_control/code_faults", self.code_faults, methods=["POST"]),
            Route("/_control/outage", self.outage, methods=["POST"]),
            Route("/_control/refresh_log", self.refresh_log, methods=["GET"]),
            Route("/_control/users/{key}", self.profile, methods=["POST"]),
            Route("/_control/requests", self.requests, methods=["GET"]),
            Route("/_control/authorize_requests", self.authorize_requests, methods=["GET"]),
            *extra,
        ]

    async def reset(self, request: Request) -> Response:
        self._reset()
        return JSONResponse({"reset": True})

    async def user(self, request: Request) -> Response:
        user = self._set_user(await json_object(request))
        if isinstance(user, str):
            return _error(user)
        return JSONResponse({"user": user})

    async def misbehave(self, request: Request) -> Response:
        misbehaviours = self._controls.misbehaviours
        body = await json_object(request)
        mode = body.get("mode") if body else None
        if mode not in misbehaviours.modes:
            return _error(f"mode must be one of {sorted(misbehaviours.modes)}")
        misbehaviours.arm(mode)
        return JSONResponse({"mode": mode})

    async def refresh_faults(self, request: Request) -> Response:
        return await _script(request, self._controls.refresh_faults)

    async def code_faults(self, request: Request) -> Response:
        return await _script(request, self._controls.code_faults)

    async def outage(self, request: Request) -> Response:
        outage = self._controls.outage
        body = await json_object(request)
        if body is None or body.get("mode") not in OUTAGE_MODES | {"none"}:
            return _error(f"mode must be 'none' or one of {sorted(OUTAGE_MODES)}")
        delay, duration = body.get("delay", 2.0), body.get("duration")
        if not non_negative_number(delay):
            return _error("'delay' must be a number >= 0")
        if duration is not None and not non_negative_number(duration):
            return _error("'duration' must be a number >= 0, or null")
        if body["mode"] == "none":
            outage.clear()
        else:
            outage.start(body["mode"], float(delay), None if duration is None else float(duration))
        return JSONResponse(outage.as_json())

    async def refresh_log(self, request: Request) -> Response:
        return JSONResponse(self._controls.refresh_log.as_json())

    async def profile(self, request: Request) -> Response:
        profiles = self._controls.profiles
        key = request.path_params["key"]
        changes = await json_object(request)
        if changes is None:
            return _error("body must be a JSON object of claims")
        if str(changes.pop(profiles.key_name, key)) != key:
            return _error(f"the {profiles.key_name} of a user cannot change")
        return JSONResponse({profiles.key_name: key, "changes": profiles.change(key, changes)})

    async def requests(self, request: Request) -> Response:
        return JSONResponse(self._controls.requests)

    async def authorize_requests(self, request: Request) -> Response:
        return JSONResponse(self._controls.authorize_requests)


async def _script(request: Request, script: FaultScript) -> Response:
    """Append a fault to ``script`` (``{"mode": "none"}`` clears it)."""
    body = await json_object(request)
    if body is None or body.get("mode") not in FAULT_MODES | {"none"}:
        return _error(f"mode must be 'none' or one of {sorted(FAULT_MODES)}")
    mode, count, seconds = body["mode"], body.get("count", 1), body.get("seconds", 1.0)
    if mode == "none":
        script.clear()
    elif type(count) is not int or not (count >= 1 or count == -1):
        return _error("'count' must be an integer >= 1, or -1")
    elif not non_negative_number(seconds):
        return _error("'seconds' must be a number >= 0")
    else:
        script.add(mode, count, float(seconds))
    return JSONResponse(script.as_json())


def logged(request: Request, **details: Any) -> dict[str, Any]:
    """A request-log entry: method, path and ``details``."""
    return {"method": request.method, "path": request.url.path, **details}
