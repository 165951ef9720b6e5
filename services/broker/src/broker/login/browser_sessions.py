"""The broker's browser-session cookie: which browser a broker session was signed in from.

Set when a sign-in succeeds and kept for the refresh-token lifetime, an opaque random value
(``HttpOnly``, ``SameSite=Lax``, ``Secure`` except on a loopback issuer). Its SHA-256 is stored
on each session the browser's sign-ins create, so RP-initiated logout without an
``id_token_hint`` can end "this browser's" sessions after the user confirms. It grants nothing
by itself: no token or page trusts it for access. The logout confirmation form carries a CSRF
token derived from it (HMAC under a keyring-derived key), so another site cannot submit it.
"""

from __future__ import annotations

from shared.crypto.opaque import new_opaque_token
from shared.runtime import Runtime
from starlette.requests import Request
from starlette.responses import Response

from broker.http import cookies, csrf

BROWSER_COOKIE = "broker_browser"
CSRF_PURPOSE = "logout-csrf"


def cookie_name(runtime: Runtime) -> str:
    return cookies.cookie_name(runtime, BROWSER_COOKIE)


def current(request: Request, runtime: Runtime) -> str | None:
    """This browser's well-formed cookie value, if it has one."""
    value = request.cookies.get(cookie_name(runtime))
    if value and len(value) == 43 and value.replace("-", "").replace("_", "").isalnum():
        return value
    return None


def value_for_sign_in(request: Request, runtime: Runtime) -> str:
    """The value to store with a new session: the browser's own, or a new one."""
    return current(request, runtime) or new_opaque_token()


def set_cookie(response: Response, runtime: Runtime, value: str) -> None:
    """Kept for the refresh-token lifetime: as long as a session it marks can live."""
    cookies.set_cookie(response, runtime, BROWSER_COOKIE, value, runtime.settings.refresh_token_ttl)


def clear_cookie(response: Response, runtime: Runtime) -> None:
    cookies.delete_cookie(response, runtime, BROWSER_COOKIE)


def csrf_token(runtime: Runtime, browser_value: str) -> str:
    return csrf.csrf_token(runtime.settings.keyring, CSRF_PURPOSE, browser_value)


def csrf_matches(runtime: Runtime, browser_value: str, presented: str) -> bool:
    return csrf.csrf_matches(runtime.settings.keyring, CSRF_PURPOSE, browser_value, presented)
