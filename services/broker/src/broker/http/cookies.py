"""The broker's own cookies (login state, browser session): one way to name and set them.

Opaque values, ``HttpOnly``, ``SameSite=Lax``, path ``/``; ``Secure`` with the ``__Host-`` prefix
except on a plain-http loopback issuer, which can set neither (docs/security.md "Login cookie").
"""

from __future__ import annotations

from shared.runtime import Runtime
from starlette.responses import Response


def cookie_name(runtime: Runtime, name: str) -> str:
    return name if runtime.settings.is_loopback else f"__Host-{name}"


def set_cookie(response: Response, runtime: Runtime, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        cookie_name(runtime, name),
        value,
        max_age=max_age,
        path="/",
        secure=not runtime.settings.is_loopback,
        httponly=True,
        samesite="lax",
    )


def delete_cookie(response: Response, runtime: Runtime, name: str) -> None:
    response.delete_cookie(
        cookie_name(runtime, name),
        path="/",
        secure=not runtime.settings.is_loopback,
        httponly=True,
        samesite="lax",
    )
