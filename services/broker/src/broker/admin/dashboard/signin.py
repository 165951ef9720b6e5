"""``/admin/login``, ``/admin/callback``, ``/admin/logout``: the dashboard as the broker's own RP.

Login sends the browser to the broker's ``/authorize`` as the built-in client (``client``) with
``state``, ``nonce`` and a PKCE S256 challenge, whose secrets wait in a sealed, short-lived
cookie (``session``). The callback checks ``state`` against that cookie (and ``iss``, RFC 9207)
before anything else, redeems the code in-process through the token endpoint's own grant
(``grants.code_grant``: single use, redirect URI and PKCE bound), verifies the ID token's
signature, audience and ``nonce``, and only then looks at the role: an admin gets the
dashboard cookie; anyone else a 403 page, and the session just created for them is revoked.
Logout (a POST with the CSRF token) revokes the dashboard's broker session.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from urllib.parse import urlencode

import structlog
from shared.auth_sessions import revoke_session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.admin.dashboard import session
from broker.admin.dashboard.guard import Endpoint, View, is_admin, refused_not_admin
from broker.admin.dashboard.rendering import Pages
from broker.http.context import request_meta, runtime_of
from broker.http.errors import AccessDenied, InvalidRequest, OAuthError
from broker.http.forms import single_params
from broker.oauth.codes import s256
from broker.oauth.dashboard_client import (
    DASHBOARD_CLIENT_ID,
    SCOPE,
    callback_url,
    dashboard_client,
)
from broker.oauth.grants import code_grant
from broker.oauth.tokens import TokenInvalid, verify_id_token_hint

log = structlog.get_logger("broker.dashboard")


async def login(request: Request) -> Response:
    runtime = runtime_of(request)
    settings = runtime.settings
    pending = session.PendingSignIn.new()
    query = {
        "response_type": "code",
        "client_id": DASHBOARD_CLIENT_ID,
        "redirect_uri": callback_url(settings),
        "scope": SCOPE,
        "state": pending.state,
        "nonce": pending.nonce,
        "code_challenge": s256(pending.code_verifier),
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"{settings.issuer}/authorize?{urlencode(query)}", 303)
    session.set_login_cookie(response, runtime, pending)
    return response


class SignInFailed(Exception):
    """The callback cannot sign anyone in; the message is safe to show."""

    def __init__(self, text: str, status_code: int = 400, *, matched_state: bool = True) -> None:
        super().__init__(text)
        self.text = text
        self.status_code = status_code
        self.matched_state = matched_state


def make_callback(pages: Pages) -> Endpoint:
    """``/admin/callback`` over this template set."""

    async def callback(request: Request) -> Response:
        runtime = runtime_of(request)
        response: Response
        try:
            session_id, user_id = await _redeem(request)
        except SignInFailed as exc:
            response = pages.message(
                "Sign-in failed", exc.text, status_code=exc.status_code, retry=True
            )
            if exc.matched_state:
                # Only this browser's own sign-in ends here; a forged response (another
                # state) leaves the sign-in in flight alone.
                session.clear_login_cookie(response, runtime)
            return response
        if not await is_admin(runtime, user_id):
            # Nothing for a non-admin: no cookie, and no live session left behind.
            async with runtime.engine.begin() as connection:
                revocation = await revoke_session(
                    connection,
                    session_id,
                    now=runtime.clock.now(),
                    reason="not_an_admin",
                    actor=f"client:{DASHBOARD_CLIENT_ID}",
                )
            await runtime.revocations.publish([revocation] if revocation else [])
            log.info("admin_dashboard.refused", user_id=str(user_id))
            response = refused_not_admin(pages)
            session.clear_login_cookie(response, runtime)
            return response
        log.info("admin_dashboard.signed_in", user_id=str(user_id))
        response = RedirectResponse(f"{runtime.settings.issuer}/admin", status_code=303)
        session.clear_login_cookie(response, runtime)
        session.set_session_cookie(response, runtime, session_id)
        return response

    return callback


async def _redeem(request: Request) -> tuple[uuid.UUID, uuid.UUID]:
    """Check the response against this browser's sign-in, redeem the code: (sid, user id)."""
    runtime = runtime_of(request)
    settings = runtime.settings
    try:
        params = single_params(list(request.query_params.multi_items()))
    except InvalidRequest:
        raise SignInFailed("The sign-in response is malformed.", matched_state=False) from None
    pending = session.pending_sign_in(request, runtime)
    if pending is None or not hmac.compare_digest(
        params.get("state", "").encode(), pending.state.encode()
    ):
        # Unknown, expired, or another browser's sign-in: stop before the code is touched.
        log.info("admin_dashboard.state_rejected")
        raise SignInFailed(
            "This sign-in has expired or was started in another browser. Sign in again.",
            matched_state=False,
        )
    if params.get("iss") != settings.issuer:  # RFC 9207 §2.4
        raise SignInFailed("The sign-in response did not come from this broker.")
    if "error" in params:
        description = params.get("error_description") or params["error"]
        status = 403 if params["error"] == AccessDenied.error else 400
        raise SignInFailed(f"The broker refused the sign-in: {description}", status)
    code = params.get("code")
    if not code:
        raise SignInFailed("The sign-in response has no code.")
    try:
        issued = await code_grant(
            runtime,
            dashboard_client(settings),
            {
                "code": code,
                "redirect_uri": callback_url(settings),
                "code_verifier": pending.code_verifier,
            },
            request_meta(request),
        )
    except OAuthError as exc:
        raise SignInFailed(f"The sign-in could not be completed: {exc.description}") from None
    try:
        claims = verify_id_token_hint(issued.body["id_token"], runtime.keys.snapshot, settings)
    except TokenInvalid:
        raise SignInFailed("The sign-in produced an invalid ID token.") from None
    nonce = str(claims.get("nonce", ""))
    if claims.get("aud") != DASHBOARD_CLIENT_ID or not hmac.compare_digest(
        nonce.encode(), pending.nonce.encode()
    ):
        raise SignInFailed("The sign-in produced an ID token for another request.")
    return uuid.UUID(str(claims["sid"])), uuid.UUID(str(claims["sub"]))


async def logout(request: Request, view: View, form: Mapping[str, str]) -> Response:
    """End the dashboard's broker session, forget the cookie."""
    runtime = view.runtime
    async with runtime.engine.begin() as connection:
        revocation = await revoke_session(
            connection,
            view.admin.session_id,
            now=runtime.clock.now(),
            reason="logout",
            actor=f"user:{view.admin.user_id}",
        )
    await runtime.revocations.publish([revocation] if revocation else [])
    response = view.pages.message(
        "Signed out", "You are signed out of the admin dashboard.", status_code=200, retry=True
    )
    session.clear_session_cookie(response, runtime)
    return response
