"""Reaching the shared runtime and request facts from a handler."""

from __future__ import annotations

from dataclasses import dataclass

from shared.runtime import Runtime
from starlette.requests import Request


@dataclass(frozen=True)
class RequestMeta:
    """Who sent a request, as the audit rows and sessions record it."""

    ip: str | None
    user_agent: str | None


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def request_meta(request: Request) -> RequestMeta:
    return RequestMeta(
        ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:512] or None,
    )
