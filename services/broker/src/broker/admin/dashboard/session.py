"""The dashboard's two cookies: the sign-in in flight, and the signed-in dashboard session.

Both are sealed with the keyring (AES-256-GCM, associated data naming the cookie's purpose, so
one cannot pass for the other), carry their own expiry, and are set through ``broker.http.cookies``
(``HttpOnly``, ``SameSite=Lax``, ``Secure`` and the ``__Host-`` prefix except on a loopback
issuer). Neither holds a token: the session cookie holds only the ``sid`` of the broker session
the dashboard's sign-in created, which the guard looks up on every request, so revoking that
session (logout, an admin, a disabled user) ends the dashboard session at once.

``SameSite=Lax``, not ``Strict``: the sign-in comes back through the upstream provider, and a
redirect chain that starts on another site carries no ``Strict`` cookie, so neither the state
check on ``/admin/callback`` nor the first ``/admin`` after it would see theirs. Every request
that changes something is a POST, which ``Lax`` never sends cross-site, with a CSRF token.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from shared.crypto.keyring import DecryptionError, Keyring
from shared.crypto.opaque import b64url, new_opaque_token
from shared.runtime import Runtime
from starlette.requests import Request
from starlette.responses import Response

from broker.http import cookies

LOGIN_COOKIE = "broker_admin_login"
SESSION_COOKIE = "broker_admin"
# A working day: after it the admin signs in again (the broker session is revoked at logout).
SESSION_LIFETIME = 8 * 3600
_LOGIN_PURPOSE = b"admin-dashboard:sign-in"
_SESSION_PURPOSE = b"admin-dashboard:session"
_MAX_COOKIE = 1024


def _seal(keyring: Keyring, purpose: bytes, document: dict[str, Any]) -> str:
    sealed = keyring.encrypt(json.dumps(document, separators=(",", ":")).encode(), purpose)
    value: str = b64url(sealed).decode("ascii")
    return value


def _unseal(keyring: Keyring, purpose: bytes, value: str | None) -> dict[str, Any] | None:
    if not value or len(value) > _MAX_COOKIE:
        return None
    try:
        sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        document = json.loads(keyring.decrypt(sealed, purpose))
    except (ValueError, binascii.Error, DecryptionError, UnicodeError):
        return None
    return document if isinstance(document, dict) else None


def _now(runtime: Runtime) -> int:
    return int(runtime.clock.now().timestamp())


@dataclass(frozen=True)
class PendingSignIn:
    """What ``/admin/callback`` checks: the ``state`` and ``nonce`` sent, the PKCE verifier."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> PendingSignIn:
        # RFC 7636 §4.1: 43 characters of the unreserved set (32 random bytes, base64url).
        return cls(
            state=new_opaque_token(), nonce=new_opaque_token(), code_verifier=new_opaque_token()
        )


def set_login_cookie(response: Response, runtime: Runtime, pending: PendingSignIn) -> None:
    """Lives as long as any broker login may take upstream."""
    ttl = runtime.settings.login_ttl
    document = {
        "state": pending.state,
        "nonce": pending.nonce,
        "code_verifier": pending.code_verifier,
        "exp": _now(runtime) + ttl,
    }
    value = _seal(runtime.settings.keyring, _LOGIN_PURPOSE, document)
    cookies.set_cookie(response, runtime, LOGIN_COOKIE, value, ttl)


def pending_sign_in(request: Request, runtime: Runtime) -> PendingSignIn | None:
    """This browser's unexpired sign-in in flight, if it has one."""
    document = _unseal(
        runtime.settings.keyring,
        _LOGIN_PURPOSE,
        request.cookies.get(cookies.cookie_name(runtime, LOGIN_COOKIE)),
    )
    if document is None or not isinstance(document.get("exp"), int):
        return None
    if document["exp"] <= _now(runtime):
        return None
    try:
        return PendingSignIn(
            state=str(document["state"]),
            nonce=str(document["nonce"]),
            code_verifier=str(document["code_verifier"]),
        )
    except KeyError:
        return None


def clear_login_cookie(response: Response, runtime: Runtime) -> None:
    cookies.delete_cookie(response, runtime, LOGIN_COOKIE)


def set_session_cookie(response: Response, runtime: Runtime, session_id: uuid.UUID) -> None:
    document = {
        "sid": str(session_id),
        "exp": _now(runtime) + SESSION_LIFETIME,
        # Each sign-in's cookie differs, even for one session id (it never repeats anyway).
        "n": secrets.token_urlsafe(8),
    }
    value = _seal(runtime.settings.keyring, _SESSION_PURPOSE, document)
    cookies.set_cookie(response, runtime, SESSION_COOKIE, value, SESSION_LIFETIME)


def session_reference(request: Request, runtime: Runtime) -> uuid.UUID | None:
    """The broker session this browser's dashboard cookie names, unless expired or forged."""
    document = _unseal(
        runtime.settings.keyring,
        _SESSION_PURPOSE,
        request.cookies.get(cookies.cookie_name(runtime, SESSION_COOKIE)),
    )
    if document is None or not isinstance(document.get("exp"), int):
        return None
    if document["exp"] <= _now(runtime):
        return None
    try:
        return uuid.UUID(str(document["sid"]))
    except (KeyError, ValueError):
        return None


def clear_session_cookie(response: Response, runtime: Runtime) -> None:
    cookies.delete_cookie(response, runtime, SESSION_COOKIE)
